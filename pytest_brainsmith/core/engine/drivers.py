"""Work that asks for more work: drivers (a folding search) decide what to build next from
what was built, so the scheduler calls them on every turn and they may submit designs."""

from __future__ import annotations

from typing import Protocol


class Driver(Protocol):
    """Work that decides what to build next from what was built (a folding search):
    ``drive`` is called on every turn of the scheduler (it may ``submit``), ``close``
    when the engine shuts down."""

    def drive(self) -> None: ...

    def close(self) -> None: ...


class Drivers:
    """The engine's drivers, each driven once a turn (never from inside a drive)."""

    def __init__(self) -> None:
        self._drivers: list[Driver] = []
        self._driving = False
        self.closed = False

    def add(self, driver: Driver) -> None:
        if driver not in self._drivers:
            self._drivers.append(driver)

    def drive(self) -> None:
        if self._driving or self.closed:
            return
        self._driving = True
        try:
            for driver in list(self._drivers):
                driver.drive()
        finally:
            self._driving = False

    def close(self) -> None:
        """The engine shuts down: no driver is driven again."""
        self.closed = True
        for driver in self._drivers:
            driver.close()
