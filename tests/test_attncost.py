"""transformer_challenges.attncost: the closed forms against what the library's kernels do.

FLOPs are pinned to ``torch.utils.flop_counter.FlopCounterMode`` and bytes to the float tensors
``memory.saved_tensor_bytes`` finds, both on ``attention``'s implementations, exactly, at small
sizes that cover padding, windows longer than the sequence, every BigBird block count up to the
closed-form regime, and one or several (batch, head) slices.
"""
from __future__ import annotations

import json
import math
import random
from functools import partial

import pytest
import sympy as sp
import torch
from torch.utils.flop_counter import FlopCounterMode

from transformer_challenges import attention as A
from transformer_challenges import attncost as ac
from transformer_challenges.memory import saved_tensor_bytes

# (batch, heads, n, d, window, block, rank, features): one slice and several; n a multiple of
# the window and block or not; a window longer than the sequence; Linformer's rank above n.
CASES = [(1, 1, 96, 8, 16, 8, 12, 10), (2, 3, 130, 16, 16, 8, 12, 10), (1, 2, 40, 8, 64, 16, 48, 6),
         (1, 1, 7, 4, 3, 2, 5, 3)]
BIGBIRD_LAYOUTS = [(3, 1, 1), (5, 1, 2), (3, 0, 1), (4, 2, 0), (1, 1, 3)]   # window, global, random


def _kernels(n, d, window, block, rank, features, layout=(3, 1, 1)):
    """variant -> (callable(q, k, v), parameter tensors that are weights, not activations)."""
    proj = A.linformer_projection(n, rank, seed=0)
    omega = A.random_features(features, d, seed=0)
    wb, g, r = layout
    return {
        "exact": (A.naive_attention, ()),
        "window": (partial(A.sliding_window_attention, window=window), ()),
        "bigbird": (partial(A.bigbird_attention, block_size=block, window_blocks=wb, global_blocks=g,
                            random_blocks=r), ()),
        "linformer": (partial(A.linformer_attention, proj_k=proj), (proj,)),
        "linear": (A.linear_attention, ()),
        "performer": (partial(A.performer_attention, omega=omega), (omega,)),
    }


def _qkv(batch, heads, n, d, seed=0):
    return torch.randn(3, batch, heads, n, d, generator=torch.Generator().manual_seed(seed)).unbind(0)


def _counted_flops(fn, q, k, v) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(q, k, v)
    return counter.get_total_flops()


def _saved_float_bytes(fn, weights, q, k, v) -> int:
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    report = saved_tensor_bytes(lambda: fn(*inputs), exclude=(*inputs, *weights))
    return sum(t.nbytes for t in report.tensors if t.dtype.is_floating_point)


@pytest.mark.parametrize("case", CASES)
def test_flops_and_bytes_equal_what_the_kernels_do(case):
    batch, heads, n, d, window, block, rank, features = case
    q, k, v = _qkv(batch, heads, n, d)
    kw = dict(window=window, block_size=block, rank=rank, features=features, batch=batch, heads=heads)
    for variant, (fn, weights) in _kernels(n, d, window, block, rank, features).items():
        assert ac.attention_flops(variant, n, d, **kw) == _counted_flops(fn, q, k, v), variant
        assert ac.attention_bytes(variant, n, d, **kw) == _saved_float_bytes(fn, weights, q, k, v), variant


