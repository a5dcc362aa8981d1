"""Tests of the induction-head task (transformer_challenges.induction, interpretability chapter)."""
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from transformer_challenges import induction as ind


def test_sequences_repeat_with_their_period():
    cfg = ind.InductionConfig()
    tokens, periods = ind.repeated_sequences(cfg, 32, torch.Generator().manual_seed(0))
    assert tokens.shape == (32, cfg.n_tokens) and (tokens[:, 0] == cfg.bos).all()
    for row, p in zip(tokens, periods.tolist()):
        assert cfg.min_period <= p <= cfg.max_period
        body = row[1:]
        assert len(set(body[:p].tolist())) == p          # distinct symbols in one period
        assert torch.equal(body[p:], body[:-p])           # then it repeats
        assert body.max() < cfg.n_symbols
    rep = ind.repeat_mask(periods, cfg.n_tokens - 1)
    # where the mask is True the next token equals the token one period earlier
    nxt, k = tokens[:, 1:], torch.arange(cfg.n_tokens - 1)
    for b in range(32):
        p = int(periods[b])
        assert rep[b].tolist() == (k >= p).tolist()
        assert torch.equal(nxt[b, p:], tokens[b, 1:cfg.n_tokens - p])


def test_patching_pair_corrupts_one_position():
    cfg = ind.InductionConfig()
    g = torch.Generator().manual_seed(0)
    for kind, offset in (("key", 0), ("value", 1)):
        pair = ind.patching_pair(cfg, 16, g, period=8, target=15, corrupt=kind)
        diff = (pair["clean"] != pair["corrupt"]).nonzero()[:, 1].unique().tolist()
        assert diff == [15 - 8 + offset] == [int(pair["position"])]
        # the new symbol is absent from the clean sequence
        new = pair["corrupt"][:, diff[0]]
        assert not (pair["clean"] == new[:, None]).any()
        assert torch.equal(pair["answer"], pair["clean"][:, 15 - 8 + 1])


def test_induction_scores_of_a_perfect_head():
    periods = torch.tensor([3])
    n = 7
    attn = torch.zeros(1, 1, n, n)
    for t in range(n):
        attn[0, 0, t, t - 3 + 1 if t >= 3 else 0] = 1
    assert ind.induction_scores(attn, periods).item() == pytest.approx(1.0)


def test_first_occurrence_bets_by_hand():
    # one sequence of period 4: BOS 3 1 0 2 3 1 0 2 3; first occurrences follow inputs 1, 2, 3
    cfg = ind.InductionConfig(n_symbols=4, min_period=2, max_period=4)
    tokens = torch.tensor([[cfg.bos, 3, 1, 0, 2, 3, 1, 0, 2]])
    periods = torch.tensor([4])
    vocab = cfg.n_symbols + 1
    # uniform logits: at input t the t symbols seen so far get t / vocab of the probability
    uniform = ind.first_occurrence_bets(torch.zeros(1, 8, vocab), tokens, periods)
    assert uniform["seen"] == pytest.approx((1 + 2 + 3) / 3 / vocab)
    assert uniform["first_symbol"] == pytest.approx(1 / vocab)
    # a model that always bets on the first symbol (3): all of it on a seen symbol
    bet = torch.full((1, 8, vocab), -1e4)
    bet[..., 3] = 0.0
    out = ind.first_occurrence_bets(bet, tokens, periods)
    assert out["seen"] == pytest.approx(1.0) and out["first_symbol"] == pytest.approx(1.0)
    # a model that always predicts the true next token: nothing on seen symbols
    right = torch.nn.functional.one_hot(tokens[:, 1:], vocab).float() * 1e4
    out = ind.first_occurrence_bets(right, tokens, periods)
    assert out["seen"] == pytest.approx(0.0, abs=1e-6) and out["first_symbol"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="logits"):
        ind.first_occurrence_bets(torch.zeros(1, 9, vocab), tokens, periods)
    with pytest.raises(ValueError, match="one period per row"):
        ind.first_occurrence_bets(torch.zeros(1, 8, vocab), tokens, torch.tensor([4, 4]))


