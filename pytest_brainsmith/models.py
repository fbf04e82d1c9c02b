"""Bring your own model: a Brevitas network exported to a QONNX file FINN accepts.

    from pytest_brainsmith.models import export

    export(my_brevitas_net, (1, 1, 28, 28), "models/my_net.onnx")

or from a shell (``brainsmith-export``, also ``python -m pytest_brainsmith.models``)::

    brainsmith-export my_net.py:MyNet --input-shape 1,1,28,28 --weights my_net.pth

What a plain ``brevitas.export.export_qonnx`` leaves to do, done here: torch 2.13 removed
``Tensor.rename``, which brevitas 0.13 (the version finn-plus 1.6.1 pins) calls in every
quant layer, so it is given back as a no-op while exporting; the weights go into the one
file (torch's exporter may write a ``.onnx.data`` side file); the graph is cleaned up
(qonnx's cleanup: shapes inferred, constants folded, unique and readable names); the
graph input's datatype is annotated when the network has no input quantizer of its own.
The command also writes a starter blueprint beside the model, so that ``pytest`` on it
gives a first report.

torch, brevitas, qonnx and onnx are imported only inside the functions that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: Ops the graph input may pass through (reshapes, scaling) before its quantizer.
_ON_THE_WAY = {
    "Reshape",
    "Flatten",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
}
#: Ops that quantize: a network whose input reaches one of these first quantizes itself.
_QUANTIZERS = {"Quant", "BipolarQuant", "Trunc", "MultiThreshold", "QuantizeLinear"}

STARTER_BLUEPRINT = """\
# Written by brainsmith-export for {model}: FINN's estimate-only pipeline on a
# Zynq-7020 at 100 MHz, one design per target throughput. Run it with
#   pytest {blueprint} --html=report.html
# and extend it as README's "Blueprints" section says (kernels, folding, expect).
name: {name}
model: {model}
fpga_part: {fpga_part}
clock_ns: {clock_ns}
output: estimates
design_space:
  finn_config:
    target_fps: [1000, 10000, 100000]
