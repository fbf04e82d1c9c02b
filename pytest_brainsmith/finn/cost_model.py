"""FINN's own cost model of a folding, in process: for every node of a dataflow model
(after ``specialize_layers``), every setting FINN accepts for it and what FINN's HW op
estimates for it, read by calling the op's own methods (``get_exp_cycles``,
``lut_estimation``, ``bram_estimation``, ``uram_estimation``, ``dsp_estimation``) with
the attributes set. No build: thousands of settings a second.

The settings of a node: its parallelism (PE, SIMD, as ``finn/folding.py`` reads FINN's
rules), the memory of its weights or window buffer (``ram_style``: LUTRAM, block RAM,
UltraRAM where the part has it), ``resType`` (LUT or DSP multipliers, HLS MVAU/VVAU),
``parallel_window`` of an RTL sliding window. FINN's rules between nodes are kept: a
depthwise sliding window takes the PE of the VVAU or pool it feeds (one unit of choice,
as ``SetFolding`` ties them), and a VVAU folds its kernel (SIMD > 1) only once PE is
fully unfolded, its window then in ``parallel_window`` mode; an RTL window's
``parallel_window`` needs SIMD = channels; an HLS MVAU needs SIMD >= MW / 1024 and, with
its weights streamed internally, PE x SIMD x weight bits <= ``MAX_ALLOWED_AP_INT_W``.
UltraRAM weights are made runtime-writeable, as FINN's weight streamer requires.

The estimates are taken on the model as FINN's ``minimize_bit_width`` leaves it (the
step after the folding), so they are the figures FINN's estimate reports will show.
FINN's estimates have known gaps that an exact solver would exploit (it would store
every weight in LUTRAM for free); each option therefore carries FINN's figure and a
corrected one, charging what the hardware costs where FINN's estimate is missing it:

- ``MVAU_rtl``: weights in distributed RAM, as the HLS MVAU charges them
  (PE x SIMD x W x ceil(depth / 64) LUT; FINN's RTL MVAU estimates 0 LUT);
- ``VVAU_hls``: weights FINN leaves to Vivado (``ram_style: auto``, <= 128 deep, which
  FINN counts neither as BRAM nor as LUT), charged as its distributed weights;
- ``Thresholding_rtl``: its comparators, as the HLS thresholding charges them (input
  bits x PE; FINN counts only the RTL thresholding's LUTRAM);
- ``FMPadding_rtl``: 128 LUT of control (as FINN's ``Pad1d``) and one LUT per output
  bit for the padding multiplexer (FINN estimates 0).

The table is plain JSON (``core/search/solver.py`` solves it without FINN).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from ..core.metrics import RESOURCES

#: weight/buffer memories, in order of preference where estimates tie
MEMORY_STYLES = ("auto", "distributed", "block", "ultra")
#: HW ops whose weight memory and multipliers the solver chooses
_MVAU = ("MVAU_hls", "MVAU_rtl")
_VVAU = ("VVAU_hls", "VVAU_rtl")
_SWG = "ConvolutionInputGenerator_rtl"
#: what a table row is: a unit's option
OPTION_KEYS = ("attrs", "cycles", "finn", "cost")


def cost_table(
    model_path: Path,
    fpga_part: str,
    attributes: dict[str, list[Any]] | None = None,
    *,
    ultra: bool = True,
    minimize_bit_width: bool = True,
    backends: bool = False,
) -> dict[str, Any]:
    """Every unit of choice of the model (a node, or nodes FINN ties) with its options:
    ``{"units": [{"nodes", "op_types", "options": [{"attrs", "cycles", "finn", "cost"}]}],
    "corrections": {...}}``. ``attributes``: node attributes the blueprint restricts
    (``ram_style: [auto, block]``: only these; one value: fixed). ``ultra``: the part
    has UltraRAM (else no memory is offered in it). ``backends``: an MVAU may also take
    the other backend (HLS or RTL, where FINN's rules allow it), its options marked
    ``backend``: a folding cannot apply them (the backend is chosen at
    ``specialize_layers``), so this is for what-if figures of the model only."""
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node
    from qonnx.core.modelwrapper import ModelWrapper

    base = ModelWrapper(str(model_path)).transform(GiveUniqueNodeNamesRecursive())
    model = _minimized(base, minimize_bit_width)
    restrict = {k: list(v) for k, v in (attributes or {}).items()}
    evaluator = _Evaluator(model, fpga_part)
    tied = _tied_windows(model)
    units = []
    for node in model.graph.node:
        if not (is_hls_node(node) or is_rtl_node(node)) or node.name in tied.values():
            continue
        window = tied.get(node.name)
        members = [window, node.name] if window else [node.name]
        other = evaluator.other_backend(node) if backends else None
        settings = _unit_settings(model, members, restrict, ultra, other)
        options = _dedupe([evaluator.option(members, chosen) for chosen in settings])
        units.append(
            {
                "nodes": members,
                "op_types": [evaluator.op_type(name) for name in members],
                "options": options,
            }
        )
    return {
        "resources": list(RESOURCES),
        "units": units,
        "corrections": sorted(evaluator.corrected),
        "fpga_part": fpga_part,
    }


def _minimized(model: Any, minimize: bool) -> Any:
    """A copy of the model as FINN's ``minimize_bit_width`` step leaves it (the widths
    the estimates see)."""
    copy = model.transform(_Identity())
    try:
        from types import SimpleNamespace

        from finn.builder.build_dataflow_steps import _minimize_bit_width

        return _minimize_bit_width(copy, SimpleNamespace(minimize_bit_width=minimize))
    except Exception:  # noqa: BLE001 - estimates on the unminimized model: a mismatch, reported
        return copy


class _Identity:
    """A transformation that copies (``ModelWrapper.transform`` deep-copies first)."""

    def apply(self, model: Any) -> tuple[Any, bool]:
        return model, False


def _tied_windows(model: Any) -> dict[str, str]:
    """consumer -> its depthwise sliding window: the window takes the consumer's PE as
    its SIMD (``SetFolding``), so the two are one unit of choice."""
    from qonnx.custom_op.registry import getCustomOp

    tied = {}
    for node in model.graph.node:
        if node.op_type not in (*_VVAU, "Pool_hls"):
            continue
        producer = model.find_producer(node.input[0])
        if (
            producer is not None
            and producer.op_type.startswith("ConvolutionInputGenerator")
            and getCustomOp(producer).get_nodeattr("depthwise")
        ):
            tied[node.name] = producer.name
    return tied


def _divisors(number: int) -> list[int]:
    return [x for x in range(1, number + 1) if number % x == 0]


def _restricted(
    inst: Any, attribute: str, offered: list[Any], restrict: dict[str, list[Any]]
) -> list[Any]:
    """The values offered for an attribute, less what the blueprint restricts; the
    blueprint's values where it names ones the model does not offer by default."""
    if attribute not in restrict or attribute not in inst.get_nodeattr_types():
        return offered
    allowed = _allowed(inst, attribute)
    return [v for v in restrict[attribute] if allowed is None or v in allowed]


