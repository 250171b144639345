"""Operation registry: every technique is declared once, here.

An operation is a pure function plus typed parameter specs. The registry

* validates parameters centrally (``ValueError`` naming the parameter),
* offers did-you-mean lookups for unknown operation / parameter names,
* is the single source for page widgets (``ui.widgets``), sweep grids, batch runs and the
  generic contract test (``tests/analysis/test_registry_contract.py``).

Writing an operation::

    @register(
        "enhancement.gamma",
        title="Gamma",
        domain="any real values; rescaled to [0, 1] over the image range, result in input units",
        params=[Param("gamma", 1.0, min=0.05, max=5.0, step=0.05, help="...")],
    )
    def gamma(image, *, gamma=1.0):
        ...

The function takes the 2-D float32 array (physical units) as its first positional
argument, its tuning knobs keyword-only, and may also accept the *context* keywords in
:data:`CONTEXT_ARGS` (e.g. ``spacing`` in mm, a ``reference`` image, a ``mask``); those
are passed only when the function's signature names them. It returns an ``ndarray`` (the
output image) or a :class:`Result`.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "Param",
    "Operation",
    "Result",
    "register",
    "get",
    "operations",
    "validate",
    "run",
    "run_chain",
    "CONTEXT_ARGS",
    "did_you_mean",
]

#: keywords a function may take besides its typed parameters; filled from the image/context
CONTEXT_ARGS = ("spacing", "reference", "mask", "moving", "fixed", "units", "clean")


@dataclass(frozen=True)
class Param:
    """Typed parameter metadata (one table drives validation, widgets, sweeps and tests).

    ``kind`` is inferred: ``choice`` when ``options`` is given, ``bool`` for a bool
    default, ``int`` for an int default, otherwise ``float``.
    """

    name: str
    default: Any
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[Any, ...] | None = None
    unit: str = ""
    help: str = ""
    label: str = ""
    log: bool = False  # sweeps use geometric spacing
    optional: bool = False  # None allowed (e.g. "auto")

    @property
    def kind(self) -> str:
        if self.options is not None:
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        return "float"

    @property
    def title(self) -> str:
        base = self.label or self.name.replace("_", " ")
        return f"{base} ({self.unit})" if self.unit else base

    def validate(self, value: Any, op_key: str = "") -> Any:
        """Return the value coerced to this parameter's type or raise ValueError naming it."""
        where = f"{op_key}: parameter '{self.name}'" if op_key else f"parameter '{self.name}'"
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{where} is required")
        kind = self.kind
        if kind == "choice":
            if value not in self.options:  # type: ignore[operator]
                raise ValueError(f"{where} must be one of {list(self.options)}; got {value!r}")
            return value
        if kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if value in (0, 1):
                return bool(value)
            raise ValueError(f"{where} must be true or false; got {value!r}")
        try:
            if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
                raise TypeError
            num = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number; got {value!r}") from None
        if not math.isfinite(num):
            raise ValueError(f"{where} must be finite; got {value!r}")
        if kind == "int":
            if num != int(num):
                raise ValueError(f"{where} must be a whole number; got {value!r}")
            num = int(num)
        if self.min is not None and num < self.min:
            raise ValueError(f"{where} must be ≥ {self.min}; got {value!r}")
        if self.max is not None and num > self.max:
            raise ValueError(f"{where} must be ≤ {self.max}; got {value!r}")
        return num

    def sweep_values(self, lo: float | None = None, hi: float | None = None, n: int = 5) -> list[Any]:
        """Evenly (or geometrically, for ``log``) spaced values for a sweep grid."""
        if self.kind == "choice":
            return list(self.options or ())
        if self.kind == "bool":
            return [False, True]
        lo = self.min if lo is None else lo
        hi = self.max if hi is None else hi
        if lo is None or hi is None:
            raise ValueError(f"parameter '{self.name}' needs a range to sweep")
        n = max(int(n), 1)
        if n == 1:
            vals = [lo]
        elif self.log and lo > 0 and hi > 0:
            vals = list(np.geomspace(lo, hi, n))
        else:
            vals = list(np.linspace(lo, hi, n))
        if self.kind == "int":
            out: list[Any] = []
            for v in vals:
                iv = int(round(v))
                if iv not in out:
                    out.append(iv)
            return out
        return [float(round(v, 10)) for v in vals]

    def invalid_examples(self) -> list[Any]:
        """Values that must be rejected (used by the generic contract test)."""
        bad: list[Any] = []
        if self.kind == "choice":
            bad.append("__not_an_option__")
        elif self.kind == "bool":
            bad.append("yes")
        else:
            bad.append("abc")
            bad.append(float("nan"))
            if self.min is not None:
                bad.append(self.min - (self.step or 1) * 10 - 1)
            if self.max is not None:
                bad.append(self.max + (self.step or 1) * 10 + 1)
        return bad


