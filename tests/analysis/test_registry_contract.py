"""Generic contract over EVERY registered operation: the spec equals the signature, it runs
on a phantom with its defaults, it is deterministic, and invalid values raise a ValueError
naming the parameter."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from analysis import registry
from analysis.registry import CONTEXT_ARGS, Param


def _phantom(shape=(96, 96), seed=0) -> np.ndarray:
    """CT-like phantom in HU: air, a 'body' disk at 40 HU, a brighter insert at 90 HU, noise σ 5 HU."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, -1000.0, np.float32)
    img[(rr - 48) ** 2 + (cc - 48) ** 2 < 38 ** 2] = 40.0
    img[(rr - 40) ** 2 + (cc - 55) ** 2 < 10 ** 2] = 90.0
    return img + np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)


def _context(op: registry.Operation) -> dict:
    img = _phantom(seed=1)
    ctx = {"spacing": (0.8, 0.8), "units": "HU"}
    if "reference" in op.context:
        ctx["reference"] = img
    if "moving" in op.context:
        ctx["moving"] = np.roll(img, (3, -2), axis=(0, 1))
    if "fixed" in op.context:
        ctx["fixed"] = img
    if "mask" in op.context:
        rr, cc = np.mgrid[:96, :96]
        ctx["mask"] = (rr - 48) ** 2 + (cc - 48) ** 2 < 30 ** 2
    if "clean" in op.context:
        ctx["clean"] = img
    return ctx


OPS = registry.operations()


def test_registry_seeded():
    keys = {o.key for o in OPS}
    assert "display.window" in keys
    assert any(k.startswith("enhancement.") for k in keys)


@pytest.mark.parametrize("op", OPS, ids=[o.key for o in OPS])
def test_spec_matches_signature(op: registry.Operation):
    sig = inspect.signature(op.func)
    kwonly = [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in CONTEXT_ARGS]
    assert sorted(kwonly) == sorted(p.name for p in op.params), "keyword-only arguments must equal the Param specs"
    for p in op.params:
        d = sig.parameters[p.name].default
        assert d == p.default or (d is None and p.optional), f"default of {p.name} differs between signature and spec"
        p.validate(p.default)  # the default itself is valid
    assert op.domain.strip(), "every operation states its intensity domain"


@pytest.mark.parametrize("op", OPS, ids=[o.key for o in OPS])
def test_runs_on_phantom_and_is_deterministic(op: registry.Operation):
    img = _phantom()
    ctx = _context(op)
    r1 = registry.run(op.key, img.copy(), {}, **ctx)
    r2 = registry.run(op.key, img.copy(), {}, **ctx)
    assert isinstance(r1, registry.Result)
    prim1, prim2 = r1.primary, r2.primary
    if prim1 is not None:
        assert prim1.shape[:2] == img.shape
        np.testing.assert_array_equal(np.asarray(prim1), np.asarray(prim2))
    assert r1.metrics.keys() == r2.metrics.keys()
    for k in r1.metrics:
        assert r1.metrics[k] == pytest.approx(r2.metrics[k], nan_ok=True)


@pytest.mark.parametrize("op", [o for o in OPS if o.params], ids=[o.key for o in OPS if o.params])
def test_invalid_values_raise_naming_parameter(op: registry.Operation):
    for p in op.params:
        for bad in p.invalid_examples():
            with pytest.raises(ValueError, match=p.name):
                registry.validate(op.key, {p.name: bad})
    with pytest.raises(ValueError, match="did you mean"):
        registry.validate(op.key, {op.params[0].name + "x": 1})


def test_unknown_operation_suggests():
    with pytest.raises(ValueError, match="did you mean 'enhancement.gamma'"):
        registry.get("enhancement.gama")


def test_param_validation_rules():
    p = Param("sigma", 1.0, min=0.1, max=5.0)
    assert p.validate(2) == 2.0
    with pytest.raises(ValueError, match="sigma"):
        p.validate(10)
    with pytest.raises(ValueError, match="sigma"):
        p.validate(float("inf"))
    q = Param("size", 3, min=1, max=9, step=2)
    assert q.validate(5) == 5 and isinstance(q.validate(5.0), int)
    with pytest.raises(ValueError, match="whole number"):
        q.validate(2.5)
    c = Param("mode", "a", options=("a", "b"))
    with pytest.raises(ValueError, match="one of"):
        c.validate("z")
    assert Param("g", 1.0, min=0.1, max=10.0, log=True).sweep_values(n=3) == pytest.approx([0.1, 1.0, 10.0])
    assert q.sweep_values(1, 9, 5) == [1, 3, 5, 7, 9]


def test_run_chain_applies_in_order():
    img = _phantom()
    out = registry.run_chain([("enhancement.gaussian", {"sigma": 2.0}), ("display.window", {"center": 40, "width": 400})], img)
    smoothed = registry.run("enhancement.gaussian", img, {"sigma": 2.0}).image
    expected = registry.run("display.window", smoothed, {"center": 40, "width": 400}).image
    np.testing.assert_allclose(out.image, expected)
