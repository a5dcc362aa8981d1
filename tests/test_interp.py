"""Tests of the hook mechanism in transformer_challenges.interp (interpretability chapter)."""
import pytest
import torch

from transformer_challenges import interp, model


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    m = model.TinyGPT(model.GPTConfig(vocab_size=11, seq_len=8, d_model=16, n_heads=2, n_layers=2))
    return m.eval()


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))


def test_cache_shapes_and_consistency(gpt, idx):
    logits, cache = interp.run_with_cache(gpt, idx)
    assert torch.allclose(logits, gpt(idx)[0], atol=1e-6)  # naive vs SDPA kernel
    assert cache["resid.0"].shape == (3, 8, 16) and cache["heads.1"].shape == (3, 8, 2, 8)
    assert cache["attn.0"].shape == (3, 2, 8, 8)
    assert torch.allclose(cache["resid.0"], gpt.embed(idx))
    # resid.2 through the final LN and the tied head gives the logits
    assert torch.allclose(gpt.head(gpt.ln_f(cache["resid.2"])), logits, atol=1e-6)
    # the heads, projected, are the attention output: resid.1 = resid.0 + proj(heads) + ffn(...)
    block = gpt.blocks[0]
    attn_out = block.attn.proj(cache["heads.0"].reshape(3, 8, 16))
    mid = cache["resid.0"] + attn_out
    assert torch.allclose(mid + block.ffn(block.ln2(mid)), cache["resid.1"], atol=1e-6)
    # attention rows are causal probability distributions
    a = cache["attn.1"]
    assert torch.allclose(a.sum(-1), torch.ones(3, 2, 8), atol=1e-6)
    assert a.triu(1).abs().max() == 0
    assert not any(b.attn.store_weights for b in gpt.blocks)  # flag restored


def test_patching_with_own_activations_is_identity(gpt, idx):
    _, cache = interp.run_with_cache(gpt, idx)
    base = gpt(idx)[0]
    out = interp.run_with_patches(gpt, idx, resid={(1, None): cache["resid.1"]},
                                  heads={(0, 1, (2, 3)): cache["heads.0"][:, :, 1]})
    assert torch.allclose(out, base, atol=1e-6)


def test_patching_the_whole_residual_transplants_the_output(gpt, idx):
    other = (idx + 1) % 11
    clean_logits, cache = interp.run_with_cache(gpt, idx)
    out = interp.run_with_patches(gpt, other, resid={(2, None): cache["resid.2"]})
    assert torch.allclose(out, clean_logits, atol=1e-6)
    # patching one position of the last residual changes only that position's logits
    out = interp.run_with_patches(gpt, other, resid={(2, 4): cache["resid.2"]})
    plain = gpt(other)[0]
    assert torch.allclose(out[:, 4], clean_logits[:, 4], atol=1e-6)
    assert torch.allclose(out[:, :4], plain[:, :4]) and torch.allclose(out[:, 5:], plain[:, 5:])


def test_zero_ablation_equals_zeroing_proj_input(gpt, idx):
    out = interp.ablate_heads(gpt, idx, [(1, 0)], mode="zero")
    w = gpt.blocks[1].attn.proj.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w[:, :8] = 0  # head 0's slice of the proj input no longer contributes
        ref = gpt(idx)[0]
        w.copy_(saved)
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, gpt(idx)[0])


def test_mean_ablation_on_identical_batch_is_identity(gpt):
    x = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(2)).repeat(4, 1)
    assert torch.allclose(interp.ablate_heads(gpt, x, [(0, 0), (1, 1)], mode="mean"), gpt(x)[0], atol=1e-6)


