"""Careless and hostile blueprints (issue 11): every one is a collection error naming
the file, the line, the key and what was expected; never a traceback from our
modules, never INTERNALERROR; an alias bomb costs neither memory nor time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import HEAD, ROOT

from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError
from pytest_brainsmith.core.toolchain import finn_registry

#: 9 levels of 9 aliases: about 400 million strings if expanded (515 bytes of YAML).
ALIAS_BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)
MAPPING_BOMB = "x0: &x0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}\n" + "".join(
    f"x{i}: &x{i} {{{', '.join(f'k{j}: *x{i - 1}' for j in range(8))}}}\n" for i in range(1, 10)
)

#: (file content, key, what the message says, line); bytes are written as they are.
HOSTILE: dict[str, tuple[str | bytes, str, str, int | None]] = {
    "invalid_utf8": (HEAD.encode() + b"name: caf\xe9\n", "", "not valid UTF-8: byte 0xe9", 6),
    "control_character": (HEAD + "name: a\x07b\n", "", "character #x0007 is not allowed", 6),
    "deep_sequence": (
        HEAD + "description: " + "[" * 1000 + "]" * 1000 + "\n",
        "description[0][0][0]",
        "nested more than",
        6,
    ),
    "deep_mapping": (
        HEAD + "description: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
        "description.a.a.a",
        "nested more than",
        6,
    ),
    "self_referencing_anchor": (
        HEAD + "description: &a [*a]\n",
        "description[0]",
        "self-referencing anchor",
        6,
    ),
    "huge_integer": (
        HEAD.replace("target_fps: 1000", "target_fps: " + "9" * 4301),
        "finn_config.target_fps",
        "cannot read '999",
        5,
    ),
    "bad_int_tag": (
        HEAD.replace("target_fps: 1000", "target_fps: !!int abc"),
        "finn_config.target_fps",
        "cannot read 'abc' as int",
        5,
    ),
    "impossible_date": (
        HEAD + "name: 2001-02-30\n",
        "name",
        "cannot read '2001-02-30' as timestamp",
        6,
    ),
    "unknown_tag": (HEAD + "name: !secret x\n", "", "could not determine a constructor", 6),
    "long_model_path": (
        HEAD.replace("model.onnx", "m" * 300 + ".onnx"),
        "model",
        "cannot use the model file",
        1,
    ),
    "nul_in_model_path": (
        HEAD.replace("model.onnx", '"mo\\0del.onnx"'),
        "model",
        "cannot be a file name (it holds a NUL byte)",
        1,
    ),
    "long_extends_path": (
        HEAD + "extends: " + "p" * 300 + ".yaml\n",
        "extends",
        "cannot use parent blueprint",
        6,
    ),
    "alias_bomb": (
        HEAD + ALIAS_BOMB,
        "f",
        "expands to more than 200,000 values through aliases",
        11,
    ),
    "mapping_alias_bomb": (HEAD + MAPPING_BOMB, "x5", "through aliases", 11),
    "non_finite_bound": (
        HEAD + "expect:\n  LUT: '<= 1e999'\n",
        "expect.LUT",
        "expected a finite bound",
        7,
    ),
    "nan_clock": (
        HEAD.replace("clock_ns: 10", "clock_ns: .nan"),
        "clock_ns",
        "expects a finite number",
        3,
    ),
    "negative_clock": (
        HEAD.replace("clock_ns: 10", "clock_ns: -1"),
        "clock_ns",
        "expected a positive clock",
        3,
    ),
    "not_a_mapping": (
        "- model.onnx\n- clock_ns\n",
        "",
        "expected a mapping of blueprint keys, got list",
        1,
    ),
    "two_documents": (HEAD + "---\n" + HEAD, "", "malformed YAML", None),
    "tab_indent": (HEAD + "design_space:\n\tsteps: []\n", "", "malformed YAML", 7),
    "unhashable_key": (HEAD + "? [a, b]\n: 1\n", "", "malformed YAML: found unhashable key", None),
    "expect_list": (HEAD + "expect: [LUT]\n", "expect", "expected a mapping of metric", 6),
}


def write_case(folder: Path, name: str, content: str | bytes) -> Path:
    """Write a case (without HEAD's leading newline, so HEAD's first key is line 1)."""
    path = folder / f"{name}.blueprint.yaml"
    raw = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(raw.lstrip(b"\n"))
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_blueprint_is_an_error_with_file_line_and_key(tmp_path, model_file, name):
    content, key, message, line = HOSTILE[name]
    path = write_case(tmp_path, name, content)
    with pytest.raises(BlueprintError) as info:
        load_design_space(path, finn_registry())
    err = info.value
    assert err.file == path
    assert err.key == key
    assert message in str(err)
    if line is not None:
        assert err.line == line


def test_every_hostile_blueprint_is_a_collection_error_without_our_traceback(pytester):
    pytester.path.joinpath("model.onnx").write_bytes(b"never built")
    for name, (content, *_) in HOSTILE.items():
        write_case(pytester.path, name, content)
    result = pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    assert "pytest_brainsmith/" not in out, out
    result.stdout.fnmatch_lines([f"*{len(HOSTILE)} errors*"])
    for name in HOSTILE:
        assert f"ERROR collecting {name}.blueprint.yaml" in out


def test_parent_and_child_expect_of_different_types(write, model_file):
    write("parent.yaml", HEAD + "expect: '<= 5'\n")
    child = write("child.yaml", "extends: parent.yaml\nexpect:\n  LUT: '<= 1'\n")
    with pytest.raises(BlueprintError) as info:
        load_design_space(child, finn_registry())
    err = info.value
    assert err.file.name == "parent.yaml" and err.key == "expect" and err.line == 6
    assert "expected a mapping of metric" in str(err) and "got str" in str(err)
    write("parent2.yaml", HEAD + "expect:\n  LUT: '<= 5'\n")
    child2 = write("child2.yaml", "extends: parent2.yaml\nexpect: [LUT]\n")
    with pytest.raises(BlueprintError, match="child2.yaml:2: expect: expected a mapping"):
        load_design_space(child2, finn_registry())


def test_extends_loop_through_a_symlinked_folder_is_a_cycle(tmp_path, model_file):
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    path = tmp_path / "a.blueprint.yaml"
    path.write_text(HEAD.lstrip() + "extends: loop/a.blueprint.yaml\n")
    with pytest.raises(BlueprintError) as info:
        load_design_space(path, finn_registry())
    assert info.value.key == "extends" and info.value.line == 6
    assert "extends cycle" in str(info.value)
    # a long chain of distinct files stops at a bound, also with a clear message
    for i in range(40):
        (tmp_path / f"c{i}.yaml").write_text(f"extends: c{i + 1}.yaml\n")
    (tmp_path / "c40.yaml").write_text(HEAD)
    with pytest.raises(BlueprintError, match="more than 32 blueprints extend one another"):
        load_design_space(tmp_path / "c0.yaml", finn_registry())


BOMB_UNDER_LIMIT = """
import resource, sys
from pathlib import Path
from pytest_brainsmith.core.blueprint import load_design_space
from pytest_brainsmith.core.errors import BlueprintError
from pytest_brainsmith.core.toolchain import finn_registry