@dataclass
class Result:
    """What an operation returns.

    ``image``: output image (2-D float or RGB) — in ``units``;
    ``mask`` / ``labels``: segmentation outputs; ``table``: a pandas DataFrame (regions,
    features...); ``metrics``: scalar numbers shown under tiles; ``notes``: plain text
    shown to the user; ``extras``: anything else (transforms, fields, figures' data).
    """

    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    table: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    units: str | None = None

    @property
    def primary(self) -> np.ndarray | None:
        """The array a tile shows: image, else labels, else mask."""
        for a in (self.image, self.labels, self.mask):
            if a is not None:
                return a
        return None


@dataclass(frozen=True)
class Operation:
    key: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    title: str
    technique: str
    domain: str
    output: str = "image"  # image | mask | labels | edges | table | pair
    inputs: str = "image"  # image | pair
    slow: bool = False  # > ~300 ms at 512²: preview while dragging, full size on demand
    description: str = ""
    context: tuple[str, ...] = ()  # context keywords the function accepts

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(
            f"{self.key}: unknown parameter '{name}'"
            + did_you_mean(name, [p.name for p in self.params])
        )

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = dict(params or {})
        names = {p.name for p in self.params}
        for k in params:
            if k not in names:
                raise ValueError(
                    f"{self.key}: unknown parameter '{k}'" + did_you_mean(k, sorted(names))
                )
        return {p.name: p.validate(params.get(p.name, p.default), self.key) for p in self.params}

    def __call__(self, image: np.ndarray, params: dict[str, Any] | None = None, **context: Any) -> Result:
        return _call(self, image, params, context)


_REGISTRY: dict[str, Operation] = {}
_LOADED = False


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def register(
    key: str,
    *,
    title: str,
    params: Sequence[Param] = (),
    domain: str,
    output: str = "image",
    inputs: str = "image",
    slow: bool = False,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a pure function to the registry under ``"<technique>.<name>"``."""
    if "." not in key:
        raise ValueError(f"operation key {key!r} must look like '<technique>.<name>'")

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func)
        context = tuple(n for n in sig.parameters if n in CONTEXT_ARGS)
        op = Operation(
            key=key,
            func=func,
            params=tuple(params),
            title=title,
            technique=key.split(".", 1)[0],
            domain=domain,
            output=output,
            inputs=inputs,
            slow=slow,
            description=description or (inspect.getdoc(func) or "").split("\n\n")[0],
            context=context,
        )
        if key in _REGISTRY and _REGISTRY[key].func is not func:
            raise ValueError(f"operation {key!r} registered twice")
        _REGISTRY[key] = op
        return func

    return deco


def _ensure_loaded() -> None:
    """Import the technique modules so their decorators run (idempotent)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for mod in TECHNIQUE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a technique module not written yet
            if exc.name != mod:
                raise


#: modules whose import registers operations (add new technique modules here)
TECHNIQUE_MODULES = (
    "analysis.display",
    "analysis.enhancement",
    "analysis.segmentation",
    "analysis.registration",
    "analysis.fusion",
    "analysis.features",
)


def get(key: str) -> Operation:
    _ensure_loaded()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(f"unknown operation {key!r}" + did_you_mean(key, _REGISTRY)) from None


def operations(technique: str | None = None, *, inputs: str | None = None) -> list[Operation]:
    _ensure_loaded()
    ops = [o for o in _REGISTRY.values() if technique is None or o.technique == technique]
    if inputs is not None:
        ops = [o for o in ops if o.inputs == inputs]
    return ops


def validate(key: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return get(key).validate(params)


def _call(op: Operation, image: Any, params: dict[str, Any] | None, context: dict[str, Any]) -> Result:
    p = op.validate(params)
    ctx = {k: v for k, v in context.items() if k in op.context}
    out = op.func(image, **p, **ctx)
    if isinstance(out, Result):
        return out
    if isinstance(out, np.ndarray):
        if op.output == "mask":
            return Result(mask=out.astype(bool))
        if op.output == "labels":
            return Result(labels=out)
        return Result(image=out)
    raise TypeError(f"{op.key} returned {type(out).__name__}, expected ndarray or Result")


def run(key: str, image: Any, params: dict[str, Any] | None = None, **context: Any) -> Result:
    """Validate ``params`` and run operation ``key`` on ``image`` (2-D array)."""
    return _call(get(key), image, params, context)


def run_chain(steps: Sequence[tuple[str, dict[str, Any]]], image: np.ndarray, **context: Any) -> Result:
    """Apply image-to-image operations in order (a pipeline). The last step's Result is
    returned; earlier steps must produce an image."""
    if not steps:
        return Result(image=np.asarray(image))
    current = image
    result = Result(image=np.asarray(image))
    for i, (key, params) in enumerate(steps):
        result = run(key, current, params, **context)
        if i < len(steps) - 1:
            if result.image is None:
                raise ValueError(
                    f"step {i + 1} ({key}) produces a {get(key).output}, so it must be the last step"
                )
            current = result.image
    return result
