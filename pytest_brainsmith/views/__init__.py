"""What a run shows: the terminal summary, the pytest-html report, the SQLite results
store, tree exports and the live status line. Views read design records only."""
