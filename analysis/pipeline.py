"""Pipelines: an ordered list of ``(operation key, params)`` steps applied as one.

A :class:`Pipeline` is plain data. It

* validates every step against the registry (unknown operations / parameters raise a
  ``ValueError`` with a did-you-mean hint; values are coerced to their declared types);
* saves to / loads from a JSON preset that round-trips exactly
  (``Pipeline.from_json(p.to_json()) == p`` and, for canonical text,
  ``Pipeline.from_json(s).to_json() == s``);
* encodes to / decodes from a compact URL query-string value, also exactly (floats are
  written with ``repr``, which round-trips every IEEE double);
* runs through :func:`analysis.registry.run_chain`.

Query-string format (one value, readable in a link)::

    enhancement.gaussian:sigma=1.5;enhancement.clahe:clip_limit=0.02,kernel_size=64

Keys and values are percent-escaped (``urllib.parse.quote``) so option strings containing
``; , : =`` survive. :func:`encode_state` / :func:`decode_state` wrap a whole page state
(current operation, its parameters, the pipeline, view choices) as ``{name: str}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote

import numpy as np

from analysis import registry

__all__ = ["Step", "Pipeline", "encode_params", "decode_params", "encode_state", "decode_state", "FORMAT", "VERSION"]

FORMAT = "medlens-pipeline"
VERSION = 1
_SAFE = ""  # quote() everything except unreserved characters (letters, digits, "_.-~")


def _plain(v: Any) -> Any:
    """numpy scalars → Python scalars (JSON and equality friendly)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass(frozen=True)
class Step:
    """One validated step: operation key + all its parameters (defaults filled in)."""

    op: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def make(op: str, params: Mapping[str, Any] | None = None) -> "Step":
        valid = registry.validate(op, {k: _plain(v) for k, v in (params or {}).items()})
        order = [p.name for p in registry.get(op).params]
        return Step(op, tuple((n, valid[n]) for n in order))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def title(self) -> str:
        return registry.get(self.op).title

    def describe(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.params)
        return f"{self.title} ({args})" if args else self.title


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass(frozen=True)
class Pipeline:
    """An immutable ordered list of :class:`Step`; editing methods return new pipelines."""

    steps: tuple[Step, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def of(steps: Iterable[tuple[str, Mapping[str, Any] | None] | Step]) -> "Pipeline":
        out = []
        for i, s in enumerate(steps):
            if isinstance(s, Step):
                out.append(Step.make(s.op, s.kwargs))
                continue
            try:
                key, params = s
            except (TypeError, ValueError):
                raise ValueError(f"step {i + 1}: expected (operation key, params); got {s!r}") from None
            try:
                out.append(Step.make(str(key), params))
            except ValueError as exc:
                raise ValueError(f"step {i + 1}: {exc}") from None
        return Pipeline(tuple(out))

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.steps)

    def as_list(self) -> list[tuple[str, dict[str, Any]]]:
        """``[(key, params), ...]`` — what :func:`registry.run_chain` and batch tasks take."""
        return [(s.op, s.kwargs) for s in self.steps]

    # ------------------------------------------------------------------ editing
    def add(self, op: str, params: Mapping[str, Any] | None = None, *, at: int | None = None) -> "Pipeline":
        step = Step.make(op, params)
        steps = list(self.steps)
        steps.insert(len(steps) if at is None else int(at), step)
        return Pipeline(tuple(steps))

    def remove(self, index: int) -> "Pipeline":
        self._check_index(index)
        return Pipeline(self.steps[:index] + self.steps[index + 1:])

    def move(self, index: int, offset: int) -> "Pipeline":
        """Move step ``index`` by ``offset`` positions (clamped to the ends)."""
        self._check_index(index)
        steps = list(self.steps)
        step = steps.pop(index)
        steps.insert(max(0, min(len(steps), index + int(offset))), step)
        return Pipeline(tuple(steps))

    def replace(self, index: int, op: str, params: Mapping[str, Any] | None = None) -> "Pipeline":
        self._check_index(index)
        steps = list(self.steps)
        steps[index] = Step.make(op, params)
        return Pipeline(tuple(steps))

    def _check_index(self, index: int) -> None:
        if not 0 <= int(index) < len(self.steps):
            raise ValueError(f"step index {index} out of range (pipeline has {len(self.steps)} steps)")

    # ------------------------------------------------------------------ running
    def run(self, image: np.ndarray, **context: Any) -> registry.Result:
        return registry.run_chain(self.as_list(), image, **context)

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.steps) or "(empty pipeline)"

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "steps": [{"op": s.op, "params": dict(s.params)} for s in self.steps]}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Pipeline":
        if not isinstance(d, Mapping):
            raise ValueError("a pipeline preset must be a JSON object")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a MedLens pipeline preset (format {d.get('format')!r})")
        if int(d.get("version", VERSION)) > VERSION:
            raise ValueError(f"pipeline preset version {d.get('version')} is newer than this MedLens ({VERSION})")
        steps = d.get("steps")
        if not isinstance(steps, list):
            raise ValueError("a pipeline preset needs a 'steps' list")
        pairs = []
        for i, s in enumerate(steps):
            if not isinstance(s, Mapping) or "op" not in s:
                raise ValueError(f"step {i + 1}: expected an object with 'op' and 'params'")
            params = s.get("params", {}) or {}
            if not isinstance(params, Mapping):
                raise ValueError(f"step {i + 1}: 'params' must be an object")
            pairs.append((s["op"], params))
        return Pipeline.of(pairs)

    @staticmethod
    def from_json(text: str | bytes) -> "Pipeline":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"pipeline preset is not valid JSON: {exc}") from None
        return Pipeline.from_dict(d)

    # ------------------------------------------------------------------ URL
    def to_query(self) -> str:
        return ";".join(f"{quote(s.op, safe=_SAFE)}:{encode_params(s.params)}" if s.params else quote(s.op, safe=_SAFE)
                        for s in self.steps)

    @staticmethod
    def from_query(text: str) -> "Pipeline":
        text = (text or "").strip()
        if not text:
            return Pipeline()
        pairs = []
        for i, part in enumerate(text.split(";")):
            key, _, rest = part.partition(":")
            op = unquote(key)
            try:
                pairs.append((op, decode_params(op, rest)))
            except ValueError as exc:
                raise ValueError(f"step {i + 1}: {exc}") from None
        return Pipeline.of(pairs)


