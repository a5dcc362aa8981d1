"""The book's corpus, tokenizer, batching and training loop."""
import math

import pytest
import torch

from transformer_challenges import data, model, training


def test_toy_corpus_is_deterministic_and_seed_dependent():
    assert data.toy_corpus(50, seed=1) == data.toy_corpus(50, seed=1)
    assert data.toy_corpus(50, seed=1) != data.toy_corpus(50, seed=2)
    lines = data.toy_corpus(50).splitlines()
    assert len(lines) == 50 and all(line.endswith(".") for line in lines)
    with pytest.raises(ValueError, match="positive int"):
        data.toy_corpus(0)


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = data.CharTokenizer.from_text("hello world")
    ids = tok.encode("low")
    assert tok.decode(ids) == "low" and tok.vocab_size == len(set("hello world"))
    with pytest.raises(ValueError, match=r"\['z'\]"):
        tok.encode("zoo")
    with pytest.raises(ValueError, match="empty"):
        data.CharTokenizer.from_text("")


def test_random_batch_targets_are_inputs_shifted_by_one():
    tokens = torch.arange(100)
    x, y = data.random_batch(tokens, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10)
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="at least seq_len \\+ 1"):
        data.random_batch(torch.arange(5), 1, 5)
    with pytest.raises(ValueError, match="1-D"):
        data.random_batch(torch.zeros(2, 20, dtype=torch.long), 1, 5)


def test_lr_schedule_warmup_and_decay_endpoints():
    assert training.lr_at(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert training.lr_at(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert training.lr_at(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert training.lr_at(100, 100, 1.0, 10, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    mid = training.lr_at(55, 100, 1.0, 10, "cosine", min_ratio=0.0)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert training.lr_at(55, 100, 1.0, 10, "linear", min_ratio=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule='step'"):
        training.lr_at(0, 10, 1.0, schedule="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        training.lr_at(0, 10, 1.0, warmup_steps=11)


def test_train_lm_learns_a_repeating_pattern_and_is_repeatable():
    tokens = torch.arange(5).repeat(200)

    def run():
        torch.manual_seed(0)
        gpt = model.TinyGPT(model.GPTConfig(vocab_size=5, seq_len=8, d_model=16, n_heads=2, n_layers=1))
        res = training.train_lm(gpt, tokens, steps=60, batch_size=8, seq_len=8, lr=1e-2,
                                eval_tokens=tokens, eval_every=30)
        return res

    a, b = run(), run()
    assert a.loss == b.loss
    assert a.eval_loss[-1] < 0.2 < math.log(5)
    assert a.eval_steps == [30, 60] and not a.diverged
    with pytest.raises(ValueError, match="lr must be > 0"):
        training.train_lm(model.TinyGPT(model.GPTConfig(vocab_size=5, seq_len=8, d_model=16, n_heads=2)),
                          tokens, steps=1, batch_size=1, seq_len=8, lr=0)
