"""Preparing the compiler before the first build is launched.

The compiler (FINN) is imported once, before the first fork: in the worker pool's fork
server (``fork_server.py``), else in this process, so that every worker forked after it
has it. Why it cannot be is remembered: every later build is told the same.
"""

from __future__ import annotations

from .. import toolchain
from ..launchers import Launcher


class ToolchainPrep:
    """The compiler prepared once per engine (or why it could not be)."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.prepared = False
        self.phase = ""  # what the engine itself is doing, for the status line

    def prepare(self, launcher: Launcher, held: tuple[int, ...] = ()) -> str | None:
        """Prepare the compiler for ``launcher``'s workers (``held``: the lock files a
        fork server must not keep open). Why it cannot be, if so."""
        if self.error is None and not self.prepared:
            compiler = toolchain.current()
            self.phase = f"importing {compiler.name}"
            try:
                self.error = launcher.prepare(held)
            except toolchain.ToolchainUnavailable as exc:
                self.error = str(exc)
            finally:
                self.phase = ""
            self.prepared = self.error is None
        return self.error
