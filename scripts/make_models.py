"""Build the bundled example model: FINN's TFC topology (784-64-64-64-10, 2-bit
weights and activations) from brevitas_examples, random weights, exported to QONNX.

Deterministic (fixed torch seed), no download. Run from the project root:
    .venv/bin/python scripts/make_models.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def main(out_dir: Path) -> None:
    # torch 2.13 removed Tensor.rename, which brevitas 0.13.0 calls in every
    # quant layer (see shared finn-notes); a no-op restores the old behaviour.
    if not hasattr(torch.Tensor, "rename"):
        torch.Tensor.rename = lambda self, *a, **k: self  # type: ignore[attr-defined]
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "tfc_w2a2.onnx"
    export_qonnx(model, torch.randn(1, 1, 28, 28), export_path=str(target))
    # torch's exporter may put the weights in a side file; keep one self-contained file.
    import onnx

    proto = onnx.load(str(target), load_external_data=True)
    for side_file in out_dir.glob(target.name + ".data"):
        side_file.unlink()
    onnx.save_model(proto, str(target), save_as_external_data=False)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "models")
