"""Verification: every design's model is executed after its steps and compared with a
golden; a design that computes the wrong answer, or whose values do not fit the widths
its hardware gives them, fails. The plan (``plan.py``) is made in the engine, the
segment verified in its worker (``run.py``, ``steps.py``, ``golden.py``), the result
kept as a record beside the cache (``records.py``) and judged in the engine
(``judge.py``); ``execute.py`` is the Python API's ``design.execute``.
"""

from .execute import execute_design, execute_model
from .golden import golden
from .judge import judge
from .plan import plan_for
from .records import RECORDS, record_path, summary
from .run import after_build, again

__all__ = [
    "RECORDS",
    "after_build",
    "again",
    "execute_design",
    "execute_model",
    "golden",
    "judge",
    "plan_for",
    "record_path",
    "summary",
]
