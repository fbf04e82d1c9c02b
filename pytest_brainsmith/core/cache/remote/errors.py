"""What goes wrong with the remote tier: a setup the user must fix (RemoteCacheError),
a remote that cannot be used this run (Fault), and an object that fails its check
(Damaged, Untrusted), each said in a few words."""

from __future__ import annotations


class RemoteCacheWarning(UserWarning):
    """The remote cache could not be used (down, denied, too slow) or held a damaged entry."""


class RemoteCacheError(ValueError):
    """The remote cache cannot be set up as asked (a bad URL or mode, a missing package)."""


class Fault(Exception):
    """The remote cannot be used (not a miss, not a damaged entry)."""


class Damaged(Exception):
    """A remote object failed its check: (object URL, file, why)."""

    def __init__(self, url: str, file: str, why: str) -> None:
        super().__init__(f"{file} {why}")
        self.url, self.file, self.why = url, file, why


class Untrusted(Damaged):
    """A remote document not signed with this runner's key (``trust.py``)."""


def describe(exc: BaseException, timeout: float) -> str:
    """Why the remote cannot be used, in a few words."""
    if isinstance(exc, PermissionError):
        return f"access denied: {exc}"
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return f"no answer within {timeout:g} s ({name})"
    if "Connect" in name or isinstance(exc, ConnectionError):
        return f"cannot connect: {exc}"
    return f"{name}: {exc}"
