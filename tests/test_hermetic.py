"""Hermetic builds: what one build does to its process never reaches another build.

Each kind of process state a step can change (a monkeypatch of FINN, the environment at
the C level, sys.path, numpy's random state and error handling, warnings filters, a
thread, an open file, the umask, an rlimit, tempfile's folder, torch's threads, a class
attribute) is changed by a ``pollute`` step; a ``check`` step built in a segment below
it, with one engine worker (so on reused processes it would be the very process that
polluted), records what it finds. Every kind must find the clean state. A FINN build
next to a step that monkeypatches FINN's folding gets FINN's own folding, and published
entries have the same modes whatever a step did to the umask or to its files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import MODEL, STEPS_HEAD

#: kind -> (what ``pollute`` does, what ``check`` records: True when the state is clean)
KINDS = {
    "monkeypatch": (
        "from finn.transformation.fpgadataflow.set_folding import SetFolding\n"
        "SetFolding.apply = lambda self, model: (model, False)",
        "from finn.transformation.fpgadataflow.set_folding import SetFolding\n"
        "clean = SetFolding.apply.__qualname__ == 'SetFolding.apply'",
    ),
    "putenv": (
        "os.putenv('BRAINSMITH_LEAK', 'left behind')",
        "import ctypes\n"
        "getenv = ctypes.CDLL(None).getenv\n"
        "getenv.restype = ctypes.c_char_p\n"
        "clean = getenv(b'BRAINSMITH_LEAK') is None",
    ),
    "sys_path": (
        "sys.path.insert(0, '/brainsmith-leak')",
        "clean = '/brainsmith-leak' not in sys.path",
    ),
    "numpy_random": (
        "import numpy as np\nnp.random.seed(1234)",
        "import numpy as np\n"
        "clean = np.random.get_state()[1][0] != np.random.RandomState(1234).get_state()[1][0]",
    ),
    "class_attribute": (
        "from qonnx.core.modelwrapper import ModelWrapper\nModelWrapper.brainsmith_leak = 1",
        "from qonnx.core.modelwrapper import ModelWrapper\n"
        "clean = not hasattr(ModelWrapper, 'brainsmith_leak')",
    ),
    "numpy_seterr": (
        "import numpy as np\nnp.seterr(all='raise')",
        "import numpy as np\nclean = np.geterr()['divide'] != 'raise'",
    ),
    "warnings_filter": (
        "import warnings\nwarnings.simplefilter('error')\n"
        "warnings.filterwarnings('ignore', message='brainsmith-leak')",
        "import warnings\n"
        "clean = not any(f[1] is not None and f[1].pattern == 'brainsmith-leak' "
        "for f in warnings.filters)",
    ),
    "thread": (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), name='brainsmith-leak', "
        "daemon=True).start()",
        "import threading\n"
        "clean = 'brainsmith-leak' not in [t.name for t in threading.enumerate()]",
    ),
    "open_file": (
        "global KEPT\nKEPT = open(os.path.join(HERE, 'brainsmith-leak.txt'), 'w')",
        "clean = not any(os.readlink(f'/proc/self/fd/{fd}').endswith('brainsmith-leak.txt') "
        "for fd in os.listdir('/proc/self/fd') if os.path.exists(f'/proc/self/fd/{fd}'))",
    ),
    "umask": (
        "os.umask(0o077)",
        "mask = os.umask(0o022)\nos.umask(mask)\nclean = mask != 0o077",
    ),
    "rlimit": (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, "
        "(123, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))",
        "import resource\nclean = resource.getrlimit(resource.RLIMIT_NOFILE)[0] != 123",
    ),
    "tempdir": (
        "import tempfile\ntempfile.tempdir = '/brainsmith-leak'",
        "import tempfile\nclean = tempfile.tempdir != '/brainsmith-leak'",
    ),
    "torch_threads": (
        "import torch\ntorch.set_num_threads(7)",
        "import torch\nclean = torch.get_num_threads() != 7",
    ),
}

CONFTEST = """
import json, os, sys

