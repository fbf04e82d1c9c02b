"""The folding search (see driver.py)."""
