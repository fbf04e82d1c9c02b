"""Build the example models from brevitas_examples topologies, random weights,
exported to QONNX. Deterministic (fixed torch seed), no download.

- ``tfc`` (bundled in models/): TFC, 784-64-64-64-10, 2-bit weights and activations;
- ``tfc_w1a1``: the same topology with 1-bit weights and activations (FINN builds every
  MVAU of it as ``MVAU_hls``, whatever backend is asked: the content dedupe's case);
- ``lfc``: LFC, 784-1024-1024-1024-10, 1-bit weights and activations (bench/dedupe.py);
- ``cnv`` (for bench/explore.py --model cnv; about 6 MB, so built, not shipped):
  CNV, 3x32x32 input, six conv and three FC layers, 2-bit weights and activations;
- ``mobilenet``: MobileNet-v1 (brevitas_examples.imagenet_classification), 4-bit weights
  and activations as in Xilinx/finn-examples (first and last layer 8-bit weights),
  1x3x224x224 input quantized to 8 bits by an input quantizer, 1000 classes (about
  2 MB... of 4-bit weights stored as float32: 17 MB, so built on first use);
- ``mobilenet_tiny``: the same code with width 0.25, the first three depthwise-separable
  blocks only and a 32x32 input: every kind of layer MobileNet-v1 has (the 8-bit first
  convolution, depthwise and pointwise convolutions, stride 1 and 2, the average pool,
  the classifier, 10 classes), small enough for a test.

The MobileNets' batch-norm statistics are calibrated on random images (``calibrate``):
with their initial ones the random network's activations died out by the fifth layer
and every input gave the same output, so no comparison of outputs could tell a
corrupted model from a right one (verify:, see README).

Run from the project root:
    .venv/bin/python scripts/make_models.py [--model tfc|cnv|mobilenet|mobilenet_tiny] [OUT_DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

#: name -> (brevitas_examples config, input shape, file name)
MODELS = {
    "tfc": ("tfc_2w2a", (1, 1, 28, 28), "tfc_w2a2.onnx"),
    "tfc_w1a1": ("tfc_1w1a", (1, 1, 28, 28), "tfc_w1a1.onnx"),
    "lfc": ("lfc_1w1a", (1, 1, 28, 28), "lfc_w1a1.onnx"),
    "cnv": ("cnv_2w2a", (1, 3, 32, 32), "cnv_w2a2.onnx"),
    "mobilenet": ("mobilenet", (1, 3, 224, 224), "mobilenet_v1_w4a4.onnx"),
    "mobilenet_tiny": ("mobilenet_tiny", (1, 3, 32, 32), "mobilenet_v1_tiny_w4a4.onnx"),
}

#: MobileNet variants: channels per stage (brevitas_examples' layout), width scale,
#: average pool kernel (the last feature map's side), classes.
MOBILENETS = {
    "mobilenet": (
        [[32], [64], [128, 128], [256, 256], [512] * 6, [1024, 1024]],
        1.0,
        7,
        1000,
    ),
    "mobilenet_tiny": ([[32], [64], [128, 128]], 0.25, 8, 10),
}


def _mobilenet(name: str) -> torch.nn.Module:
    """brevitas_examples' quantized MobileNet-v1 at 4 bits (its ``quant_mobilenet_v1_4b``
    settings), preceded by an 8-bit input quantizer so that FINN sees integer input."""
    from brevitas.nn import QuantIdentity
    from brevitas.quant import Int8ActPerTensorFixedPoint
    from brevitas_examples.imagenet_classification.models.mobilenetv1 import MobileNet

    channels, width, pool, classes = MOBILENETS[name]
    channels = [[int(c * width) for c in stage] for stage in channels]
    net = MobileNet(
        channels=channels,
        first_stage_stride=False,
        round_average_pool=False,  # FINN converts only a floor Trunc to QuantAvgPool2d
        act_bit_width=4,
        weight_bit_width=4,
        last_layer_bit_width=4,
        avg_pool_kernel_size=pool,
        num_classes=classes,
    )
    quant_input = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
    return torch.nn.Sequential(quant_input, net)


def calibrate(model: torch.nn.Module, shape: tuple[int, ...], batches: int = 4) -> None:
    """Batch-norm statistics from random images: with its initial statistics (mean 0,
    variance 1) the random-weight network's activations die out layer by layer and
    every input gives the same output."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    from pytest_brainsmith.models import torch_compatible

    model.train()
    with torch.no_grad(), torch_compatible():  # brevitas 0.13 under torch 2.13
        for _ in range(batches):
            model(torch.rand(16, *shape[1:]))


def make_model(name: str, out_dir: Path) -> Path:
    """Export the named topology (fixed seed, random weights) through
    ``pytest_brainsmith.models.export``: torch/brevitas compatibility, one file, cleanup."""
    from pytest_brainsmith.models import export

    config, shape, file_name = MODELS[name]
    torch.manual_seed(0)
    if name in MOBILENETS:
        model = _mobilenet(name)
        calibrate(model, shape)
    else:
        from brevitas_examples.bnn_pynq.models import model_with_cfg

        model, _ = model_with_cfg(config, pretrained=False)
    return export(model, shape, out_dir / file_name, cleanup=False)


def ensure_model(name: str, out_dir: Path) -> Path:
    """The model's file in ``out_dir``, generated if it is not there yet."""
    target = out_dir / MODELS[name][2]
    return target if target.exists() else make_model(name, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tfc")
    parser.add_argument(
        "out_dir", nargs="?", type=Path, default=Path(__file__).parent.parent / "models"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    target = make_model(args.model, args.out_dir)
    seconds = time.perf_counter() - started
    print(f"wrote {target} ({target.stat().st_size} bytes) in {seconds:.1f} s")


if __name__ == "__main__":
    main()
