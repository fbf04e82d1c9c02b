"""Every use of pytest's private API (``_pytest``), in one place.

Two things have no public API in pytest, so the plugin uses pytest's own classes for
them, as little of them as it can:

- fixtures for items that are not functions (pytest issue 2471): the pattern of pytest's
  own ``DoctestItem`` (``src/_pytest/doctest.py``): only autouse and ``usefixtures``
  fixtures, a ``TopRequest`` filled at setup;
- a failure that shows a one-line message where pytest shows one (the short summary,
  junit's ``message``) and the whole cause in the FAILURES section, and travels through
  xdist as it is: pytest's own repr classes.

pyproject.toml bounds pytest to the versions the suite is run with (``TESTED``); a new
pytest is taken once the suite passes with it (``tests/test_pytest_internals.py``
checks this module alone imports ``_pytest``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest._code.code import ExceptionChainRepr, ReprFileLocation, ReprTracebackNative
from _pytest.fixtures import TopRequest

__all__ = ["TESTED", "ExceptionChainRepr", "failure_repr", "fill_fixtures", "init_fixtures"]

#: the pytest versions the suite is run with (as pyproject.toml's requirement says)
TESTED = ">=8.1,<9.3"


def init_fixtures(item: pytest.Item) -> None:
    """Give a non-function item autouse and ``usefixtures`` fixtures (``DoctestItem``)."""
    item.funcargs = {}  # type: ignore[attr-defined]
    info = item.session._fixturemanager.getfixtureinfo(node=item, func=None, cls=None)
    item._fixtureinfo = info  # type: ignore[attr-defined]
    item.fixturenames = list(info.names_closure)  # type: ignore[attr-defined]
    item._request = TopRequest(item, _ispytest=True)  # type: ignore[arg-type, attr-defined]


def fill_fixtures(item: pytest.Item) -> None:
    """Set the item's fixtures up (in its ``setup``)."""
    item._request._fillfixtures()  # type: ignore[attr-defined]


def failure_repr(summary: str, lines: list[str], location: Path | str) -> ExceptionChainRepr:
    """A failure that reads as ``lines`` in the FAILURES section and as the one-line
    ``summary`` wherever pytest shows one message: the short test summary, junit's
    ``message``, ``--tb=line``. With a plain string that message would be the whole text,
    and on CI (where pytest does not trim the summary) every design below a failed segment
    would repeat the full cause a second time. ``location`` is the file to open (a failed
    segment's build log)."""
    return ExceptionChainRepr(
        [
            (
                ReprTracebackNative([line + "\n" for line in lines]),
                ReprFileLocation(str(location), 1, summary),
                None,
            )
        ]
    )
