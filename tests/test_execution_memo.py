"""Executions kept by content (core/cache/execution_memo.py): computed once, read back while
nothing they depend on changed, never read back torn or edited."""

from pathlib import Path

import numpy as np

from pytest_brainsmith.core.cache.execution_memo import ExecutionMemo


def _counting(outputs):
    calls = []

    def compute():
        calls.append(1)
        return outputs

    return compute, calls


def test_computed_once_then_read_back(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model one")
    inputs = np.arange(6, dtype=np.float32).reshape(2, 3)
    compute, calls = _counting(np.array([[1.0, 2.0], [3.0, 4.0]]))
    memo = ExecutionMemo(tmp_path / "cache")
    first = memo.run([model], inputs, compute)
    again = ExecutionMemo(tmp_path / "cache").run([model], inputs, compute)
    assert len(calls) == 1
    assert np.array_equal(first, again) and again.dtype == first.dtype


def test_what_it_depends_on_changes_the_answer(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model one")
    inputs = np.zeros((2, 3), dtype=np.float32)
    memo = ExecutionMemo(tmp_path / "cache")
    compute, calls = _counting(np.ones(2))
    memo.run([model], inputs, compute)
    memo.run([model], inputs + 1, compute)  # other inputs
    memo.run([model], inputs.reshape(3, 2), compute)  # same bytes, other shape
    model.write_bytes(b"model two")  # the model edited
    memo.run([model], inputs, compute)
    assert len(calls) == 4
    memo.run([model], inputs, compute)
    assert len(calls) == 4


def test_a_torn_or_edited_memo_is_computed_again(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    inputs = np.zeros((1, 4), dtype=np.float32)
    memo = ExecutionMemo(tmp_path / "cache")
    truth = np.arange(64, dtype=np.float64)
    compute, calls = _counting(truth)
    memo.run([model], inputs, compute)
    (kept,) = (tmp_path / "cache").rglob("*.npz")

    edited = bytearray(kept.read_bytes())
    edited[-200] ^= 0xFF  # inside the stored outputs or their digest
    kept.write_bytes(bytes(edited))
    assert np.array_equal(memo.run([model], inputs, compute), truth)
    assert len(calls) == 2

    kept.write_bytes(kept.read_bytes()[:50])  # torn
    assert np.array_equal(memo.run([model], inputs, compute), truth)
    assert len(calls) == 3
    assert np.array_equal(memo.run([model], inputs, compute), truth)
    assert len(calls) == 3  # the rewritten memo is good again