"""


class ExportError(Exception):
    """The module cannot be exported as asked (said in one line, no traceback)."""


@contextlib.contextmanager
def torch_compatible() -> Iterator[None]:
    """``torch.Tensor.rename`` as a no-op while brevitas 0.13 exports under torch 2.13
    (which removed it); nothing changes where torch still has it."""
    import torch

    if hasattr(torch.Tensor, "rename"):
        yield
        return
    torch.Tensor.rename = lambda self, *args, **kwargs: self  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del torch.Tensor.rename  # type: ignore[attr-defined]


def export(
    module: Any,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    input_datatype: str | None = None,
    cleanup: bool = True,
) -> Path:
    """Export the Brevitas ``module`` (a ``torch.nn.Module``) to the QONNX file ``path``
    for an input of ``input_shape`` (batch first, e.g. ``(1, 3, 32, 32)``) and return the
    path. ``input_datatype`` annotates the graph input (a QONNX datatype such as
    ``UINT8`` for pixels fed as they are, ``BIPOLAR``, ``INT4``): needed when the
    network's first layer takes its input without a quantizer of its own (FINN turns
    only integer tensors into hardware); a warning says so when it is missing. The file
    is written whole or not at all (a rename), in eval mode, with the weights inside."""
    import onnx
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    target = Path(path)
    shape = tuple(int(n) for n in input_shape)
    if not shape or any(n < 1 for n in shape):
        raise ExportError(f"input_shape must be positive sizes, batch first; got {input_shape}")
    if input_datatype is not None and not _is_datatype(input_datatype, DataType):
        raise ExportError(
            f"unknown input_datatype {input_datatype!r}: expected a QONNX datatype such as "
            "UINT8, INT8, BIPOLAR, BINARY"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)  # the tracing input; the global RNG is left
    example = torch.randn(*shape, generator=generator)
    training = module.training
    module.eval()
    try:
        with (
            tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp,
            torch_compatible(),
            torch.no_grad(),
        ):
            staged = Path(tmp) / target.name
            export_qonnx(module, example, export_path=str(staged))
            # torch's exporter may put the weights in a side file: one file, self-contained
            model = ModelWrapper(onnx.load(str(staged), load_external_data=True))
            if cleanup:
                model = cleanup_model(model)
            graph_input = model.graph.input[0].name
            if input_datatype is not None:
                model.set_tensor_datatype(graph_input, DataType[input_datatype])
            elif not _quantized_at_input(model, graph_input):
                warnings.warn(
                    f"{target.name}: the network takes its input {graph_input!r} as float, "
                    "without a quantizer of its own; FINN turns only integer tensors into "
                    "hardware: pass input_datatype (e.g. 'UINT8' for pixels 0..255, "
                    "--input-datatype on the command line)",
                    UserWarning,
                    stacklevel=2,
                )
            onnx.save_model(model.model, str(staged), save_as_external_data=False)
            os.replace(staged, target)
    finally:
        module.train(training)
    return target


def _is_datatype(name: str, datatype: Any) -> bool:
    try:
        datatype[name]
    except (KeyError, AttributeError, ValueError, IndexError, TypeError):
        return False
    return True


def _quantized_at_input(model: Any, name: str) -> bool:
    """The graph input reaches a quantizer before any compute (through reshapes and
    scaling), or is annotated as an integer type already."""
    if model.get_tensor_datatype(name).name != "FLOAT32":
        return True
    frontier = [name]
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        for node in model.find_consumers(tensor) or []:
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in _QUANTIZERS:
                continue
            if node.op_type not in _ON_THE_WAY:
                return False
            frontier.extend(node.output)
    return True


def write_starter_blueprint(
    model: Path, blueprint: Path, *, fpga_part: str = "xc7z020clg400-1", clock_ns: float = 10.0
) -> bool:
    """A blueprint exploring ``model`` with FINN's estimate pipeline (never overwrites
    one that exists: whether it was written)."""
    if blueprint.exists():
        return False
    relative = os.path.relpath(model.resolve(), blueprint.resolve().parent)
    name = blueprint.name.split(".blueprint.", 1)[0]
    blueprint.write_text(
        STARTER_BLUEPRINT.format(
            model=Path(relative).as_posix(),
            blueprint=blueprint.name,
            name=name,
            fpga_part=fpga_part,
            clock_ns=clock_ns,
        )
    )
    return True


def load_module(source: str, weights: str | None = None) -> Any:
    """The module ``source`` names: ``FILE.py:NAME`` or ``package.module:NAME`` (a module
    object, or a class or function that makes one without arguments), or a file saved
    with ``torch.save(module)``; ``weights``: a ``state_dict`` file loaded into it."""
    import torch

    if ":" in source and not Path(source).is_file():
        where, _, name = source.rpartition(":")
        namespace = _import(where)
        if not hasattr(namespace, name):
            raise ExportError(f"{where} has no {name!r}")
        found = getattr(namespace, name)
        module = found if isinstance(found, torch.nn.Module) else found()
    elif Path(source).is_file():
        with torch_compatible():
            module = torch.load(source, map_location="cpu", weights_only=False)
    else:
        raise ExportError(
            f"{source}: expected FILE.py:NAME, package.module:NAME, or a file saved with "
            "torch.save(module)"
        )
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"{source} is a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
            state = state["state_dict"]
        module.load_state_dict(state)
    return module


def _import(where: str) -> Any:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ExportError(f"{where}: no such file")
        sys.path.insert(0, str(path.resolve().parent))  # its own imports, as python FILE does
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        namespace = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = namespace
        spec.loader.exec_module(namespace)
        return namespace
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise ExportError(f"cannot import {where}: {exc}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes such as 1,3,32,32; got {text!r}"
        ) from None
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 1,3,32,32; got {text!r}")
    return shape


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brainsmith-export",
        description="Export a Brevitas network to a QONNX file FINN accepts, with a starter "
        "blueprint beside it.",
    )
    parser.add_argument(
        "source",
        help="FILE.py:NAME or package.module:NAME (a module, or a class or function making "
        "one without arguments), or a file saved with torch.save(module)",
    )
    parser.add_argument(
        "--input-shape", type=_shape, required=True, help="batch first, e.g. 1,1,28,28"
    )
    parser.add_argument("-o", "--output", type=Path, help="the .onnx file (default: NAME.onnx)")
    parser.add_argument("--weights", help="a state_dict file (torch.save) to load first")
    parser.add_argument(
        "--input-datatype",
        help="the input's QONNX datatype when the network has no input quantizer (UINT8, ...)",
    )
    parser.add_argument(
        "--blueprint",
        type=Path,
        help="the starter blueprint to write (default: beside the model, NAME.blueprint.yaml; "
        "an existing file is kept)",
    )
    parser.add_argument("--no-blueprint", action="store_true", help="write no blueprint")
    parser.add_argument("--fpga-part", default="xc7z020clg400-1", help="the blueprint's part")
    parser.add_argument("--clock-ns", type=float, default=10.0, help="the blueprint's clock")
    args = parser.parse_args(argv)
    name = args.source.rpartition(":")[2] if ":" in args.source else Path(args.source).stem
    output = args.output or Path(f"{name.lower()}.onnx")
    try:
        module = load_module(args.source, args.weights)
        written = export(module, args.input_shape, output, input_datatype=args.input_datatype)
    except (ExportError, OSError, RuntimeError) as exc:
        print(f"brainsmith-export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written} ({written.stat().st_size} bytes)")
    if not args.no_blueprint:
        blueprint = args.blueprint or written.with_name(f"{written.stem}.blueprint.yaml")
        if write_starter_blueprint(
            written, blueprint, fpga_part=args.fpga_part, clock_ns=args.clock_ns
        ):
            print(f"wrote {blueprint}: run `pytest {blueprint} --html=report.html`")
        else:
            print(f"kept {blueprint} (it exists)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
