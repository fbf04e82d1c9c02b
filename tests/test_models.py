"""Bring your own model: the README's two commands on a small Brevitas network of the
test's own, each in a process of its own (torch in the test process, beside FINN's
execution in earlier tests, crashed it: see conftest.export_model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_in

#: A small Brevitas MLP as a user writes one: an input quantizer, two quantized layers.
NETWORK = """
import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant_in = QuantIdentity(bit_width=4, return_quant_tensor=True)
        self.fc1 = QuantLinear(64, 32, bias=False, weight_bit_width=2)
        self.act = QuantReLU(bit_width=2, return_quant_tensor=True)
        self.fc2 = QuantLinear(32, 10, bias=False, weight_bit_width=2)

    def forward(self, x):
        x = self.quant_in(x.reshape(x.shape[0], -1))
        return self.fc2(self.act(self.fc1(x)))


def make():
    torch.manual_seed(0)
    return SmallNet()
"""

#: The same network without its input quantizer: FINN needs the input's datatype.
UNQUANTIZED_INPUT = NETWORK.replace(
    "x = self.quant_in(x.reshape(x.shape[0], -1))", "x = x.reshape(x.shape[0], -1)"
)


def export(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_brainsmith.models", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_brevitas_network_reaches_a_first_report_in_two_commands(tmp_path: Path):
    import onnx

    (tmp_path / "small_net.py").write_text(NETWORK)
    done = export(
        tmp_path, "small_net.py:make", "--input-shape", "1,1,8,8", "-o", "models/small.onnx"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    model = tmp_path / "models" / "small.onnx"
    blueprint = tmp_path / "models" / "small.blueprint.yaml"
    assert f"wrote {Path('models/small.onnx')}" in done.stdout
    assert "input as float" not in done.stderr  # it quantizes its own input
    assert sorted(p.name for p in model.parent.iterdir()) == ["small.blueprint.yaml", "small.onnx"]
    proto = onnx.load(str(model), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    ops = {n.op_type for n in proto.graph.node}
    assert "Quant" in ops and ops & {"MatMul", "Gemm"}, ops  # FINN's qonnx_to_finn takes both
    assert [i.name for i in proto.graph.input] == ["global_in"]  # qonnx cleanup's names
    assert "model: small.onnx" in blueprint.read_text()

    done = run_in(tmp_path, str(blueprint.relative_to(tmp_path)), "--html=report.html", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout
    page = (tmp_path / "report.html").read_text()
    assert "Design-space exploration (pytest-brainsmith)" in page
    assert "target_fps=100000" in page

    # again: the model is exported again, the blueprint (maybe edited) is kept
    blueprint.write_text(blueprint.read_text() + "# mine\n")
    done = export(
        tmp_path, "small_net.py:make", "--input-shape", "1,1,8,8", "-o", "models/small.onnx"
    )
    assert done.returncode == 0 and "kept" in done.stdout, done.stdout + done.stderr
    assert blueprint.read_text().endswith("# mine\n")


def test_an_input_without_quantizer_is_annotated_or_warned_about(tmp_path: Path):
    import onnx

    (tmp_path / "net.py").write_text(UNQUANTIZED_INPUT)
    done = export(tmp_path, "net.py:make", "--input-shape", "1,64", "--no-blueprint")
    assert done.returncode == 0, done.stderr
    assert "takes its input 'global_in' as float" in done.stderr
    assert "--input-datatype" in done.stderr
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file() and p.suffix != ".py")
    assert written == ["make.onnx"]

    done = export(
        tmp_path,
        "net.py:make",
        "--input-shape",
        "1,64",
        "--input-datatype",
        "UINT8",
        "-o",
        "u8.onnx",
        "--no-blueprint",
    )
    assert done.returncode == 0 and "as float" not in done.stderr, done.stderr
    proto = onnx.load(str(tmp_path / "u8.onnx"))
    annotations = {
        a.tensor_name: {p.key: p.value for p in a.quant_parameter_tensor_names}
        for a in proto.graph.quantization_annotation
    }
    assert annotations["global_in"]["finn_datatype"] == "UINT8"

    done = export(tmp_path, "net.py:make", "--input-shape", "1,64", "--input-datatype", "UNIT8")
    assert done.returncode == 2 and "unknown input_datatype 'UNIT8'" in done.stderr, done.stderr
    done = export(tmp_path, "net.py:nothing", "--input-shape", "1,64")
    assert done.returncode == 2 and "net.py has no 'nothing'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
