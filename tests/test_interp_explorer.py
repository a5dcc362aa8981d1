"""transformer_challenges.interp_explorer: the attention-map explorer of the interpretability page."""
from __future__ import annotations

import json
import math

import pytest
import torch

from transformer_challenges import induction as ind, interp, interp_explorer as ie


def _map(n, key_of):
    """A causal map (row t: keys 0..t) in which query t puts all its attention on key_of(t)."""
    return [[1.0 if k == key_of(t) else 0.0 for k in range(t + 1)] for t in range(n)]


def test_induction_targets_point_after_the_latest_earlier_occurrence():
    assert ie.induction_targets([9, 1, 2, 3, 1, 2, 1]) == [None, None, None, None, 2, 3, 5]
    with pytest.raises(ValueError, match="non-empty"):
        ie.induction_targets([])


def test_map_scores_of_maps_with_a_known_pattern():
    tokens = [9, 1, 2, 3, 4, 1, 2, 3, 4, 1]             # BOS-like 9, then period 4
    n = len(tokens)
    targets = ie.induction_targets(tokens)
    prev = ie.map_scores(_map(n, lambda t: max(t - 1, 0)), tokens)
    assert prev["prev"] == 1 and prev["offset"] == 1 and prev["induction"] == 0
    assert prev["bos"] == pytest.approx(1 / (n - 1))    # only query 1's previous token is BOS
    bos = ie.map_scores(_map(n, lambda t: 0), tokens)
    assert bos["bos"] == 1 and bos["offset"] == 1        # every distance ties at 1/(n-1): the smallest
    # an induction head that looks two keys after the target (as the page's trained head does)
    shifted = ie.map_scores(_map(n, lambda t: targets[t] + 2 if targets[t] is not None and targets[t] + 2 <= t
                                 else 0), tokens)
    assert shifted["induction_offset"] == 2 and shifted["induction"] == 0
    exact = ie.map_scores(_map(n, lambda t: targets[t] if targets[t] is not None else 0), tokens)
    assert exact["induction"] == 1 and exact["induction_offset"] == 0
    # full square rows with None (or 0) above the diagonal give the same numbers
    square = [r + [None] * (n - len(r)) for r in _map(n, lambda t: max(t - 1, 0))]
    assert ie.map_scores(square, tokens) == prev
    assert ie.by_distance(square)[1] == 1


def test_map_scores_without_repeats_and_bad_maps():
    scores = ie.map_scores(_map(4, lambda t: 0), [9, 1, 2, 3])
    assert math.isnan(scores["induction"]) and math.isnan(scores["induction_offset"])
    assert ie.by_target_offset(_map(4, lambda t: 0), [9, 1, 2, 3]) == {}
    with pytest.raises(ValueError, match="one token per row"):
        ie.map_scores(_map(4, lambda t: 0), [9, 1, 2])
    with pytest.raises(ValueError, match="keys 0..t"):
        ie.map_scores([[1.0], [1.0], [0.5, 0.5, 0.0]], [9, 1, 1])
    with pytest.raises(ValueError, match="None on or below"):
        ie.map_scores([[1.0], [None, 1.0]], [9, 1])
    with pytest.raises(ValueError, match="'attn' and 'ids'"):
        ie.frame_scores({"attn": [[1.0], [0.5, 0.5]]})


def test_example_sequences_hold_the_pages_figure_and_repeats():
    cfg = ind.SIZES["fast"]
    seqs = ie.example_sequences(cfg)
    assert 4 <= len(seqs) <= 6
    figure, _ = ind.repeated_sequences(cfg, 1, torch.Generator().manual_seed(7), period=8)
    assert torch.equal(next(iter(seqs.values())), figure[0, :-1])
    for name, x in seqs.items():
        assert x.shape == (cfg.n_tokens - 1,) and int(x[0]) == cfg.bos, name
        assert int(x[1:].max()) < cfg.n_symbols and int(x[1:].min()) >= 0, name
        assert any(j is not None for j in ie.induction_targets(x.tolist())), name
    broken = [x for name, x in seqs.items() if "new order" in name][0].tolist()
    assert broken[9:] != broken[1:len(broken) - 8]       # the first 8 symbols do not repeat as a copy
    assert all(a != b for a, b in zip(broken, broken[1:]))
    full = ie.example_sequences(ind.SIZES["full"])
    assert all(x.shape == (ind.SIZES["full"].n_tokens - 1,) for x in full.values())
    with pytest.raises(ValueError, match="period=2"):
        ie.example_sequences(cfg, period=2)


@pytest.fixture(scope="module")
def small():
    cfg = ind.InductionConfig(n_symbols=8, min_period=2, max_period=4, d_model=16, n_heads=2, n_layers=2)
    torch.manual_seed(0)
    model = ind.build_model(cfg).eval().requires_grad_(False)
    seqs = ie.example_sequences(cfg, period=3)
    return cfg, model, seqs


def test_attention_map_frames_are_the_models_rounded_attention(small):
    cfg, model, seqs = small
    e = ie.attention_map(model, seqs, cfg.bos, digits=3, layer=1, head=1)
    assert len(e.frames) == cfg.n_layers * cfg.n_heads * len(seqs)
    for s, x in enumerate(seqs.values()):
        _, cache = interp.run_with_cache(model, x[None])
        for l in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                f = e.frames[f"{l}|{h}|{s}"]
                a = cache[f"attn.{l}"][0, h].double()
                assert [len(r) for r in f["attn"]] == list(range(1, len(x) + 1))
                assert all(abs(v - float(a[t, k])) <= 0.0005 + 1e-12
                           for t, r in enumerate(f["attn"]) for k, v in enumerate(r))
                assert f["ids"] == x.tolist() and f["tokens"][0] == "0: BOS"
                # what the page shows is frame_scores of the map it draws
                got = e.evaluate({"layer": l, "head": h, "seq": s})
                want = ie.frame_scores(f)
                assert got == {k: want[k] for k in ie.SCORES}
    assert e.defaults() == {"layer": 1, "head": 1, "seq": 0}
    spec = json.loads(json.dumps(e.spec()))
    assert spec["plots"][0]["type"] == "heatmap" and spec["frame_keys"] == ["layer", "head", "seq"]
    assert "attention-map" in e._repr_html_() and "induction target" in repr(e)


def test_attention_map_validates_its_arguments(small):
    cfg, model, seqs = small
    with pytest.raises(ValueError, match="at least one stored sequence"):
        ie.attention_map(model, {}, cfg.bos)
    with pytest.raises(ValueError, match="repeats no token"):
        ie.attention_map(model, {"no repeat": torch.tensor([cfg.bos, 0, 1, 2])}, cfg.bos)
    with pytest.raises(ValueError, match="1-D tensor"):
        ie.attention_map(model, {"long": torch.zeros(cfg.n_tokens + 5, dtype=torch.long)}, cfg.bos)
    with pytest.raises(ValueError, match="outside the model"):
        ie.attention_map(model, seqs, cfg.bos, head=cfg.n_heads)
    with pytest.raises(ValueError, match="digits"):
        ie.attention_map(model, seqs, cfg.bos, digits=0)