def test_scans_and_recovery(gpt, idx):
    other = idx.clone()
    other[:, 0] = (idx[:, 0] + 3) % 11
    answer = idx[:, 1]

    def metric(logits):
        return interp.logit_margin(logits, 7, answer).mean()

    res = interp.resid_patching_scan(gpt, idx, other, metric)
    assert res.shape == (3, 8)
    # only position 0 differs at the embedding; patching it there restores everything
    assert res[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert res[0, 1:].abs().max() < 1e-4
    assert res[2, 7] == pytest.approx(1.0, abs=1e-4)
    heads = interp.head_patching_scan(gpt, idx, other, metric)
    assert heads.shape == (2, 2)
    # positions may be a list, a tuple or an int (a list used to raise TypeError: unhashable);
    # the metric reads the last position, so patching only there must equal the full patch at
    # the last layer, whose heads write nothing that later positions read
    last = idx.shape[1] - 1
    for positions in ([last], (last,), last):
        at_last = interp.head_patching_scan(gpt, idx, other, metric, positions=positions)
        assert torch.allclose(at_last[-1], heads[-1], atol=1e-5)
    assert interp.fraction_recovered(0.5, 1.0, 0.0) == 0.5


def test_logit_margin():
    logits = torch.zeros(1, 2, 4)
    logits[0, 1] = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert interp.logit_margin(logits, 1, torch.tensor([3])).item() == pytest.approx(6 - 3)
    assert interp.logit_margin(logits, 1, torch.tensor([3]), [0, 1]).item() == pytest.approx(4.5)


def test_sensitivity_finds_the_only_relevant_position(gpt, idx):
    # a metric of the position-3 logits can only depend on inputs 0..3 (causal model)
    def metric(logits):
        return logits[:, 3, 0].mean()

    for mode in ("mask", "replace", "noise"):
        s = interp.token_sensitivity(gpt, idx, metric, mode=mode, mask_token=0)
        assert s.shape == (8,)
        assert s[4:].abs().max() < 1e-6
        assert s[:4].abs().max() > 1e-4


def test_probe_accuracy_separable_and_random():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (400,), generator=g)
    x = torch.randn(400, 5, generator=g)
    x[:, 0] += 4 * y
    assert interp.probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95
    noise = torch.randn(400, 5, generator=g)
    assert interp.probe_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.6


def test_prev_token_scores():
    eye = torch.zeros(1, 2, 4, 4)
    eye[0, 0] = torch.eye(4)
    eye[0, 1, 0, 0] = 1
    eye[0, 1, 1:, :-1] = torch.eye(3)
    assert interp.prev_token_scores(eye).tolist() == [0.0, 1.0]


def test_errors(gpt, idx):
    with pytest.raises(ValueError, match="TinyGPT"):
        interp.run_with_cache(torch.nn.Linear(2, 2), idx)
    with pytest.raises(ValueError, match="residual index"):
        interp.run_with_patches(gpt, idx, resid={(3, None): torch.zeros(1)})
    with pytest.raises(ValueError, match="does not exist"):
        interp.run_with_patches(gpt, idx, heads={(0, 2, None): torch.zeros(1)})
    with pytest.raises(ValueError, match="outside a sequence"):
        interp.run_with_patches(gpt, idx, resid={(0, 9): torch.zeros(1)})
    with pytest.raises(ValueError, match="ablation"):
        interp.ablate_heads(gpt, idx, [(0, 0)], mode="half")
    with pytest.raises(ValueError, match="equal"):
        interp.fraction_recovered(0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        interp.resid_patching_scan(gpt, idx, idx[:, :4], lambda l: l.mean())
    with pytest.raises(ValueError, match="same shape"):
        interp.head_patching_scan(gpt, idx, idx[:2], lambda l: l.mean())
    with pytest.raises(ValueError, match="mode="):
        interp.token_sensitivity(gpt, idx, lambda l: l.mean(), mode="blur")
    with pytest.raises(ValueError, match="mask_token"):
        interp.token_sensitivity(gpt, idx, lambda l: l.mean(), mode="mask")
    with pytest.raises(ValueError, match="n_draws"):
        interp.token_sensitivity(gpt, idx, lambda l: l.mean(), mode="replace", n_draws=0)
    with pytest.raises(ValueError, match="2-D"):
        interp.probe_accuracy(torch.zeros(4), torch.zeros(4), torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="differ in length"):
        interp.probe_accuracy(torch.zeros(4, 1), torch.zeros(3), torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="single class"):
        interp.probe_accuracy(torch.zeros(4, 1), torch.zeros(4), torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="resid"):
        interp.probe_layers({}, {}, torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="batch, heads"):
        interp.prev_token_scores(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch, seq, vocab"):
        interp.logit_margin(torch.zeros(2, 3), 0, torch.zeros(2, dtype=torch.long))
