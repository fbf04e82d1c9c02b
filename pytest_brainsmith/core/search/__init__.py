"""The folding search: foldings proposed, built by the engine as trials, and told.

A blueprint's ``design_space.folding`` makes one search per prefix of its tree (the steps
every trial shares). Each trial is one design below the prefix, built with its folding
as ``folding_config_file``. Nothing here imports FINN: the toolchain reads the models
(``finn/cost_model.py``, ``finn/folding.py``). Where things are:

- ``driver.py``: ``FoldingSearch``, what the engine drives and pytest's trial items ask:
  the trials wanted, proposals made trials, a trial's verdict against the part;
- ``proposer.py``: what the driver asks of a way of proposing trials;
- ``exact.py``: ``search: exact`` (the default): FINN's cost model solved by
  ``solver.py`` (the cheapest folding at every throughput), the front built in order;
- ``optuna_trials.py``: ``search: optuna``: batches asked of an Optuna study
  (``study.py``) and told what they measured; ``journal.py``: the study written for
  optuna-dashboard;
- ``bounds.py``: what a trial must fit (``expect:`` bounds, the part's capacity);
  ``parts.py``: the parts' capacities;
- ``memo.py``: what a search derived and asked, kept in the cache (a warm run needs no
  FINN).
"""
