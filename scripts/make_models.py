"""Build the example models from FINN's brevitas_examples topologies, random weights,
exported to QONNX. Deterministic (fixed torch seed), no download.

- ``tfc`` (bundled in models/): TFC, 784-64-64-64-10, 2-bit weights and activations;
- ``cnv`` (for bench/explore.py --model cnv; about 6 MB, so built, not shipped):
  CNV, 3x32x32 input, six conv and three FC layers, 2-bit weights and activations.

Run from the project root:
    .venv/bin/python scripts/make_models.py [--model tfc|cnv] [OUT_DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

#: name -> (brevitas_examples config, input shape, file name)
MODELS = {
    "tfc": ("tfc_2w2a", (1, 1, 28, 28), "tfc_w2a2.onnx"),
    "cnv": ("cnv_2w2a", (1, 3, 32, 32), "cnv_w2a2.onnx"),
}


def make_model(name: str, out_dir: Path) -> Path:
    config, shape, file_name = MODELS[name]
    # torch 2.13 removed Tensor.rename, which brevitas 0.13.0 calls in every
    # quant layer (see shared finn-notes); a no-op restores the old behaviour.
    if not hasattr(torch.Tensor, "rename"):
        torch.Tensor.rename = lambda self, *a, **k: self  # type: ignore[attr-defined]
    import onnx
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(config, pretrained=False)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / file_name
    export_qonnx(model, torch.randn(*shape), export_path=str(target))
    # torch's exporter may put the weights in a side file; keep one self-contained file.
    proto = onnx.load(str(target), load_external_data=True)
    for side_file in out_dir.glob(target.name + ".data"):
        side_file.unlink()
    onnx.save_model(proto, str(target), save_as_external_data=False)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tfc")
    parser.add_argument(
        "out_dir", nargs="?", type=Path, default=Path(__file__).parent.parent / "models"
    )
    args = parser.parse_args()
    target = make_model(args.model, args.out_dir)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
