"""Chapter 1's building blocks, checked against PyTorch references and hand computation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from transformer_challenges import model
from transformer_challenges.attention import causal_mask, naive_attention, sdpa_attention


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("causal", [False, True])
def test_naive_attention_matches_sdpa(causal):
    q, k, v = torch.randn(3, 2, 3, 10, 8).unbind(0)
    torch.testing.assert_close(naive_attention(q, k, v, causal=causal),
                               F.scaled_dot_product_attention(q, k, v, is_causal=causal))


def test_sdpa_attention_aligns_causal_mask_bottom_right_for_decoding():
    q, k, v = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    full = sdpa_attention(q, k, v, causal=True)
    last = sdpa_attention(q[:, :, -1:], k, v, causal=True)   # one query sees every key
    torch.testing.assert_close(last, full[:, :, -1:])
    torch.testing.assert_close(naive_attention(q[:, :, -2:], k, v, causal=True), full[:, :, -2:])


def test_attention_bias_and_mask_paths_agree():
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    keep = torch.rand(5, 5) > 0.3
    keep |= torch.eye(5, dtype=torch.bool)
    additive = torch.zeros(5, 5).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(naive_attention(q, k, v, attn_bias=keep),
                               sdpa_attention(q, k, v, attn_bias=additive))
    torch.testing.assert_close(naive_attention(q, k, v, causal=True, attn_bias=keep),
                               sdpa_attention(q, k, v, causal=True, attn_bias=keep))


def test_causal_mask_shape_and_diagonal():
    m = causal_mask(3, 5)
    assert m.shape == (3, 5) and m[0].tolist() == [True, True, True, False, False]


def test_attention_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="last \\(head\\) dimension"):
        naive_attention(torch.randn(2, 4, 8), torch.randn(2, 4, 6), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="same number of positions"):
        sdpa_attention(torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 5, 8))


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
def test_multihead_attention_matches_torch_reference(impl, causal):
    d, h, n = 32, 4, 7
    ours = model.MultiHeadAttention(d, h, impl=impl, causal=causal)
    ref = nn.MultiheadAttention(d, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, n, d)
    mask = ~causal_mask(n, n) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_store_weights_gives_row_stochastic_causal_maps():
    mha = model.MultiHeadAttention(16, 2, impl="sdpa")
    mha.store_weights = True
    mha(torch.randn(1, 5, 16))
    w = mha.last_weights
    assert w.shape == (1, 2, 5, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 5))
    assert torch.all(w.triu(1) == 0)


@pytest.mark.parametrize("d_model, n_heads", [(64, 5), (10, 4)])
def test_heads_must_divide_width(d_model, n_heads):
    with pytest.raises(ValueError, match=f"d_model={d_model} is not divisible by n_heads={n_heads}"):
        model.MultiHeadAttention(d_model, n_heads)
    with pytest.raises(ValueError, match="not divisible"):
        model.GPTConfig(vocab_size=10, seq_len=8, d_model=d_model, n_heads=n_heads)


@pytest.mark.parametrize("kwargs, message", [
    (dict(impl="flash"), "impl='flash'"),
    (dict(position="xpos"), "position='xpos'"),
])
def test_attention_rejects_unknown_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.MultiHeadAttention(16, 2, **kwargs)


def test_pre_and_post_ln_wiring_match_their_formulas():
    x = torch.randn(2, 6, 16)
    for norm in ("pre", "post"):
        blk = model.Block(16, 2, norm=norm)
        if norm == "pre":
            h = x + blk.attn(blk.ln1(x))
            expected = h + blk.ffn(blk.ln2(h))
        else:
            h = blk.ln1(x + blk.attn(x))
            expected = blk.ln2(h + blk.ffn(h))
        torch.testing.assert_close(blk(x), expected)
    with pytest.raises(ValueError, match="norm='mid'"):
        model.Block(16, 2, norm="mid")
    with pytest.raises(ValueError, match="residual_scale"):
        model.Block(16, 2, residual_scale=0)


def test_moe_with_one_expert_is_that_ffn():
    moe = model.MoEFeedForward(16, 32, n_experts=1, top_k=1)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(moe(x), moe.experts[0](x))


def test_moe_matches_dense_mixture_of_its_topk_experts():
    moe = model.MoEFeedForward(8, 16, n_experts=4, top_k=2)
    x = torch.randn(10, 8)
    probs = torch.softmax(moe.router(x), -1)
    top_p, top_i = probs.topk(2, -1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    expected = torch.stack([
        sum(gates[t, s] * moe.experts[int(top_i[t, s])](x[t]) for s in range(2)) for t in range(10)
    ])
    torch.testing.assert_close(moe(x), expected)
    assert int(moe.last_counts.sum()) == 10 * 2


def test_moe_flops_grow_with_top_k_not_experts():
    x = torch.randn(4, 16, 32)

    def flops(layer):
        with FlopCounterMode(display=False) as fc:
            layer(x)
        return fc.get_total_flops()

    dense = flops(model.FeedForward(32, 128))
    router = 2 * x.numel() * 8                # the router's (tokens x d) @ (d x E) product, E = 8
    assert flops(model.MoEFeedForward(32, 128, 8, top_k=1)) == dense + router
    assert flops(model.MoEFeedForward(32, 128, 8, top_k=2)) == 2 * dense + router


def test_moe_balance_loss_is_one_for_a_uniform_router_and_rejects_bad_top_k():
    moe = model.MoEFeedForward(8, 16, n_experts=4, top_k=2)
    with torch.no_grad():
        moe.router.weight.zero_()
    moe(torch.randn(20, 8))
    assert moe.aux_loss.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="top_k=5 is larger than n_experts=4"):
        model.MoEFeedForward(8, 16, n_experts=4, top_k=5)


def _gpt(**kw):
    cfg = dict(vocab_size=11, seq_len=16, d_model=32, n_heads=4, n_layers=2)
    cfg.update(kw)
    return model.TinyGPT(model.GPTConfig(**cfg))


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_tiny_gpt_is_causal_for_every_position_scheme(position):
    gpt = _gpt(position=position)
    idx = torch.randint(0, 11, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    a, b = gpt(idx)[0], gpt(changed)[0]
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_tiny_gpt_initial_loss_is_near_uniform_and_ties_weights():
    gpt = _gpt()
    idx, targets = torch.randint(0, 11, (2, 4, 16))
    _, loss = gpt(idx, targets)
    assert abs(loss.item() - math.log(11)) < 0.1
    assert gpt.head.weight is gpt.tok_emb.weight


def test_tiny_gpt_rejects_too_long_input_for_tables_but_not_for_rope():
    with pytest.raises(ValueError, match="longer than seq_len=16"):
        _gpt(position="learned")(torch.zeros(1, 17, dtype=torch.long))
    assert _gpt(position="rope")(torch.zeros(1, 40, dtype=torch.long))[0].shape == (1, 40, 11)


def test_generate_is_deterministic_and_greedy_mode_works():
    gpt = _gpt()
    start = torch.zeros(1, 1, dtype=torch.long)
    a = gpt.generate(start, 10, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = gpt.generate(start, 10, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 11)
    greedy = gpt.generate(start, 5, temperature=0)
    assert torch.equal(greedy, gpt.generate(start, 5, temperature=0))
    with pytest.raises(ValueError, match="temperature"):
        gpt.generate(start, 5, temperature=-1)


def test_moe_gpt_reports_aux_loss():
    gpt = _gpt(n_experts=4, top_k=2)
    gpt(torch.randint(0, 11, (2, 8)))
    assert gpt.aux_loss().item() > 0
    assert _gpt().aux_loss().item() == 0
    with pytest.raises(ValueError, match="top_k=5 > n_experts=4"):
        model.GPTConfig(vocab_size=11, seq_len=8, n_experts=4, top_k=5)