# ----------------------------------------------------------------------------- params <-> text
def _encode_value(v: Any) -> str:
    v = _plain(v)
    if v is None:
        return "~"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return quote(str(v), safe=_SAFE)


def encode_params(params: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> str:
    """``name=value,…`` with typed, exact value text (floats by ``repr``)."""
    items = params.items() if isinstance(params, Mapping) else params
    return ",".join(f"{quote(str(k), safe=_SAFE)}={_encode_value(v)}" for k, v in items)


def decode_params(op_key: str, text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_params`, typed by operation ``op_key``'s parameter specs
    and validated (unknown names and bad values raise ``ValueError`` naming them)."""
    op = registry.get(op_key)
    out: dict[str, Any] = {}
    if not text:
        return op.validate({})
    for item in text.split(","):
        name, eq, raw = item.partition("=")
        if not eq:
            raise ValueError(f"{op_key}: malformed parameter text {item!r} (expected name=value)")
        name = unquote(name)
        p = op.param(name)
        if raw == "~":
            out[name] = None
            continue
        kind = p.kind
        if kind == "bool":
            if raw not in ("true", "false"):
                raise ValueError(f"{op_key}: parameter '{name}' must be true or false; got {raw!r}")
            out[name] = raw == "true"
        elif kind == "int":
            try:
                out[name] = int(raw)
            except ValueError:
                raise ValueError(f"{op_key}: parameter '{name}' must be a whole number; got {raw!r}") from None
        elif kind == "float":
            try:
                out[name] = float(raw)
            except ValueError:
                raise ValueError(f"{op_key}: parameter '{name}' must be a number; got {raw!r}") from None
        else:  # choice: the option with this text (options may be numbers)
            text_val = unquote(raw)
            match = [o for o in (p.options or ()) if str(o) == text_val]
            if not match:
                raise ValueError(f"{op_key}: parameter '{name}' must be one of {list(p.options or ())}; got {text_val!r}")
            out[name] = match[0]
    return op.validate(out)


# ----------------------------------------------------------------------------- page state
def encode_state(state: Mapping[str, Any]) -> dict[str, str]:
    """A page state → ``{query name: text}`` for ``st.query_params``.

    Recognised entries: ``op`` (operation key), ``params`` (its parameters),
    ``pipeline`` (:class:`Pipeline`) and any other scalar (str/int/float/bool) view
    choice, written as typed text.
    """
    out: dict[str, str] = {}
    for k, v in state.items():
        if v is None:
            continue
        if k == "op":
            out["op"] = str(v)
        elif k == "params":
            out["params"] = encode_params(v)
        elif k == "pipeline":
            p = v if isinstance(v, Pipeline) else Pipeline.of(v)
            if len(p):
                out["pipeline"] = p.to_query()
        elif isinstance(_plain(v), (bool, int, float, str)):
            out[k] = _encode_scalar(_plain(v))
        else:
            raise ValueError(f"state entry {k!r} of type {type(v).__name__} cannot go into a URL")
    return out


def _encode_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "b:" + ("true" if v else "false")
    if isinstance(v, int):
        return f"i:{v}"
    if isinstance(v, float):
        return "f:" + repr(v)
    return "s:" + str(v)


def _decode_scalar(text: str) -> Any:
    tag, _, raw = text.partition(":")
    if tag == "b" and raw in ("true", "false"):
        return raw == "true"
    if tag == "i":
        return int(raw)
    if tag == "f":
        return float(raw)
    if tag == "s":
        return raw
    raise ValueError(f"malformed state value {text!r}")


def decode_state(query: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_state`. Raises ``ValueError`` (naming the part) on bad
    text; unknown query names are ignored only if they are not typed (other apps' params)."""
    out: dict[str, Any] = {}
    q = {k: (v[-1] if isinstance(v, list) else v) for k, v in query.items()}
    if "op" in q:
        registry.get(q["op"])
        out["op"] = q["op"]
    if "params" in q:
        if "op" not in q:
            raise ValueError("URL has 'params' without 'op'")
        out["params"] = decode_params(q["op"], q["params"])
    if "pipeline" in q:
        out["pipeline"] = Pipeline.from_query(q["pipeline"])
    for k, v in q.items():
        if k in ("op", "params", "pipeline"):
            continue
        if len(v) >= 2 and v[1] == ":" and v[0] in "bifs":
            out[k] = _decode_scalar(v)
    return out
