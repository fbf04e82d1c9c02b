"""The foldings a FINN model accepts, read from the model with FINN's own rules.

For every node FINN's ``SetFolding`` would fold (``finn.transformation.fpgadataflow.
set_folding``), the parallelism attributes it sets and the values FINN accepts for
them: the divisors of the node's channel or feature counts, as ``SetFolding`` walks
them, less what FINN rejects later (an HLS MVAU needs SIMD >= MW / 1024 at code
generation). A depthwise sliding window takes the PE of the node it feeds (as ``SetFolding``
ties them); an HLS MVAU whose weights stream internally is limited to
``MAX_ALLOWED_AP_INT_W`` bits of weights per cycle (a constraint on PE x SIMD).
A folding is written as FINN's folding JSON, what ``folding_config_file`` reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Node attributes a folding search may set besides PE/SIMD (``attributes:``).
EXTRA_ATTRIBUTES = ("ram_style", "ram_style_thresholds", "resType", "mem_mode", "mac_resource")

_MVAU = ("MVAU_hls", "MVAU_rtl")
#: SetFolding's PE ops (up to NumChannels), besides its elementwise binary ops
_PE_OPS = (
    "DuplicateStreams_hls",
    "GlobalAccPool_hls",
    "PWPolyF_rtl",
    "Thresholding_hls",
    "Thresholding_rtl",
    "ReplicateStream_hls",
    "Squeeze_hls",
    "Unsqueeze_hls",
    "Reshape_rtl",
)
_SIMD_OPS = (
    "FMPadding_rtl",
    "FMPadding_Pixel_hls",
    "ConvolutionInputGenerator_rtl",
    "StreamingSplit_hls",
    "StreamingConcat_hls",
    "LayerNorm_rtl",
    "Shuffle",
)
_DEPTHWISE = ("VVAU_hls", "VVAU_rtl", "Pool_hls")


@dataclass(frozen=True)
class FoldingParam:
    """One attribute of one node and the values FINN accepts for it."""

    node: str
    op_type: str
    attribute: str
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return f"{self.node}.{self.attribute}"


@dataclass(frozen=True)
class WidthLimit:
    """An HLS MVAU with internal weight streaming: PE x SIMD x weight bits <= limit."""

    node: str
    weight_bits: int
    limit: int

    def excess(self, folding: dict[str, dict[str, Any]]) -> float:
        attrs = folding.get(self.node, {})
        width = int(attrs.get("PE", 1)) * int(attrs.get("SIMD", 1)) * self.weight_bits
        return float(width - self.limit)

    def __str__(self) -> str:
        return f"{self.node}: PE x SIMD x {self.weight_bits} bits <= {self.limit}"


@dataclass
class FoldingSpace:
    """What a search may choose, what it must tie, and the limits a folding must keep."""

    params: list[FoldingParam] = field(default_factory=list)
    #: fixed attributes per node (a single listed value, parallel_window of a window)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (node, attribute) that takes the value of another (node, attribute)
    tied: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    limits: list[WidthLimit] = field(default_factory=list)

    def folding(self, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """FINN's folding JSON (without ``Defaults``) for chosen ``values`` by param name,
        repaired as ``SetFolding`` does where it passes a limit: the PE of an HLS MVAU
        too wide for its weight stream comes down (then its SIMD), so every folding
        built is one FINN accepts."""
        result: dict[str, dict[str, Any]] = {}
        for param in self.params:
            result.setdefault(param.node, {})[param.attribute] = values[param.name]
        for node, attrs in self.fixed.items():
            result.setdefault(node, {}).update(attrs)
        for limit in self.limits:
            attrs = result.get(limit.node)
            if attrs is None:
                continue
            for attribute in ("PE", "SIMD"):
                options = self.values(limit.node, attribute)
                while limit.excess(result) > 0 and options and attrs.get(attribute, 1) > options[0]:
                    attrs[attribute] = max(v for v in options if v < attrs[attribute])
        for (node, attribute), (source, source_attr) in self.tied.items():
            result.setdefault(node, {})[attribute] = result[source][source_attr]
        return {node: dict(sorted(attrs.items())) for node, attrs in sorted(result.items())}

    def values(self, node: str, attribute: str) -> tuple[Any, ...]:
        """The values a node's attribute may take (empty if the search does not set it)."""
        return next(
            (p.values for p in self.params if p.node == node and p.attribute == attribute), ()
        )

    def excess(self, folding: dict[str, dict[str, Any]]) -> list[float]:
        """Per limit, by how much the folding exceeds it (<= 0: within)."""
        return [limit.excess(folding) for limit in self.limits]

    def describe(self) -> list[dict[str, Any]]:
        """A JSON form (what a study is keyed by)."""
        return [
            {"node": p.node, "op_type": p.op_type, "attribute": p.attribute, "values": p.values}
            for p in self.params
        ] + [{"fixed": self.fixed}, {"tied": sorted(map(str, self.tied.items()))}]

    def to_json(self) -> dict[str, Any]:
        """Everything the space holds, as JSON (``from_json`` reads it back): a search
        keeps it so that a later run needs no FINN to know it."""
        return {
            "params": [[p.node, p.op_type, p.attribute, list(p.values)] for p in self.params],
            "fixed": self.fixed,
            "tied": [[*k, *v] for k, v in self.tied.items()],
            "limits": [[x.node, x.weight_bits, x.limit] for x in self.limits],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldingSpace:
        return cls(
            params=[FoldingParam(n, o, a, tuple(v)) for n, o, a, v in data["params"]],
            fixed={node: dict(attrs) for node, attrs in data["fixed"].items()},
            tied={(n, a): (s, sa) for n, a, s, sa in data["tied"]},
            limits=[WidthLimit(n, int(b), int(x)) for n, b, x in data["limits"]],
        )


def divisors(number: int) -> tuple[int, ...]:
    return tuple(x for x in range(1, number + 1) if number % x == 0)


def common_divisors(numbers: list[int]) -> tuple[int, ...]:
    found = set(divisors(numbers[0]))
    for number in numbers[1:]:
        found &= set(divisors(number))
    return tuple(sorted(found))


def _last_axes(inst: Any, inputs: int) -> list[int]:
    """The last axis of the node's output and of each input that is not broadcast (1):
    FINN's reshapes and elementwise ops fold each of them by PE."""
    axes = [int(inst.get_normal_output_shape()[-1])]
    for index in range(inputs):
        try:
            last = int(inst.get_normal_input_shape(index)[-1])
        except Exception:  # noqa: BLE001 - an input the op has no shape for (a parameter)
            continue
        if last != 1:
            axes.append(last)
    return axes


def folding_space(model_path: Path, attributes: dict[str, list[Any]]) -> FoldingSpace:
    """The foldings FINN accepts for the model (a dataflow model after
    ``specialize_layers``), with node names as ``apply_folding_config`` sees them.
    ``attributes``: extra node attributes to choose (several values) or set (one)."""
    from finn.transformation.fpgadataflow.set_folding import ELEMENTWISE_BINARY_OPS
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from finn.util.basic import MAX_ALLOWED_AP_INT_W
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(model_path)).transform(GiveUniqueNodeNamesRecursive())
    space = FoldingSpace()

    def choose(node: Any, attribute: str, values: tuple[Any, ...]) -> None:
        if len(values) > 1:
            space.params.append(FoldingParam(node.name, node.op_type, attribute, values))
        else:
            space.fixed.setdefault(node.name, {})[attribute] = values[0]

    pe_ops = (*_PE_OPS, *ELEMENTWISE_BINARY_OPS)
    for node in model.graph.node:
        if not (is_hls_node(node) or is_rtl_node(node)):
            continue
        op, inst = node.op_type, getCustomOp(node)
        if op in _MVAU:
            width = int(inst.get_nodeattr("MW"))
            simd = divisors(width)
            if is_hls_node(node):  # FINN's HLS MVAU: "SIMD >= MW / 1024" (at hw_codegen)
                simd = tuple(v for v in simd if v >= width / 1024)
            choose(node, "SIMD", simd)
            choose(node, "PE", divisors(int(inst.get_nodeattr("MH"))))
            if is_hls_node(node) and inst.get_nodeattr("mem_mode") == "internal_decoupled":
                bits = inst.get_input_datatype(1).bitwidth()
                space.limits.append(WidthLimit(node.name, int(bits), int(MAX_ALLOWED_AP_INT_W)))
        elif op in pe_ops:
            try:
                choose(node, "PE", divisors(int(inst.get_nodeattr("NumChannels"))))
            except AttributeError:  # PE must divide the last axis of every stream
                choose(node, "PE", common_divisors(_last_axes(inst, len(node.input))))
        elif op == "LabelSelect_hls":
            choose(node, "PE", divisors(int(inst.get_nodeattr("Labels"))))
        elif op in _DEPTHWISE:
            # PE only: FINN's window generator needs PE fully unfolded before SIMD
            choose(node, "PE", divisors(int(inst.get_nodeattr("Channels"))))
            if op.startswith("VVAU"):
                space.fixed.setdefault(node.name, {})["SIMD"] = 1
            producer = model.find_producer(node.input[0])
            if producer is not None and producer.op_type.startswith("ConvolutionInputGenerator"):
                space.tied[(producer.name, "SIMD")] = (node.name, "PE")
                if producer.op_type == "ConvolutionInputGenerator_rtl":
                    space.fixed.setdefault(producer.name, {})["parallel_window"] = 0
        elif op in _SIMD_OPS:
            if op.startswith("ConvolutionInputGenerator"):
                if inst.get_nodeattr("depthwise"):
                    continue  # tied to the depthwise node it feeds
                choose(node, "SIMD", divisors(int(inst.get_nodeattr("IFMChannels"))))
                if op == "ConvolutionInputGenerator_rtl":
                    space.fixed.setdefault(node.name, {})["parallel_window"] = 0
            elif op in ("StreamingConcat_hls", "StreamingSplit_hls"):
                streams = [int(c) for c in inst.get_nodeattr("ChannelsPerStream")]
                common = set(divisors(streams[0])).intersection(*map(divisors, streams[1:]))
                choose(node, "SIMD", tuple(sorted(common)))
            elif op == "LayerNorm_rtl":
                dim = int(inst.get_normal_input_shape()[-1])
                values = [d for d in divisors(dim) if dim // d > 12]
                values += [d for d in divisors(dim) if dim // d <= 12][:1]
                choose(node, "SIMD", tuple(values))
            else:
                try:
                    channels = int(inst.get_nodeattr("NumChannels"))
                except AttributeError:
                    channels = int(inst.get_normal_input_shape()[-1])
                choose(node, "SIMD", divisors(channels))
        for attribute, values in attributes.items():
            if attribute in inst.get_nodeattr_types():
                choose(node, attribute, tuple(values))
    return space


#: FINN's per-node estimate method of each resource metric
NODE_ESTIMATES = {
    "LUT": "lut_estimation",
    "BRAM_18K": "bram_estimation",
    "URAM": "uram_estimation",
    "DSP": "dsp_estimation",
}
MAX_COMBINATIONS = 5_000  # per node: beyond this no balanced foldings are proposed


def balanced_foldings(
    model_path: Path,
    space: FoldingSpace,
    metric: str,
    count: int,
    fpga_part: str,
    reached: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """Foldings balanced across layers, for ``count`` cycle targets spaced evenly in log
    scale from the fastest to the slowest the space allows and for the targets in
    ``reached`` (e.g. the cycles per frame FINN's own foldings reached): for each target,
    every node takes its folding of least ``metric`` by FINN's own per-node estimate among
    those whose expected cycles meet the target, the least parallel of equal cost (FINN's
    resource estimates are per node and its throughput is the slowest node's, so these
    are the cheapest foldings FINN's estimates know of at each throughput). Values by
    param name; proposals, not results: the search
    builds them like every trial."""
    import itertools

    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth,
    )
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(model_path)).transform(GiveUniqueNodeNamesRecursive())
    try:  # what minimize_bit_width does after the folding: the widths the estimates see
        model = model.transform(MinimizeAccumulatorWidth()).transform(MinimizeWeightBitWidth())
    except Exception:  # noqa: BLE001 - estimates on the unminimized model are close enough
        pass
    nodes = {node.name: node for node in model.graph.node}
    for node, attrs in space.fixed.items():
        for attribute, value in attrs.items():
            getCustomOp(nodes[node]).set_nodeattr(attribute, value)
    groups: dict[str, list[FoldingParam]] = {}
    for param in space.params:
        groups.setdefault(param.node, []).append(param)
    tied_to: dict[str, list[tuple[str, str, str]]] = {}
    for (node, attribute), (source, source_attr) in space.tied.items():
        tied_to.setdefault(source, []).append((node, attribute, source_attr))
    method = NODE_ESTIMATES[metric]
    options: dict[str, list[tuple[int, float, tuple[Any, ...]]]] = {}
    for node, params in groups.items():
        combos = list(itertools.product(*(p.values for p in params)))
        if len(combos) > MAX_COMBINATIONS:
            return []
        inst = getCustomOp(nodes[node])
        found = []
        for combo in combos:
            chosen = dict(zip((p.attribute for p in params), combo, strict=True))
            for attribute, value in chosen.items():
                inst.set_nodeattr(attribute, value)
            cycles, cost = int(inst.get_exp_cycles()), float(getattr(inst, method)(fpga_part))
            for tied, attribute, source_attr in tied_to.get(node, []):
                other = getCustomOp(nodes[tied])
                other.set_nodeattr(attribute, chosen[source_attr])
                cycles = max(cycles, int(other.get_exp_cycles()))
                cost += float(getattr(other, method)(fpga_part))
            found.append((cycles, cost, combo))
        options[node] = found
    if not options:
        return []
    fastest = max(min(c for c, _, _ in found) for found in options.values())
    slowest = max(max(c for c, _, _ in found) for found in options.values())
    grid = {round(fastest * (slowest / fastest) ** (i / max(1, count - 1))) for i in range(count)}
    targets = sorted(grid | {c for c in reached if fastest <= c <= slowest})
    proposals: list[dict[str, Any]] = []
    for target in targets:
        values: dict[str, Any] = {}
        for node, found in options.items():
            meeting = [o for o in found if o[0] <= target] or [min(found)]
            # equal cost: the least parallel folding that meets the target, as FINN's
            # SetFolding stops at the first that does. (An RTL MVAU estimates 0 LUT at
            # every folding; preferring the fastest there unrolled every MVAU of
            # MobileNet-v1 into one-word weight memories: 174,296 BRAM_18K.)
            _, _, combo = min(meeting, key=lambda o: (o[1], -o[0]))
            for param, value in zip(groups[node], combo, strict=True):
                values[param.name] = value
        if values not in proposals:
            proposals.append(values)
    return proposals


def read_folding(model_path: Path, space: FoldingSpace) -> dict[str, Any] | None:
    """The values a built model has for the space's params (by param name), e.g. the
    folding FINN's ``SetFolding`` chose; None if one is not a value the space offers."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(model_path))
    nodes = {node.name: node for node in model.graph.node}

    def attribute(node: str, name: str) -> Any:
        value = getCustomOp(nodes[node]).get_nodeattr(name)
        return value.decode() if isinstance(value, bytes) else value

    values: dict[str, Any] = {}
    for param in space.params:
        node = nodes.get(param.node)
        if node is None or node.op_type != param.op_type:
            return None
        value = attribute(param.node, param.attribute)
        if value not in param.values:
            return None
        values[param.name] = value
    # what the space fixes or ties must be what the model has (else the folding differs)
    folding = space.folding(values)
    try:
        built = {
            node: {name: attribute(node, name) for name in attrs} for node, attrs in folding.items()
        }
    except (KeyError, AttributeError):
        return None
    return values if built == folding else None


def write_folding(path: Path, folding: dict[str, dict[str, Any]]) -> Path:
    """FINN's folding JSON for ``folding_config_file``, written atomically."""
    text = json.dumps({"Defaults": {}, **folding}, indent=2, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # another process may write it too
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            handle.write(text)
        os.replace(handle.name, path)
    return path