HERE = os.path.dirname(__file__)


def _log(row):
    with open(os.path.join(HERE, "seen.jsonl"), "a") as log:
        log.write(json.dumps({{**row, "pid": os.getpid()}}) + "\\n")


def pollute(model, cfg):
{pollute}
    _log({{"step": "pollute"}})
    model.set_metadata_prop("made_by", "pollute")  # a model of its own: not shared below
    return model


def stay_clean(model, cfg):
    _log({{"step": "stay_clean"}})
    model.set_metadata_prop("made_by", "stay_clean")
    return model


def check(model, cfg):
{check}
    _log({{"step": "check", "clean": bool(clean)}})
    return model


def check_again(model, cfg):
    check(model, cfg)
    return model


def pytest_brainsmith_register(registry):
    for step in (pollute, stay_clean, check, check_again):
        registry.register_step(step, reads=())
"""


def indent(code: str) -> str:
    return "\n".join("    " + line for line in code.splitlines())


def seen(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "seen.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_what_a_build_does_to_its_process_never_reaches_the_next_build(
    pytester: pytest.Pytester, kind: str
):
    pollute, check = KINDS[kind]
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(CONFTEST.format(pollute=indent(pollute), check=indent(check)))
    (pytester.path / "e.blueprint.yaml").write_text(
        STEPS_HEAD + "    - [pollute, stay_clean]\n    - [check, check_again]\n"
    )
    done = pytester.runpytest_subprocess("--brainsmith-workers", "1", "-p", "no:cacheprovider")
    done.assert_outcomes(passed=4)
    rows = seen(pytester.path)
    checks = [row for row in rows if row["step"] == "check"]
    # the checks below ``pollute`` ran after it (their parent), with a worker each
    assert rows[0]["step"] in ("pollute", "stay_clean") and len(checks) == 4, rows
    assert all(row["clean"] for row in checks), rows
    assert len({row["pid"] for row in rows}) == len(rows), rows  # a process per build


def test_entries_have_the_same_modes_whatever_a_step_did(pytester: pytest.Pytester):
    """A step that narrows the umask and makes its files private: the cache entries it and
    its children publish are readable by every user of a shared cache."""
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(
        CONFTEST.format(
            pollute=indent(
                "os.umask(0o077)\n"
                "os.makedirs(os.path.join(cfg.output_dir, 'private'), exist_ok=True)\n"
                "path = os.path.join(cfg.output_dir, 'private', 'secret.txt')\n"
                "open(path, 'w').write('x')\n"
                "os.chmod(path, 0o600)"
            ),
            check="    clean = True",
        )
    )
    (pytester.path / "e.blueprint.yaml").write_text(
        STEPS_HEAD + "    - [pollute, stay_clean]\n    - [check, check_again]\n"
    )
    done = pytester.runpytest_subprocess("--brainsmith-workers", "1", "-p", "no:cacheprovider")
    done.assert_outcomes(passed=4)
    entries = list(
        (pytester.path / "build" / "brainsmith" / "cache" / "v1" / "entries").glob("*/*")
    )
    assert len(entries) == 6
    mask = os.umask(0o022)
    os.umask(mask)
    found = set()
    for entry in entries:
        for path in [entry, *entry.rglob("*")]:
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_dir():
                assert mode == 0o777 & ~mask, (path, oct(mode))
            else:
                assert mode in (0o444 & ~mask, 0o555 & ~mask), (path, oct(mode))
            found.add(path.name)
    assert "secret.txt" in found  # the private file was published readable


STEPS = """
import json, os

HERE = os.path.dirname(__file__)


def patch_folding(model, cfg):
    # a user step that changes FINN itself for its own design
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    SetFolding.apply = lambda self, model: (model, False)
    with open(os.path.join(HERE, "order.txt"), "a") as log:
        log.write("patch\\n")
    return model