registry = finn_registry()
size_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
limit = size_kb * 1024 + 100 * 2**20  # what is loaded now, and 100 MB more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
for name in sys.argv[1:]:
    try:
        load_design_space(Path(name), registry)
    except BlueprintError as exc:
        print("REFUSED", exc)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_alias_bombs_are_refused_within_100_mb(tmp_path, model_file):
    """A safety bound, not a timing assertion: the process may not grow by 100 MB."""
    files = [
        write_case(tmp_path, "bomb", HEAD + ALIAS_BOMB),
        write_case(tmp_path, "mapping_bomb", HEAD + MAPPING_BOMB),
        write_case(tmp_path, "merge_bomb", HEAD + MAPPING_BOMB.replace("k0: *", "<<: *")),
    ]
    done = subprocess.run(
        [sys.executable, "-c", BOMB_UNDER_LIMIT, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    refused = [line for line in done.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 3, done.stdout
    assert all("through aliases" in line for line in refused)


# -- the fuzz test -----------------------------------------------------------------------------
FUZZ_SEED = 20241124
FUZZ_COUNT = 1200


def test_fuzzed_blueprints_never_end_in_our_traceback(pytester):
    from fuzz_blueprints import generate

    pytester.path.joinpath("model.onnx").write_bytes(b"never built")
    pytester.path.joinpath("parent.yaml").write_text(
        HEAD + "design_space:\n  steps: [qonnx_to_finn, tidy_up]\n"
    )
    files = {}
    for index, content in enumerate(generate(FUZZ_SEED, FUZZ_COUNT)):
        name = f"fuzz_{index:04d}.blueprint.yaml"
        pytester.path.joinpath(name).write_bytes(content)
        files[name] = content
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "-p", "no:cacheprovider", "--brainsmith-max-designs", "200"
    )
    out = result.stdout.str() + result.stderr.str()
    sections = re.split(r"_+ ERROR collecting (\S+) _+", out)
    errors = dict(zip(sections[1::2], sections[2::2], strict=True))
    bad = {
        name: text
        for name, text in errors.items()
        if "pytest_brainsmith/" in text or "Traceback" in text
    }
    if "INTERNALERROR" in out or bad or "pytest_brainsmith/" in out:
        shown = [
            f"--- {name} (seed {FUZZ_SEED}):\n{files[name][:2000]!r}\n{textwrap.indent(text[-3000:], '  ')}"
            for name, text in list(bad.items())[:5]
        ]
        pytest.fail("\n".join(shown) or out[-5000:], pytrace=False)
    assert result.ret in (0, 2), out[-3000:]  # 2: interrupted by collection errors
    assert len(errors) > FUZZ_COUNT // 4, "the generator should mostly break blueprints"
    collected = re.search(r"(\d+) tests? collected", out)
    assert collected and int(collected.group(1)) > 20, "and leave some working"
    for name, text in errors.items():  # each message names its file
        assert name in text, (name, text[-2000:])
