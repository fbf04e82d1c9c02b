"""What an FPGA part holds: LUT, BRAM_18K, URAM and DSP, the capacity a folding must fit.

The folding solver (``solver.py``) keeps every design within the part a blueprint
targets (``fpga_part``, or the part of its ``board``), so the capacities are a table
here, by the part's device name (the ``fpga_part`` string starts with it:
``xc7z020clg400-1`` is an ``xc7z020``). A part that is not in the table has no known
capacity (only ``expect:`` bounds then limit the designs).
"""

from __future__ import annotations

from ..metrics import RESOURCES

#: device -> (LUT, BRAM_18K, URAM, DSP) (Xilinx/AMD product tables)
PARTS: dict[str, tuple[int, int, int, int]] = {
    "xc7z020": (53_200, 280, 0, 220),  # Pynq-Z1, Pynq-Z2
    "xczu7ev": (230_400, 624, 96, 1_728),  # ZCU104
    "xczu9eg": (274_080, 1_824, 0, 2_520),  # ZCU102
    "xcu250": (1_728_000, 5_376, 1_280, 12_288),  # Alveo U250
}


#: boards -> their part (as FINN's ``pynq_part_map``/``alveo_part_map`` name them), so that
#: a blueprint's ``board`` gives its capacity without importing FINN
BOARDS: dict[str, str] = {
    "Pynq-Z1": "xc7z020clg400-1",
    "Pynq-Z2": "xc7z020clg400-1",
    "ZCU104": "xczu7ev-ffvc1156-2-e",
    "ZCU102": "xczu9eg-ffvb1156-2-e",
    "U250": "xcu250-figd2104-2L-e",
}


def part_of(config: dict[str, object]) -> str | None:
    """The part a build config targets, where this table knows it (``fpga_part``, else
    the part of ``board``); None: ask the toolchain."""
    if config.get("fpga_part"):
        return str(config["fpga_part"])
    board = config.get("board")
    return BOARDS.get(str(board)) if board else None


def device_of(fpga_part: str) -> str | None:
    """The table's device a part string names (``xczu7ev-ffvc1156-2-e`` -> ``xczu7ev``)."""
    name = fpga_part.strip().lower()
    found = [device for device in PARTS if name.startswith(device)]
    return max(found, key=len) if found else None


def capacity(fpga_part: str | None) -> dict[str, int] | None:
    """The part's LUT, BRAM_18K, URAM and DSP, or None for a part the table lacks."""
    device = device_of(fpga_part) if fpga_part else None
    if device is None:
        return None
    return dict(zip(RESOURCES, PARTS[device], strict=True))
