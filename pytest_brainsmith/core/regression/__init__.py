"""Regressions against a baseline (see baseline.py)."""