def _allowed(inst: Any, attribute: str) -> set[Any] | None:
    spec = inst.get_nodeattr_types()[attribute]
    return set(spec[3]) if len(spec) > 3 and spec[3] is not None else None


def _memory_styles(inst: Any, ultra: bool) -> list[str]:
    allowed = _allowed(inst, "ram_style") or set()
    current = inst.get_nodeattr("ram_style")
    styles = [current] + [s for s in MEMORY_STYLES if s != current]
    return [s for s in styles if s in allowed and (ultra or s != "ultra")]


def _unit_settings(
    model: Any,
    members: list[str],
    restrict: dict[str, list[Any]],
    ultra: bool,
    other: Any = None,
) -> list[dict[str, dict[str, Any]]]:
    """Every setting of a unit FINN accepts: node -> attributes (``other``: the op as the
    other backend, whose settings are marked ``backend``)."""
    from finn.util.fpgadataflow import is_hls_node
    from qonnx.custom_op.registry import getCustomOp

    nodes = {n.name: n for n in model.graph.node}
    if len(members) == 2:  # a depthwise window and the VVAU or pool it feeds
        window, consumer = nodes[members[0]], nodes[members[1]]
        w_inst, c_inst = getCustomOp(window), getCustomOp(consumer)
        channels = int(c_inst.get_nodeattr("Channels"))
        is_vvau = consumer.op_type in _VVAU
        kernel = math.prod(c_inst.get_nodeattr("Kernel")) if is_vvau else 1
        c_choices: dict[str, list[Any]] = {}
        if is_vvau:
            c_choices["ram_style"] = _restricted(
                c_inst, "ram_style", _memory_styles(c_inst, ultra), restrict
            )
            if is_hls_node(consumer):
                c_choices["resType"] = _restricted(c_inst, "resType", ["lut", "dsp"], restrict)
        w_styles = _restricted(w_inst, "ram_style", _memory_styles(w_inst, ultra), restrict)
        result = []
        for pe in _divisors(channels):
            # FINN's window generator needs PE fully unfolded before the kernel folds
            simds = _divisors(kernel) if (is_vvau and pe == channels) else [1]
            for simd in simds:
                for style in w_styles:
                    for combo in itertools.product(*c_choices.values()):
                        c_attrs: dict[str, Any] = {"PE": pe}
                        if is_vvau:
                            c_attrs["SIMD"] = simd
                        c_attrs.update(zip(c_choices, combo, strict=True))
                        if c_attrs.get("ram_style") == "ultra":
                            c_attrs["runtime_writeable_weights"] = 1
                        w_attrs = {"SIMD": pe, "ram_style": style}
                        if window.op_type == _SWG:
                            w_attrs["parallel_window"] = int(simd > 1)
                        result.append({window.name: w_attrs, consumer.name: c_attrs})
        return result
    node = nodes[members[0]]
    inst = getCustomOp(node)
    op = node.op_type
    choices: dict[str, list[Any]] = {}
    check = None
    if op in _MVAU:
        choices, check = _mvau_choices(inst, is_hls_node(node), ultra, restrict)
    elif op == _SWG or op.startswith("ConvolutionInputGenerator"):
        channels = int(inst.get_nodeattr("IFMChannels"))
        choices["SIMD"] = _divisors(channels)
        choices["ram_style"] = _restricted(inst, "ram_style", _memory_styles(inst, ultra), restrict)
        if op == _SWG:
            choices["parallel_window"] = [0, 1]

            def check(attrs: dict[str, Any]) -> bool:  # parallel_window: SIMD = channels
                return not attrs["parallel_window"] or attrs["SIMD"] == channels

    else:
        choices = _parallelism(model, node, inst)
        for name in ("ram_style", "resType", "mem_mode", "ram_style_thresholds"):
            if name in restrict and name in inst.get_nodeattr_types():
                choices[name] = _restricted(inst, name, [], restrict)
        if op == "Thresholding_hls" and "ram_style" not in choices:
            choices["ram_style"] = _memory_styles(inst, ultra)
        if op == "Thresholding_rtl" and "PE" in choices:
            return _threshold_settings(node.name, inst, choices["PE"], ultra)
    result = _combinations(node.name, choices, check, op in _MVAU)
    if op in _MVAU and other is not None:  # the other backend's settings, marked
        backend = "hls" if op == "MVAU_rtl" else "rtl"
        alt_choices, alt_check = _mvau_choices(other, backend == "hls", ultra, restrict)
        for setting in _combinations(node.name, alt_choices, alt_check, True):
            setting[node.name]["backend"] = backend
            result.append(setting)
    return result or [{node.name: {}}]