def test_errors():
    with pytest.raises(ValueError, match="min_period"):
        ind.InductionConfig(min_period=10, max_period=4)
    with pytest.raises(ValueError, match="steps"):
        ind.InductionConfig(steps=0)
    cfg = ind.InductionConfig()
    g = torch.Generator()
    with pytest.raises(ValueError, match="period=20"):
        ind.repeated_sequences(cfg, 2, g, period=20)
    with pytest.raises(ValueError, match="batch_size"):
        ind.repeated_sequences(cfg, 0, g)
    with pytest.raises(ValueError, match="target=3"):
        ind.patching_pair(cfg, 2, g, period=8, target=3)
    with pytest.raises(ValueError, match="unused"):
        ind.patching_pair(cfg, 2, g, period=10, target=15)
    with pytest.raises(ValueError, match="corrupt="):
        ind.patching_pair(cfg, 2, g, period=8, target=15, corrupt="query")
    with pytest.raises(ValueError, match="eval_every"):
        ind.train_induction(cfg, eval_every=0)
    with pytest.raises(ValueError, match="batch, heads"):
        ind.induction_scores(torch.zeros(3, 3), torch.tensor([2]))


def test_training_is_deterministic_and_learns():
    cfg = replace(ind.SIZES["tiny"], steps=150)
    _, h1 = ind.train_induction(cfg, seed=0, eval_every=150)
    _, h2 = ind.train_induction(cfg, seed=0, eval_every=150)
    assert h1 == h2
    # even 150 steps beat chance on the repeated part, never on the first occurrence
    assert h1["acc_repeat"][-1] > 2 / cfg.n_symbols
    assert h1["acc_first"][-1] < 2 / cfg.n_symbols


def test_cli_runs_and_prints_the_result():
    env = dict(os.environ, TC_PROGRESS="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "transformer_challenges.induction", "--seed", "0",
                          "--size", "tiny", "--steps", "60"], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    assert "seeds=0" in out and "steps=60" in out
    assert "one seed:" in out and "across 1 seed(s):" in out
    m = re.search(r"first occurrence ([0-9.]+), repeated part ([0-9.]+)", out)
    assert m, out
    assert 0 <= float(m.group(1)) <= 1 and 0 <= float(m.group(2)) <= 1
    assert re.search(r"induction head: L1H\d; key-side layer-0 head: L0H\d; value-side layer-0 head: L0H\d", out)
    assert len(re.findall(r"^L\dH\d ", out, flags=re.M)) == 4
    bad = subprocess.run([sys.executable, "-m", "transformer_challenges.induction", "--steps", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "--steps" in bad.stderr


def _fake_result(ih, abl_ih, key_head=0, value_head=1):
    key = torch.zeros(2, 2)
    value = torch.zeros(2, 2)
    key[1, ih] = value[1, ih] = 1.0
    key[0, key_head] = value[0, value_head] = 1.0
    abl = torch.full((2, 2), 0.99)
    abl[1, ih] = abl_ih
    return {"acc": {"first": 0.01, "repeat": 0.99}, "patching": {"key": key, "value": value},
            "ablation_repeat_acc": abl, "induction_head": (1, ih), "key_head": (0, key_head),
            "value_head": (0, value_head)}


def test_verdicts_are_counted_over_seeds_by_role():
    cfg = ind.InductionConfig()
    # the induction head has a different index in each seed; the last seed's is not necessary
    results = [_fake_result(0, 0.09), _fake_result(1, 0.08), _fake_result(0, 0.49)]
    v = ind.verdicts(results[1])
    assert v["carries_both"] and v["necessary"] and v["ablated_other_last"] == pytest.approx(0.99)
    assert not ind.verdicts(results[2])["necessary"]
    out = ind.format_report(cfg, [0, 1, 2], results)
    assert "seeds=0,1,2" in out and "across 3 seed(s):" in out and "one seed" not in out
    assert "necessary (< 0.3): 2 of 3 seeds" in out
    assert "under both corruptions: 3 of 3 seeds" in out
    assert "different layer-0 heads: 3 of 3 seeds" in out
    assert out.count("induction head: L1H") == 3
    with pytest.raises(ValueError, match="one analyse"):
        ind.format_report(cfg, [0, 1], results)
