"""Regressions against a baseline: what a design's estimates were, what they may become.

A **baseline** is a blueprint's designs as a run left them (outcome, estimates,
verification) and its Pareto front, in one JSON file kept beside the blueprint like a
golden file (``<blueprint>.baseline.json``), in a folder or on object storage (any
fsspec URL, as the remote cache reaches it). A blueprint's ``regress:`` says how much
worse each metric may get and how much of its front's hypervolume may be lost. This
package compares; it knows neither pytest nor FINN (``plugin/baseline.py`` makes the
tests). Where things are:

- ``baseline.py``: the baseline document (written, parsed, a design found by choices);
- ``storage.py``: where a baseline lives (a file, a folder, an fsspec URL);
- ``tolerances.py``: ``regress:`` tolerances (``blueprint/regress.py`` reads the key);
- ``comparison.py``: a design and a front against the baseline, and the verdicts;
- ``fronts.py``: Pareto fronts and their hypervolume.
"""