def _combinations(
    name: str, choices: dict[str, list[Any]], check: Any, weights: bool
) -> list[dict[str, dict[str, Any]]]:
    result = []
    for combo in itertools.product(*choices.values()):
        attrs = dict(zip(choices, combo, strict=True))
        if check is not None and not check(attrs):
            continue
        if weights and attrs.get("ram_style") == "ultra":
            attrs["runtime_writeable_weights"] = 1
        result.append({name: attrs})
    return result


def _mvau_choices(
    inst: Any, hls: bool, ultra: bool, restrict: dict[str, list[Any]]
) -> tuple[dict[str, list[Any]], Any]:
    """An MVAU's settings (``hls``: FINN's HLS MVAU, else the RTL one) and the check a
    combination must pass."""
    from finn.util.basic import MAX_ALLOWED_AP_INT_W

    choices: dict[str, list[Any]] = {}
    width = int(inst.get_nodeattr("MW"))
    simd = _divisors(width)
    if hls:  # FINN's HLS MVAU: "SIMD >= MW / 1024" (at hw_codegen)
        simd = [v for v in simd if v >= width / 1024]
    choices["SIMD"] = simd
    choices["PE"] = _divisors(int(inst.get_nodeattr("MH")))
    if inst.get_nodeattr("mem_mode") in ("internal_decoupled", "internal_embedded"):
        choices["ram_style"] = _memory_styles(inst, ultra)
    if hls:
        choices["resType"] = ["lut", "dsp"]
    if "mem_mode" in restrict:
        choices["mem_mode"] = restrict["mem_mode"]
    for name in ("ram_style", "resType", "ram_style_thresholds"):
        if name in choices or name in restrict:
            choices[name] = _restricted(inst, name, choices.get(name, []), restrict)
    if not hls:
        return choices, None
    bits = inst.get_input_datatype(1).bitwidth()

    def check(attrs: dict[str, Any]) -> bool:
        mode = attrs.get("mem_mode", inst.get_nodeattr("mem_mode"))
        wide = attrs["PE"] * attrs["SIMD"] * bits > MAX_ALLOWED_AP_INT_W
        return not (mode == "internal_decoupled" and wide)

    return choices, check


