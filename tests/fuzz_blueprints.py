"""A seeded generator of mutated blueprints for the fuzz test: valid blueprints changed
at the structure level (type swaps, missing keys, wrong nesting, unknown keys, huge
numbers, unicode) and at the text level (empty and non-mapping documents, deep
nesting, duplicate keys, tabs, invalid bytes, aliases, tags, truncation)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import yaml

BASES: list[dict[str, Any]] = [
    {
        "name": "sweep",
        "model": "model.onnx",
        "fpga_part": "xc7z020clg400-1",
        "clock_ns": 10,
        "finn_config": {"target_fps": 1000, "mvau_wwidth_max": 36},
        "design_space": {
            "kernels": [{"MVAU": ["hls", "rtl"]}, "Thresholding"],
            "finn_config": {"target_fps": [100, 200], "standalone_thresholds": [False, True]},
        },
        "expect": {
            "LUT": "<= 30000",
            "when": [{"choices": {"MVAU": "rtl"}, "LUT": "<= 20000"}],
        },
        "timeout": "2h",
        "step_timeouts": {"streamline": 60},
        "max_memory": "4G",
        "step_resources": {"streamline": {"memory": "8G", "vivado": 1}},
    },
    {
        "model": ["model.onnx"],
        "board": "Pynq-Z1",
        "clock_ns": 5.0,
        "output": "estimates",
        "start_step": "tidy_up",
        "design_space": {
            "steps": [
                "qonnx_to_finn",
                ["tidy_up", "~"],
                "streamline",
                {"after": "streamline", "insert": [["convert_to_hw", None]]},
                {"replace": ["tidy_up", "~"], "with": "tidy_up"},
                "specialize_layers",
            ],
        },
    },
    {
        "extends": "parent.yaml",
        "name": "child",
        "finn_config": {"synth_clk_period_ns": 4, "generate_outputs": ["estimate_reports"]},
        "design_space": {
            "steps": [
                {"at_start": {"insert": "tidy_up"}},
                {"at_end": {"insert": ["streamline", ["minimize_bit_width", None]]}},
            ]
        },
    },
]

SCALARS: list[Any] = [
    0,
    -1,
    1.5,
    float("inf"),
    float("nan"),
    10**300,
    True,
    None,
    "",
    "~",
    "x" * 300,
    "ü∂ 🚀 \u202e",
    "${UNDEFINED_FUZZ_VAR}",
    "$$",
    "2001-02-30",
    "streamlin",
    "<= 1e999",
    "finn:MVAU",
    [],
    {},
    [[[]]],
    {"a": {"b": [1, {"c": None}]}},
]

KEYS = [
    "name",
    "model",
    "design_space",
    "steps",
    "kernels",
    "finn_config",
    "expect",
    "when",
    "choices",
    "extends",
    "timeout",
    "step_timeouts",
    "max_memory",
    "step_resources",
    "memory",
    "MVAU",
    "modle",
    "1",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _mutate_structure(rng: random.Random, data: dict[str, Any]) -> Any:
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, last = _get(data, path[:-1]), path[-1]
        kind = rng.randrange(6)
        if kind == 0:  # type swap
            parent[last] = copy.deepcopy(rng.choice(SCALARS))
        elif kind == 1:  # a missing key / element
            del parent[last]
        elif kind == 2:  # wrong nesting
            parent[last] = (
                [parent[last]] if rng.random() < 0.5 else {rng.choice(KEYS): parent[last]}
            )
        elif kind == 3 and isinstance(parent, dict):  # an unknown or misplaced key
            parent[rng.choice(KEYS)] = copy.deepcopy(rng.choice(SCALARS))
        elif kind == 4 and isinstance(parent, dict):  # a typo
            parent[str(last)[:-1] + "x"] = parent.pop(last)
        else:  # a huge number
            parent[last] = rng.choice([10**4000, -(10**50), 1e308 * 10, 2**64])
    return data


def _dump(data: Any) -> str:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except (ValueError, yaml.YAMLError):  # 10**4000 has no YAML text in Python
        return yaml.safe_dump({"name": "unprintable"}) + "clock_ns: " + "7" * 5000 + "\n"


def _mutate_text(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines(keepends=True) or ["\n"]
    kind = rng.randrange(16)
    if kind == 0:
        return rng.choice([b"", b"\n", b"---\n", b"- a\n- b\n", b"42\n", b'"text"\n', b"~\n"])
    if kind == 1:
        depth = rng.choice([70, 200, 1000, 3000])
        opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
        return (text + "description: " + opener * depth + "1" + closer * depth + "\n").encode()
    if kind == 2:  # duplicate key
        line = rng.choice(lines)
        return (text + (line if not line.startswith(" ") else "name: dup\nname: dup\n")).encode()
    if kind == 3:  # tabs
        i = rng.randrange(len(lines))
        lines[i] = "\t" + lines[i].lstrip(" ")
        return "".join(lines).encode()
    if kind == 4:  # invalid bytes
        raw = bytearray(text.encode())
        raw.insert(rng.randrange(len(raw) + 1), rng.choice([0xFF, 0xC3, 0x00, 0x07, 0x80]))
        return bytes(raw)
    if kind == 5:  # aliases: sharing, recursion, a small bomb
        return (
            text
            + rng.choice(
                [
                    "base: &b {target_fps: 5}\nfinn_config: *b\n",
                    "description: &a [*a]\n",
                    "finn_config: &c {<<: *c}\n",
                    "x: &x [1, 2]\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x]\nz: &z [*y, *y, *y, *y, *y, *y, *y, *y]\n"
                    "w: [*z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z, *z]\n",
                    "name: *undefined\n",
                ]
            )
        ).encode()
    if kind == 6:  # tags
        return (
            text
            + rng.choice(
                [
                    "name: !!int abc\n",
                    "name: !!float x\n",
                    "name: !!binary '!!'\n",
                    "name: !!timestamp 2001-13-01\n",
                    "name: !custom x\n",
                    "name: !!python/object:os.system x\n",
                    "clock_ns: !!str 10\n",
                ]
            )
        ).encode()
    if kind == 7:  # truncation
        return text[: rng.randrange(len(text) + 1)].encode()
    if kind == 8:  # random byte flips
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 5)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 9:  # numbers YAML reads specially
        return (
            text
            + rng.choice(
                [
                    "clock_ns: .inf\n",
                    "clock_ns: -.inf\n",
                    "clock_ns: .nan\n",
                    "clock_ns: 0x1F\n",
                    "clock_ns: 1_000\n",
                    "clock_ns: 0o17\n",
                    "clock_ns: 1e400\n",
                    "clock_ns: 190:20:30\n",
                    "expect:\n  LUT: '<= 1e999'\n",
                    "expect:\n  LUT: '>= -1e999'\n",
                    "timeout: 1e999\n",
                    "max_memory: 1e999\n",
                    "timeout: -5\n",
                    "max_memory: 0\n",
                ]
            )
        ).encode()
    if kind == 10:  # unicode and odd strings where names are expected
        return (
            text
            + rng.choice(
                [
                    'name: "\\0\\x07"\n',
                    'model: "a\\0b.onnx"\n',
                    'extends: "\\0"\n',
                    'design_space:\n  steps: ["step_\\u00fc", "finn:"]\n',
                    'start_step: ""\n',
                    "model: " + "ü" * 200 + "\n",
                    "extends: /dev/null\n",
                    "extends: .\n",
                    "model: /\n",
                    "extends: parent.yaml\nextends: parent.yaml\n",
                ]
            )
        ).encode()
    if kind == 11:  # non-string keys
        return (
            text
            + rng.choice(
                [
                    "1: x\n",
                    "null: x\n",
                    "true: x\n",
                    "? [a]\n: x\n",
                    "2001-01-01: x\n",
                    "finn_config:\n  1: 2\n",
                    "expect:\n  null: '<= 1'\n",
                ]
            )
        ).encode()
    if kind == 12:  # a big but legal document
        values = ", ".join(str(i) for i in range(rng.choice([10, 1000, 4000])))
        return (text + f"description: [{values}]\n").encode()
    if kind == 13:  # variables
        return text.replace(
            "model.onnx",
            rng.choice(
                [
                    "${BLUEPRINT_DIR}/model.onnx",
                    "$NOPE/m",
                    "${YAML_DIR}/model.onnx",
                    "$$",
                    "${",
                    "${BSMITH_DIR}/x",
                ]
            ),
        ).encode()
    if kind == 14:  # windows line ends and a byte order mark
        return b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    return text.encode()


def generate(seed: int, count: int) -> Iterator[bytes]:
    """``count`` blueprints; the same seed gives the same ones."""
    rng = random.Random(seed)
    for _ in range(count):
        data = copy.deepcopy(rng.choice(BASES))
        if rng.random() < 0.7:
            data = _mutate_structure(rng, data)
        text = _dump(data)
        yield _mutate_text(rng, text) if rng.random() < 0.6 else text.encode()
