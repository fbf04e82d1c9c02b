"""``design_space.kernels``: kernels and the backends to explore for each."""

from __future__ import annotations

from typing import Any

from ..errors import RegistryError
from ..registry import Kernel, Registry
from ..toolchain import current as toolchain
from .report import Reporter, typename
from .space import KernelChoice, ModelChoice, StepSlot


def _backend_name(value: Any, kernel: Kernel) -> str | None:
    """``hls``, ``MVAU_hls`` and ``finn:MVAU_hls`` all name the hls backend of MVAU."""
    if not isinstance(value, str):
        return None
    return value.split(":")[-1].removeprefix(kernel.name + "_")


def resolve_kernels(raw: Any, registry: Registry, report: Reporter) -> list[KernelChoice]:
    key = ("design_space", "kernels")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise report.error(key, f"expected a list of kernels, got {typename(raw)}")
    choices: list[KernelChoice] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        ekey = (*key, i)
        if isinstance(entry, str):
            name, backends_raw = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            name, backends_raw = next(iter(entry.items()))
        else:
            raise report.error(
                ekey, f"expected a kernel name or {{Kernel: backend(s)}}, got {typename(entry)}"
            )
        try:
            kernel = registry.kernel(str(name))
        except RegistryError as exc:
            raise report.error(ekey, str(exc)) from None
        if kernel.qualified in seen:
            raise report.error(ekey, f"kernel {kernel.name!r} is listed twice")
        seen.add(kernel.qualified)
        if backends_raw is None:
            choices.append(KernelChoice(kernel, ()))
            continue
        listed = backends_raw if isinstance(backends_raw, list) else [backends_raw]
        backends: list[str] = []
        for j, value in enumerate(listed):
            backend = _backend_name(value, kernel)
            bkey = (*ekey, name, j) if isinstance(backends_raw, list) else (*ekey, name)
            if backend not in kernel.backends:
                raise report.error(
                    bkey,
                    f"{kernel.name} has no backend {str(value)[:80]!r}",
                    f"expected one of: {', '.join(kernel.backends)}",
                )
            if backend in backends:
                raise report.error(bkey, f"backend {backend!r} listed twice")
            backends.append(backend)
        if not backends:
            raise report.error(ekey, "expected at least one backend")
        choices.append(KernelChoice(kernel, tuple(backends)))
    return choices


def check_backend_reader(
    kernels: list[KernelChoice], slots: list[StepSlot], report: Reporter
) -> None:
    """A backend choice needs specialize_layers (or a step that may read its config)."""
    if any(c.backends for c in kernels):
        if not any(slot.may_read("specialize_layers_config_file") for slot in slots):
            raise report.error(
                ("design_space", "kernels"),
                "backends are chosen by specialize_layers, which is not in the pipeline",
            )


def check_kernels_in_models(
    kernels: list[KernelChoice], models: list[ModelChoice], report: Reporter
) -> None:
    """A backend choice no model can use gets a warning: its designs are one design
    (built once and reported as equivalent, but listed as several)."""
    moot = getattr(toolchain(), "moot_backend_choice", None)
    if moot is None:
        return
    for n, choice in enumerate(kernels):
        if len(choice.backends) < 2:
            continue
        for model in models:
            why = moot(model.path, choice.kernel.name, choice.backends)
            if why:
                what = f"{choice.kernel.name}: [{', '.join(choice.backends)}] on {model.path.name}"
                report.warn(
                    ("design_space", "kernels", n),
                    f"{what} changes nothing: {why}",
                    "its designs are one design, built once and reported as equivalent: "
                    "keep one backend",
                )
