"""The plugin registry: steps, kernels and backends a blueprint may name.

FINN's own steps and kernels are pre-registered from static data (collection never
imports FINN). Users add their own from a ``conftest.py`` or an installed package
through the ``pytest_brainsmith_register`` hook. Lookup is a dict lookup by short
(``streamline``) or qualified (``finn:streamline``) name; a short name means the
step of the highest source priority, as in BrainSmith: a project's (``user`` or any
other namespace) over ``brainsmith`` over ``finn``, so a ``conftest.py`` can shadow
one of FINN's steps while ``finn:NAME`` still reaches FINN's.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import RegistryError, did_you_mean

#: External tools a step needs. A design that needs a missing tool is skipped.
VIVADO = "vivado"
VITIS_HLS = "vitis_hls"

FINN_NAMESPACE = "finn"
BRAINSMITH_NAMESPACE = "brainsmith"
USER_NAMESPACE = "user"
#: Which namespace a short name resolves to when several register it (higher wins);
#: every other namespace is a project's and ranks above these.
_SOURCE_PRIORITY = {FINN_NAMESPACE: 0, BRAINSMITH_NAMESPACE: 1}
_PROJECT_PRIORITY = 2


@dataclass(frozen=True)
class Step:
    """One pipeline step: a FINN builtin (``func`` is None) or a registered callable.

    ``reads`` lists the DataflowBuildConfig fields the step can read (None: any);
    it decides where a config sweep branches and which fields key the cache.
    ``code_id`` identifies the step's code for the cache key. ``occurrence`` counts
    the same step listed again in one pipeline (2 for the second time), so each time
    gets its own checkpoint and cache key. ``estimates``: the step writes FINN's
    estimate reports, so the engine's gates look at a design right after it.
    """

    name: str
    namespace: str
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    reads: frozenset[str] | None = None
    needs: frozenset[str] = frozenset()
    code_id: str = ""
    occurrence: int = 1
    estimates: bool = field(default=False, compare=False)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}:{self.name}"

    @property
    def is_finn(self) -> bool:
        return self.func is None

    def may_read(self, config_field: str) -> bool:
        return self.reads is None or config_field in self.reads


@dataclass(frozen=True)
class Kernel:
    """A hardware kernel (FINN HW custom op type) and the backends it has."""

    name: str
    namespace: str
    backends: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}:{self.name}"


def source_id(func: Callable[..., Any]) -> str:
    """Identity of a user callable's code: a hash of its source (so edits rebuild)."""
    try:
        text = inspect.getsource(func)
    except (OSError, TypeError):
        text = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    return "src:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Registry:
    """Named steps, kernels and backends; one per blueprint directory's conftests."""

    def __init__(self) -> None:
        self._steps: dict[str, Step] = {}
        self._kernels: dict[str, Kernel] = {}
        self._backends: set[str] = {"hls", "rtl"}

    # -- registration ------------------------------------------------------------
    def register_step(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        namespace: str = USER_NAMESPACE,
        reads: Iterable[str] | None = None,
        needs: Iterable[str] = (),
        estimates: bool = False,
    ) -> Any:
        """Register ``func(model, cfg) -> model`` as a step; usable as a decorator.

        ``reads``: the DataflowBuildConfig fields the step reads. Leave it None if
        unknown (every config sweep then branches before this step); pass ``()``
        for a step that reads none. ``estimates=True``: the step writes FINN's
        estimate reports (into ``cfg.output_dir/report``), as FINN's
        ``generate_estimate_reports`` does; gates look at a design right after it.
        """

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            step_name = name or fn.__name__.removeprefix("step_")
            self._add_step(
                Step(
                    name=step_name,
                    namespace=namespace,
                    func=fn,
                    reads=None if reads is None else frozenset(reads),
                    needs=frozenset(needs),
                    code_id=source_id(fn),
                    estimates=estimates,
                )
            )
            return fn

        return add if func is None else add(func)

    def register_transform(
        self,
        transform: type,
        *,
        name: str | None = None,
        namespace: str = USER_NAMESPACE,
        reads: Iterable[str] = (),
    ) -> None:
        """Register a qonnx ``Transformation`` class as a step applying it once."""

        def apply(model: Any, cfg: Any) -> Any:
            return model.transform(transform())

        apply.__name__ = name or transform.__name__
        apply.__qualname__ = apply.__name__
        self._add_step(
            Step(
                name=apply.__name__,
                namespace=namespace,
                func=apply,
                reads=frozenset(reads),
                code_id=source_id(transform),
            )
        )

    def register_kernel(
        self, name: str, *, backends: Iterable[str] = ("hls",), namespace: str = USER_NAMESPACE
    ) -> None:
        kernel = Kernel(name, namespace, tuple(backends))
        for backend in kernel.backends:
            self._backends.add(backend)
        self._add(self._kernels, kernel.name, kernel.qualified, kernel, "kernel")

    def register_backend(self, name: str) -> None:
        self._backends.add(name)

    def _add_step(self, step: Step) -> None:
        self._add(self._steps, step.name, step.qualified, step, "step")

    @staticmethod
    def _add(table: dict[str, Any], short: str, qualified: str, entry: Any, kind: str) -> None:
        if qualified in table:
            raise RegistryError(f"{kind} {qualified!r} is registered twice")
        table[qualified] = entry
        # A short name points at the registration of the highest source priority
        # (project > brainsmith > finn); among equals, the first one registered.
        current = table.get(short)
        if current is None or _priority(entry.namespace) > _priority(current.namespace):
            table[short] = entry

    # -- lookup --------------------------------------------------------------------
    def step(self, name: str) -> Step:
        return self._lookup(self._steps, name, "step")

    def kernel(self, name: str) -> Kernel:
        return self._lookup(self._kernels, name, "kernel")

    def has_backend(self, name: str) -> bool:
        return name in self._backends

    @property
    def backends(self) -> list[str]:
        return sorted(self._backends)

    def step_names(self) -> list[str]:
        return sorted(self._steps)

    def kernel_names(self) -> list[str]:
        return sorted(self._kernels)

    @staticmethod
    def _lookup(table: dict[str, Any], name: str, kind: str) -> Any:
        name = name.removeprefix("step_") if ":" not in name else name
        try:
            return table[name]
        except KeyError:
            known = table if ":" in name else [k for k in table if ":" not in k]
            hint = did_you_mean(name, known)
            raise RegistryError(
                f"unknown {kind} {name!r}" + (f"; {hint}" if hint else "")
            ) from None

    def copy(self) -> Registry:
        other = Registry()
        other._steps = dict(self._steps)
        other._kernels = dict(self._kernels)
        other._backends = set(self._backends)
        return other


def _priority(namespace: str) -> int:
    return _SOURCE_PRIORITY.get(namespace, _PROJECT_PRIORITY)