#: a depth trigger no memory reaches (FINN's RTL thresholding: 0 would mean "unset")
NEVER = 2**31 - 1


def _threshold_settings(
    name: str, inst: Any, pes: list[int], ultra: bool
) -> list[dict[str, dict[str, Any]]]:
    """An RTL thresholding's PE and where its threshold memories go: FINN's RTL
    thresholding puts each stage's memory (depth channels/PE x 2^stage) in UltraRAM from
    ``depth_trigger_uram`` deep, else in block RAM from ``depth_trigger_bram`` deep, else
    LUTRAM. Both triggers are set (``NEVER`` for none): FINN's estimate reads an unset
    URAM trigger as 0, every memory in UltraRAM, where the hardware reads "none"."""
    channels = int(inst.get_nodeattr("NumChannels"))
    stages = inst.get_output_datatype().bitwidth()
    result = [{name: {"PE": pe}} for pe in pes]  # FINN's own choice (LUTRAM mostly)
    for pe in pes:
        depths = sorted({channels // pe * 2**x for x in range(stages)})
        pairs = [(bram, NEVER) for bram in depths]
        if ultra:
            pairs += [(bram, uram) for uram in depths for bram in [*depths, NEVER] if bram > uram]
            pairs += [(bram, uram) for uram in depths for bram in depths if bram < uram]
        for bram, uram in pairs:
            result.append(
                {name: {"PE": pe, "depth_trigger_bram": bram, "depth_trigger_uram": uram}}
            )
    return result


def _parallelism(model: Any, node: Any, inst: Any) -> dict[str, list[Any]]:
    """The PE or SIMD values of the other foldable ops, as ``finn/folding.py`` reads them
    (one value: nothing to choose)."""
    from finn.transformation.fpgadataflow.set_folding import ELEMENTWISE_BINARY_OPS

    from . import folding

    found: dict[str, list[Any]] = {}
    op = node.op_type

    if op in (*folding._PE_OPS, *ELEMENTWISE_BINARY_OPS):
        try:
            found["PE"] = _divisors(int(inst.get_nodeattr("NumChannels")))
        except AttributeError:
            found["PE"] = list(folding.common_divisors(folding._last_axes(inst, len(node.input))))
    elif op == "LabelSelect_hls":
        found["PE"] = _divisors(int(inst.get_nodeattr("Labels")))
    elif op == "Pool_hls":  # without a window generator before it (pointwise)
        found["PE"] = _divisors(int(inst.get_nodeattr("Channels")))
    elif op in _VVAU:
        found["PE"] = _divisors(int(inst.get_nodeattr("Channels")))
    elif op in ("StreamingConcat_hls", "StreamingSplit_hls"):
        streams = [int(c) for c in inst.get_nodeattr("ChannelsPerStream")]
        found["SIMD"] = list(folding.common_divisors(streams))
    elif op == "LayerNorm_rtl":
        dim = int(inst.get_normal_input_shape()[-1])
        values = [d for d in _divisors(dim) if dim // d > 12]
        found["SIMD"] = values + [d for d in _divisors(dim) if dim // d <= 12][:1]
    elif op in folding._SIMD_OPS:
        try:
            channels = int(inst.get_nodeattr("NumChannels"))
        except AttributeError:
            channels = int(inst.get_normal_input_shape()[-1])
        found["SIMD"] = _divisors(channels)
    return found


class _Evaluator:
    """Sets a unit's attributes on the model's nodes and reads FINN's estimates."""

    def __init__(self, model: Any, fpga_part: str) -> None:
        from qonnx.custom_op.registry import getCustomOp

        self.part = fpga_part
        self.model = model
        self.ops = {n.name: _fast(getCustomOp(n)) for n in model.graph.node}
        self.types = {n.name: n.op_type for n in model.graph.node}
        self.corrected: set[str] = set()
        self._writeable: dict[str, dict[str, Any]] = {}
        self.others: dict[str, Any] = {}  # node -> the op as its other backend

    def _writeable_widths(self, name: str, inst: Any) -> dict[str, Any]:
        """The accumulator and output datatypes FINN's ``minimize_bit_width`` gives the
        node once its weights are runtime-writeable (worst case over the weight type)."""
        if name not in self._writeable:
            inst.minimize_accumulator_width(self.model)
            self._writeable[name] = {
                a: inst.get_nodeattr(a) for a in ("accDataType", "outputDataType")
            }
        return self._writeable[name]

    def other_backend(self, node: Any) -> Any:
        """The MVAU as FINN's other backend would make it (None: not an MVAU, or FINN's
        RTL MVAU cannot take it), with its attributes."""
        import copy

        from finn.transformation.fpgadataflow.specialize_layers import _mvu_rtl_possible
        from qonnx.custom_op.registry import getCustomOp

        if node.op_type not in _MVAU:
            return None
        twin = copy.deepcopy(node)
        if node.op_type == "MVAU_rtl":
            twin.op_type, twin.domain = "MVAU_hls", "finn.custom_op.fpgadataflow.hls"
        else:
            twin.op_type, twin.domain = "MVAU_rtl", "finn.custom_op.fpgadataflow.rtl"
            if not _mvu_rtl_possible(node, self.part, self.model):
                return None
        inst = _fast(getCustomOp(twin))
        self.others[node.name] = inst
        return inst

    def op_type(self, name: str) -> str:
        return self.types[name]

    def option(self, members: list[str], chosen: dict[str, dict[str, Any]]) -> dict[str, Any]:
        cycles, finn, cost = 0, [0.0] * 4, [0.0] * 4
        for name in members:
            attrs = dict(chosen.get(name, {}))
            inst, op = self.ops[name], self.types[name]
            if attrs.pop("backend", None):  # the other backend's op (what-if figures)
                inst = self.others[name]
                op = inst.onnx_node.op_type
            writeable = attrs.get("runtime_writeable_weights") and op in (*_MVAU, *_VVAU)
            widths = ("accDataType", "outputDataType") if writeable else ()
            saved = {a: inst.get_nodeattr(a) for a in (*attrs, *widths)}
            try:
                for attribute, value in attrs.items():
                    inst.set_nodeattr(attribute, value)
                if writeable:  # FINN sizes writeable weights' accumulator for any weights
                    for attribute, value in self._writeable_widths(name, inst).items():
                        inst.set_nodeattr(attribute, value)
                cycles = max(cycles, int(inst.get_exp_cycles()))
                figures = [
                    float(inst.lut_estimation(self.part)),
                    float(inst.bram_estimation(self.part)),
                    float(inst.uram_estimation(self.part)),
                    float(inst.dsp_estimation(self.part)),
                ]
                extra = self._correction(op, inst)
            finally:
                for attribute, value in saved.items():
                    inst.set_nodeattr(attribute, value)
            for i, value in enumerate(figures):
                finn[i] += value
                cost[i] += value
            cost[0] += extra
        return {"attrs": chosen, "cycles": cycles, "finn": finn, "cost": cost}

    def _correction(self, op: str, inst: Any) -> float:
        """LUT FINN's estimate misses for this op at these attributes (module docstring)."""
        if op == "MVAU_rtl":
            style, mode = inst.get_nodeattr("ram_style"), inst.get_nodeattr("mem_mode")
            wmem = inst.calc_wmem()
            if (mode == "internal_decoupled" and style == "distributed") or (
                mode == "internal_embedded" and wmem <= 128
            ):
                self.corrected.add(
                    "MVAU_rtl: weights in distributed RAM, PE x SIMD x W x ceil(depth/64) LUT "
                    "(as MVAU_hls charges them; FINN's MVAU_rtl estimates 0 LUT)"
                )
                pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
                return float(
                    pe * simd * inst.get_input_datatype(1).bitwidth() * math.ceil(wmem / 64)
                )
        elif op == "VVAU_hls":
            wmem = inst.calc_wmem()
            if inst.get_nodeattr("ram_style") == "auto" and wmem <= 128:
                self.corrected.add(
                    "VVAU_hls: weights left to Vivado (ram_style auto, <= 128 deep) charged as "
                    "distributed weights, PE x SIMD x W x ceil(depth/64) LUT (FINN counts them "
                    "neither as BRAM nor as LUT)"
                )
                pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
                return float(
                    pe * simd * inst.get_input_datatype(1).bitwidth() * math.ceil(wmem / 64)
                )
        elif op == "Thresholding_rtl":
            self.corrected.add(
                "Thresholding_rtl: comparators, input bits x PE LUT (as Thresholding_hls "
                "charges them; FINN counts only the RTL thresholding's LUTRAM)"
            )
            return float(inst.get_input_datatype(0).bitwidth() * inst.get_nodeattr("PE"))
        elif op == "FMPadding_rtl":
            self.corrected.add(
                "FMPadding_rtl: 128 LUT of control (as Pad1d) + SIMD x bits for the padding "
                "multiplexer (FINN estimates 0)"
            )
            bits = inst.get_input_datatype(0).bitwidth()
            return float(128 + inst.get_nodeattr("SIMD") * bits)
        return 0.0


def _fast(inst: Any) -> Any:
    """The op with its attributes read once and kept in a dict (qonnx reads each from the
    node's protobuf and rebuilds the op's attribute table on every call: 90 % of the
    time of an estimate). Set values live in the dict only: the model is not changed."""
    values: dict[str, Any] = {}
    read = inst.get_nodeattr

    def get_nodeattr(name: str) -> Any:
        if name not in values:
            values[name] = read(name)
        return values[name]

    def set_nodeattr(name: str, value: Any) -> None:
        values[name] = value

    inst.get_nodeattr = get_nodeattr
    inst.set_nodeattr = set_nodeattr
    return inst


def _dedupe(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Options with the same cycles and figures are one (the first: the node's own
    attribute values come first)."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for option in options:
        key = (option["cycles"], *option["finn"], *option["cost"])
        if key not in seen:
            seen.add(key)
            kept.append(option)
    return kept


def model_totals(table: dict[str, Any], choice: list[int]) -> dict[str, Any]:
    """A design's figures (one option index per unit): FINN's and corrected totals."""
    finn, cost, cycles = [0.0] * 4, [0.0] * 4, 0
    for unit, index in zip(table["units"], choice, strict=True):
        option = unit["options"][index]
        cycles = max(cycles, option["cycles"])
        for i in range(4):
            finn[i] += option["finn"][i]
            cost[i] += option["cost"][i]
    return {
        "max_cycles": cycles,
        "finn": dict(zip(RESOURCES, finn, strict=True)),
        "corrected": dict(zip(RESOURCES, cost, strict=True)),
    }