@pytest.mark.parametrize("layout", BIGBIRD_LAYOUTS)
def test_bigbird_at_every_block_count_and_layout(layout):
    """Dense rows at few blocks, mixed rows in between, the closed form from R + 1 blocks on."""
    wb, g, r = layout
    block, d = 2, 4
    per_row = 2 * (wb // 2) + 1 + g + r
    for heads in (1, 2):
        for nb in range(max(g, 1), per_row + 4):
            n = nb * block - (nb % 2)      # every other length padded by one position
            q, k, v = _qkv(1, heads, n, d, seed=nb)
            fn, _ = _kernels(n, d, 4, block, 4, 4, layout)["bigbird"]
            kw = dict(block_size=block, window_blocks=wb, global_blocks=g, random_blocks=r, heads=heads)
            assert ac.attention_flops("bigbird", n, d, **kw) == _counted_flops(fn, q, k, v), (layout, nb)
            saved = _saved_float_bytes(fn, (), q, k, v)
            assert ac.attention_bytes("bigbird", n, d, **kw) == saved, (layout, nb)


def test_symbolic_formulas_evaluate_to_the_integer_ones():
    names = ("n", "d", "window", "block_size", "rank", "features", "batch", "heads")
    s = {k: sp.Symbol(k, positive=True, integer=True) for k in names}
    rng = random.Random(0)
    for variant in ac.VARIANTS:
        flops = ac.attention_flops(variant, s["n"], s["d"], **{k: s[k] for k in names[2:]})
        nbytes = ac.attention_bytes(variant, s["n"], s["d"], **{k: s[k] for k in names[2:]})
        assert isinstance(flops, sp.Expr) and isinstance(nbytes, sp.Expr)
        for _ in range(25):
            v = dict(n=rng.randint(1, 5000), d=rng.randint(1, 128), window=rng.randint(1, 300),
                     block_size=rng.randint(1, 100), rank=rng.randint(1, 300), features=rng.randint(1, 300),
                     batch=rng.randint(1, 3), heads=rng.choice([1, 1, 2, 5]))
            at = {s[k]: v[k] for k in names}
            n, d = v.pop("n"), v.pop("d")
            assert flops.subs(at) == ac.attention_flops(variant, n, d, **v), (variant, at)
            assert nbytes.subs(at) == ac.attention_bytes(variant, n, d, **v), (variant, at)
    assert ac.attention_bytes("exact", 10, 4, bytes_per_value=2) == 200


def test_crossover_closed_forms():
    d, w, b, k, m = sp.symbols("d w b k m", positive=True, integer=True)
    kw = dict(window=w, block_size=b, rank=k, features=m)
    assert ac.crossover_n("window", d, **kw) == 3 * w
    assert ac.crossover_n("bigbird", d, **kw) == 4 * b
    assert ac.crossover_n("linformer", d, **kw) == 2 * k
    assert sp.simplify(ac.crossover_n("linear", d, **kw) - (d + sp.Rational(1, 2))) == 0
    assert sp.simplify(ac.crossover_n("performer", d, **kw) - (2 * m + m / (2 * d))) == 0
    assert ac.crossover_n("linformer", 64, rank=128) == 256


@pytest.mark.parametrize("variant", ac.VARIANTS[1:])
def test_crossover_separates_cheaper_from_not(variant):
    """For every length beyond n* the variant does fewer FLOPs than exact attention; at n* and
    below it does not (window and BigBird: among whole windows or blocks)."""
    settings = [dict(d=16, window=8, block_size=4, rank=24, features=20),
                dict(d=3, window=5, block_size=3, rank=7, features=9)]
    layouts = BIGBIRD_LAYOUTS if variant == "bigbird" else [(3, 1, 1)]
    for kw in settings:
        for wb, g, r in layouts:
            kw = dict(kw, window_blocks=wb, global_blocks=g, random_blocks=r)
            star = ac.crossover_n(variant, **kw)
            unit = {"window": kw["window"], "bigbird": kw["block_size"]}.get(variant, 1)
            start = g * unit if variant == "bigbird" else unit
            for n in range(max(start, unit), 40 * unit + 1, unit):
                cheaper = ac.attention_flops(variant, n, **kw) < ac.attention_flops("exact", n, **kw)
                assert cheaper == (n > star), (variant, kw, n, star)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="unknown"):
        ac.attention_flops("flash", 10, 4)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ac.attention_flops("exact", 0, 4)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        ac.attention_bytes("window", 10, 4, window=2.5)
    with pytest.raises(ValueError, match="heads must be a positive integer"):
        ac.attention_flops("exact", 10, 4, heads=True)
    with pytest.raises(ValueError, match="positive=True"):
        ac.attention_flops("exact", -sp.Symbol("n", positive=True), 4)
    with pytest.raises(ValueError, match="global_blocks=3 exceeds"):
        ac.attention_flops("bigbird", 20, 4, block_size=10, global_blocks=3)
    with pytest.raises(ValueError, match="window_blocks must be an integer >= 1"):
        ac.attention_bytes("bigbird", 20, 4, window_blocks=sp.Symbol("w"))
    with pytest.raises(ValueError, match="no crossover with itself"):
        ac.crossover_n("exact", 4)
    with pytest.raises(ValueError, match="bytes_per_value"):
        ac.attention_bytes("exact", 10, 4, bytes_per_value=0)
    assert ac.attention_flops("exact", 10.0, sp.Integer(4)) == 1600     # 10.0 and SymPy ints pass


def test_explorer_equals_the_functions():
    e = ac.explorer()
    rng = random.Random(1)
    for _ in range(20):
        v = dict(n=rng.randint(1, 40000), d=rng.randint(1, 256), window=rng.randint(1, 1024),
                 block=rng.randint(1, 256), rank=rng.randint(1, 1024), features=rng.randint(1, 1024),
                 heads=rng.randint(1, 8))
        got = e.evaluate(v)
        kw = dict(window=v["window"], block_size=v["block"], rank=v["rank"], features=v["features"])
        for variant in ac.VARIANTS:
            args = (variant, v["n"], v["d"])
            assert got[f"flops_{variant}"] == ac.attention_flops(*args, heads=v["heads"], **kw)
            assert got[f"bytes_{variant}"] == ac.attention_bytes(*args, heads=v["heads"], **kw)
            if variant != "exact":
                assert math.isclose(got[f"cross_{variant}"], float(ac.crossover_n(variant, v["d"], **kw)))
    spec = json.loads(json.dumps(e.spec()))
    curves = [p for p in spec["plots"] if p["type"] == "curve"]
    assert [p["label"] for p in curves] == [ac.LABELS[v] for v in ac.VARIANTS]
    assert all("length" in p["y"] and p["xlog"] for p in curves)
    assert e.defaults()["n"] == 2048 and "attention-cost" in e._repr_html_()
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        ac.explorer(rank=0)
