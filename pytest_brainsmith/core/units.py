"""Sizes and durations as users write them: ``4G``, ``512M``, ``90s``, ``2h``, ``1h30m``."""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)?", re.IGNORECASE)
_DURATION_FACTORS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_size(text: str | int | float) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``1000``, ``32e9`` (binary units: 1K = 1024)."""
    if isinstance(text, bool):
        raise ValueError(f"expected a size such as 4G or 512M, got {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(f"expected a size such as 4G or 512M, got {text!r}")
        value = float(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return int(value)


#: The smallest memory limit a build is given: Python and the compiler's first
#: allocations need tens of MB beyond what a worker shares with its zygote.
MIN_MEMORY_LIMIT = 64 * 1024 * 1024


def parse_memory_limit(text: str | int | float) -> int:
    """A build's memory limit: a size (``parse_size``) of at least ``MIN_MEMORY_LIMIT``."""
    size = parse_size(text)
    if size < MIN_MEMORY_LIMIT:
        raise ValueError(
            f"expected at least 64M (a build needs that much beyond what its process "
            f"shares), got {text!r}"
        )
    return size


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``90``, ``90s``, ``2h``, ``1h30m``, ``500ms``."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 90s or 2h, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        source = str(text).strip()
        seconds, position = 0.0, 0
        for match in _DURATION_PART.finditer(source):
            if match.start() != position and source[position : match.start()].strip():
                raise ValueError(f"expected a duration such as 90s or 2h, got {text!r}")
            seconds += (
                float(match.group(1))
                * _DURATION_FACTORS[match.group(2).lower() if match.group(2) else None]
            )
            position = match.end()
        if position == 0 or source[position:].strip():
            raise ValueError(f"expected a duration such as 90s or 2h, got {text!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds


def format_size(size: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.3g}{unit}"
    return f"{size}B"