def leave_folding(model, cfg):
    with open(os.path.join(HERE, "order.txt"), "a") as log:
        log.write("leave\\n")
    return model


def pytest_brainsmith_register(registry):
    registry.register_step(patch_folding, reads=())
    registry.register_step(leave_folding, reads=())
"""

FOLDING_SWEEP = """
model: tfc.onnx
fpga_part: xc7z020clg400-1
clock_ns: 10.0
finn_config:
  target_fps: 100000
design_space:
  steps:
    - qonnx_to_finn
    - tidy_up
    - streamline
    - convert_to_hw
    - create_dataflow_partition
    - specialize_layers
    - [patch_folding, leave_folding]
    - target_fps_parallelization
    - apply_folding_config
    - generate_estimate_reports
"""


def estimates(folder: Path, choice: str) -> dict:
    """The estimates of the design whose step branch chose ``choice``, from the results
    store of the last run."""
    import sqlite3

    with sqlite3.connect(folder / "build" / "brainsmith" / "results.sqlite") as db:
        rows = db.execute(
            "SELECT design, lut, throughput_fps FROM designs "
            "WHERE run_id = (SELECT run_id FROM runs ORDER BY started DESC LIMIT 1)"
        ).fetchall()
    for design, lut, fps in rows:
        if design.endswith("::" + choice):
            return {"LUT": lut, "fps": fps}
    raise AssertionError(rows)


def test_a_finn_build_after_a_step_that_patched_finn_gets_finns_own_folding(tmp_path: Path):
    """Issue 28's case on real FINN: a design whose step monkeypatches SetFolding, and a
    sibling built after it on the same single worker: the sibling's estimates are those
    it has when built alone."""
    from conftest import run_in

    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "tfc.onnx")
    (folder / "conftest.py").write_text(STEPS)
    (folder / "sweep.blueprint.yaml").write_text(FOLDING_SWEEP)
    alone = run_in(folder, "--brainsmith-workers", "1", "-k", "leave_folding", timeout=600)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    wanted = estimates(folder, "leave_folding")
    shutil.rmtree(folder / "build" / "brainsmith" / "cache")
    (folder / "order.txt").unlink()
    # the patching branch first (its name sorts first, and nothing else orders them)
    both = run_in(folder, "--brainsmith-workers", "1", timeout=600)
    assert both.returncode == 0, both.stdout + both.stderr
    order = (folder / "order.txt").read_text().split()
    assert order == ["patch", "leave"], order  # else this test would prove nothing
    assert estimates(folder, "leave_folding") == wanted
    # and the patch did what it does to its own design: no folding at all
    assert estimates(folder, "patch_folding")["fps"] < wanted["fps"]


ZYGOTE_KILLER = """
import os, signal, time


def kill_zygote(model, cfg):
    os.kill(os.getppid(), signal.SIGKILL)  # the fork server: as the OOM killer might
    time.sleep(30)  # the kernel ends this process with its parent
    return model


def fine(model, cfg):
    return model


def pytest_brainsmith_register(registry):
    registry.register_step(kill_zygote, reads=())
    registry.register_step(fine, reads=())
"""


def test_a_fork_server_killed_mid_run_is_named_and_counted(pytester: pytest.Pytester):
    shutil.copyfile(MODEL, pytester.path / "tfc.onnx")
    pytester.makeconftest(ZYGOTE_KILLER)
    (pytester.path / "e.blueprint.yaml").write_text(STEPS_HEAD + "    - [kill_zygote, fine]\n")
    done = pytester.runpytest_subprocess("--brainsmith-workers", "1", "-p", "no:cacheprovider")
    done.assert_outcomes(passed=1, failed=1)
    out = done.stdout.str()
    assert "the fork server (pid" in out and "died, and the worker with it" in out
    assert "1 lost (the machine's fault" in out
    # nothing recorded: the next run builds it again (and the server dies again)
    assert not list((pytester.path / "build" / "brainsmith" / "cache" / "v1").glob("failures/*"))
