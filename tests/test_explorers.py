"""transformer_challenges.explorers: specs, generated expressions against the library, frames."""
from __future__ import annotations

import json
import math
import random

import pytest
import sympy as sp
import torch

from transformer_challenges import costs, explorers as ex, kvcache, positional, scaling


def test_quantized_bytes_per_value_matches_what_quantize_stores():
    x = torch.randn(2, 3, 10, 64)
    for bits in (8, 4, 2):
        assert kvcache.quantize(x, bits).nbytes / x.numel() == kvcache.quantized_bytes_per_value(bits, 64)
    hd = sp.Symbol("hd", positive=True)
    assert sp.simplify(kvcache.quantized_bytes_per_value(8, hd) - (1 + 4 / hd)) == 0
    with pytest.raises(ValueError, match="bits"):
        kvcache.quantized_bytes_per_value(3, 64)


def test_controls_and_outputs_validate_their_arguments():
    with pytest.raises(ValueError, match="min <= value <= max"):
        ex.Control("x", "x", 5, min=0, max=1)
    with pytest.raises(ValueError, match="identifier"):
        ex.Control("two words", "x", 0, min=0, max=1)
    with pytest.raises(ValueError, match="options"):
        ex.Control("c", "c", 3, kind="choice", options={"a": 1})
    with pytest.raises(ValueError, match="either expr"):
        ex.Output("o", "o")
    x = sp.Symbol("x")
    with pytest.raises(ValueError, match="not controls"):
        ex.Explorer("e", "e", [ex.Control("y", "y", 1, min=0, max=2)], [ex.Output("o", "o", x + 1)])


def test_format_value_formats():
    assert ex.format_value(1.5e9, "bytes", 2) == "1.50 GB"
    assert ex.format_value(1234567.4, "count") == "1,234,567"
    assert ex.format_value(3.14e23, "sci", 3) == "3.140e23"
    assert ex.format_value(86400 * 2.04, "days", 1) == "2.0 days"
    assert ex.format_value(float("nan"), "fixed") == "—"


def test_training_memory_expressions_equal_the_cost_functions():
    """The generated expressions against the cost functions called directly, at the random settings
    the browser test draws (tests/explorer_reference.py computes the library's values)."""
    from explorer_reference import REFERENCES

    e, ref = ex.training_memory(), REFERENCES["training-memory"]
    rng = random.Random(0)
    for _ in range(10):
        v = ref.draw(rng)
        got, want = e.evaluate(v), ref.values(v)
        assert got["params"] == want["params"]
        for name in ("activations", "total", "days"):
            assert math.isclose(got[name], want[name], rel_tol=1e-12), name
    assert "training-memory" in e._repr_html_() and "GB" in repr(e)
    spec = json.loads(json.dumps(e.spec()))
    assert all("Math" in o["js"] or "*" in o["js"] for o in spec["outputs"])


def test_kv_cache_and_compute_optimal_equal_the_library():
    e = ex.kv_cache()
    for bits, bpv in ((16, 2), (8, kvcache.quantized_bytes_per_value(8, 128)), (4, kvcache.quantized_bytes_per_value(4, 128))):
        got = e.evaluate({"bits": bits, "batch": 8, "context": 4096})
        per_token = kvcache.kv_bytes_per_token(32, 32, 128, bpv)
        assert math.isclose(got["per_token"], per_token) and math.isclose(got["total"], 8 * 4096 * per_token)
        assert got["fit"] == max(math.floor((80e9 - 13.2e9) / (4096 * per_token)), 0)
    e = ex.compute_optimal()
    for i, law in enumerate(scaling.LAWS.values()):
        got = e.evaluate({"law": i, "log10_C": 22.5})
        n, d = scaling.compute_optimal(law, 10**22.5)
        assert math.isclose(got["N_opt"], n, rel_tol=1e-9) and math.isclose(got["D_opt"], d, rel_tol=1e-9)
        assert math.isclose(got["loss"], law.loss(n, d), rel_tol=1e-9)


def test_frames_hold_the_library_curves():
    e = ex.rope_decay(n_random=16)
    frame = e.frames["64|10000|256"]
    assert frame["bound"] == ex._round(positional.rope_decay_curve(64, 256, 10000.0)[[int(m) for m in frame["m"]]].tolist())
    assert e.evaluate({"d": 64, "base": 10000, "max_distance": 256, "m": 1})["bound_m"] == frame["bound"][1]
    a = ex.alibi_explorer()
    assert a.frames["12"]["slope"] == ex._round(positional.alibi_slopes(12).tolist(), 12)
    assert a.evaluate({"n_heads": 12, "head": 12})["slope_h"] == a.frames["12"]["slope"][-1]
