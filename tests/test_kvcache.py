"""Tests for transformer_challenges.kvcache (chapter "Serving long contexts")."""
import math

import pytest
import sympy as sp
import torch

from transformer_challenges import costs, model
from transformer_challenges import kvcache as kc


# ------------------------------------------------------------------------------------ sizes
def test_kv_bytes_per_token_published_shapes():
    # LLaMA-2 7B (Touvron et al. 2023): 32 layers, d_model 4096, 32 heads, MHA -> 0.5 MiB/token in fp16.
    assert kc.config_kv_bytes_per_token("LLaMA-2 7B") == 2 * 32 * 32 * 128 * 2 == 524288
    # LLaMA-2 70B: 80 layers, 64 heads of 128, 8 KV heads (GQA) -> 320 KiB/token.
    assert kc.config_kv_bytes_per_token("LLaMA-2 70B") == 2 * 80 * 8 * 128 * 2 == 327680
    # GPT-3 175B (Brown et al. 2020): 96 layers, d_model 12288 -> 4.5 MiB/token.
    assert kc.config_kv_bytes_per_token("GPT-3 175B") == 4 * 96 * 12288
    # PaLM 540B (Chowdhery et al. 2023): MQA, one KV head of 256, 118 layers.
    assert kc.config_kv_bytes_per_token("PaLM 540B") == 2 * 118 * 1 * 256 * 2


def test_kv_bytes_matches_costs_and_source_example():
    for name in kc.REAL_CONFIGS:
        if name == "PaLM 540B":     # head_dim 256 != d_model / n_heads: costs.ModelConfig cannot say so
            with pytest.raises(ValueError, match="cannot express"):
                kc.model_config(name)
            continue
        assert costs.kv_cache_bytes(kc.model_config(name), 1, 1) == kc.config_kv_bytes_per_token(name)
    # the source's GPT-3 example: 4 * b * l * h * (s + n) with b=64, s=512, n=32 -> 164,282,499,072 bytes
    assert costs.kv_cache_bytes(kc.model_config("GPT-3 175B"), 64, 512 + 32) == 164_282_499_072


def test_kv_bytes_symbolic_and_errors():
    l, a, d = sp.symbols("l a_kv d", positive=True, integer=True)
    assert sp.simplify(kc.kv_bytes_per_token(l, a, d) - 4 * l * a * d) == 0
    with pytest.raises(ValueError, match="n_layers"):
        kc.kv_bytes_per_token(0, 8, 128)
    with pytest.raises(ValueError, match="bytes_per_value"):
        kc.kv_bytes_per_token(2, 8, 128, bytes_per_value=0)
    with pytest.raises(ValueError, match="unknown configuration"):
        kc.config_kv_bytes_per_token("GPT-5")
    with pytest.raises(ValueError, match="must divide"):
        kc.config_kv_bytes_per_token("LLaMA-2 7B", n_kv_heads=5)
    with pytest.raises(ValueError, match="unknown configuration"):
        kc.model_config("GPT-5")


def test_sliding_window_caps_the_cache_of_one_request():
    # Mistral 7B (Jiang et al. 2023): window W = 4096, so its rolling buffer keeps 4,096 positions;
    # "on a sequence length of 32k tokens, this reduces the cache memory usage by 8x".
    assert kc.config_cached_tokens("Mistral 7B") == 4096                 # trained context 8,192
    assert kc.config_cached_tokens("Mistral 7B", 1000) == 1000
    full = 32768 * kc.config_kv_bytes_per_token("Mistral 7B")
    assert full / kc.config_kv_bytes_per_request("Mistral 7B", 32768) == 8
    # models without a window keep every position
    assert kc.config_cached_tokens("Llama 3 8B") == 131072
    assert kc.config_kv_bytes_per_request("LLaMA-2 7B") == 4096 * 524288
    assert kc.config_kv_bytes_per_request("LLaMA-2 70B", 100, n_kv_heads=64) == 100 * 2 * 80 * 64 * 128 * 2
    with pytest.raises(ValueError, match="seq_len"):
        kc.config_cached_tokens("Mistral 7B", 0)
    with pytest.raises(ValueError, match="unknown configuration"):
        kc.config_kv_bytes_per_request("GPT-5")


# ------------------------------------------------------------------------------ attention
def test_gqa_equals_mha_when_groups_equal_heads():
    torch.manual_seed(0)
    for position in ("none", "rope"):
        mha = model.MultiHeadAttention(32, 4, position=position)
        gqa = kc.GQAttention.from_mha(mha)
        x = torch.randn(2, 9, 32)
        torch.testing.assert_close(gqa(x), mha(x), atol=1e-6, rtol=1e-5)


def test_gqa_matches_explicit_repeated_heads():
    # a GQA layer equals an MHA layer whose K/V heads are copies within each group
    torch.manual_seed(1)
    gqa = kc.GQAttention(32, 8, 2, rope=False)
    x = torch.randn(1, 7, 32)
    q = gqa.q(x).view(1, 7, 8, 4).transpose(1, 2)
    k, v = gqa.kv(x).view(1, 7, 2, 2, 4).permute(2, 0, 3, 1, 4)
    k, v = k[:, [0, 0, 0, 0, 1, 1, 1, 1]], v[:, [0, 0, 0, 0, 1, 1, 1, 1]]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = gqa.proj(ref.transpose(1, 2).reshape(1, 7, 32))
    torch.testing.assert_close(gqa(x), ref, atol=1e-6, rtol=1e-5)
    assert gqa.kv.weight.shape == (2 * 2 * 4, 32)


def test_pool_kv_heads_identity_and_shape():
    torch.manual_seed(2)
    attn = kc.GQAttention(32, 4, 4)
    same = kc.pool_kv_heads(attn, 4)
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(same(x), attn(x))
    assert kc.pool_kv_heads(attn, 1).kv.weight.shape == (2 * 8, 32)
    with pytest.raises(ValueError, match="must divide"):
        kc.pool_kv_heads(attn, 3)


def test_attention_errors():
    with pytest.raises(ValueError, match="n_kv_heads=3 must divide n_heads=4"):
        kc.GQAttention(32, 4, 3)
    with pytest.raises(ValueError, match="not divisible"):
        kc.GQAttention(30, 4)
    with pytest.raises(ValueError, match="impl"):
        kc.GQAttention(32, 4, impl="flash")
    with pytest.raises(ValueError, match="expected input"):
        kc.GQAttention(32, 4)(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="MultiHeadAttention"):
        kc.GQAttention.from_mha(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("n_kv, window", [(4, None), (2, None), (1, None), (2, 5)])
def test_decode_with_cache_equals_recomputation(n_kv, window):
    torch.manual_seed(3)
    m = kc.GQADecoder(kc.GQAConfig(vocab_size=23, d_model=32, n_heads=4, n_kv_heads=n_kv, n_layers=2,
                                   window=window)).eval()
    idx = torch.randint(0, 23, (3, 6))
    a, la = m.generate(idx, 10, use_cache=True)
    b, lb = m.generate(idx, 10, use_cache=False)
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)


def test_sliding_window_cache_is_bounded_and_naive_impl_agrees():
    torch.manual_seed(4)
    cfg = kc.GQAConfig(vocab_size=11, d_model=16, n_heads=2, n_kv_heads=1, n_layers=2, window=4)
    m = kc.GQADecoder(cfg).eval()
    cache = m.new_cache()
    m.generate(torch.randint(0, 11, (2, 3)), 20, cache=cache)
    assert cache.tokens() == 4 and cache.length == 3 + 19
    assert cache.nbytes() == 2 * 2 * (2 * 1 * 4 * 8) * 4     # layers * (K,V) * (B*Hkv*W*d) * fp32
    x = torch.randint(0, 11, (2, 12))
    cfg_naive = kc.GQAConfig(**{**cfg.__dict__, "impl": "naive"})
    m2 = kc.GQADecoder(cfg_naive)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x)[0], m(x)[0], atol=1e-5, rtol=1e-5)


def test_window_mask():
    mask = kc.window_mask(torch.arange(5), torch.arange(5), window=2)
    assert mask.sum().item() == 1 + 2 * 4
    assert not mask[4, 2] and mask[4, 3] and not mask[0, 1]


# --------------------------------------------------------------------------- quantisation
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_roundtrip(bits):
    codes = torch.randint(0, 2 ** bits, (37,), dtype=torch.uint8)
    packed = kc.pack_bits(codes, bits)
    assert packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(kc.unpack_bits(packed, bits, 37), codes)


@pytest.mark.parametrize("axis", ["token", "channel"])
def test_quantize_error_bound_and_bytes(axis):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 40, 16)
    for bits in (8, 4):
        q = kc.quantize(x, bits, axis, group=16)
        y = kc.dequantize(q)
        assert y.shape == x.shape
        # rounding error is at most half a step (plus fp16 rounding of scale and zero point)
        step = (x.amax() - x.amin()) / (2 ** bits - 1)
        assert (y - x).abs().max() <= 0.5 * step * 1.05 + 1e-2
        n_scales = 2 * 3 * (40 if axis == "token" else 3 * 16)
        assert q.nbytes == x.numel() * bits // 8 + 2 * 2 * n_scales
    err8 = (kc.fake_quantize(x, 8, axis) - x).norm()
    err4 = (kc.fake_quantize(x, 4, axis) - x).norm()
    assert err4 > 8 * err8


def test_per_channel_wins_on_outlier_channels():
    # keys with a few large-magnitude channels (Liu et al. 2024): per-channel scales handle them better
    torch.manual_seed(6)
    x = torch.randn(1, 1, 64, 32)
    x[..., 3] *= 20
    x[..., 17] += 15
    normal = [c for c in range(32) if c not in (3, 17)]
    e_tok = (kc.fake_quantize(x, 4, "token") - x)[..., normal].norm()
    e_ch = (kc.fake_quantize(x, 4, "channel") - x)[..., normal].norm()
    assert e_ch < e_tok / 4   # per-token scales are stretched by the outliers for every channel


def test_quantize_errors():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="bits=3"):
        kc.quantize(x, 3)
    with pytest.raises(ValueError, match="axis='head'"):
        kc.quantize(x, 8, "head")
    with pytest.raises(ValueError, match="group"):
        kc.quantize(x, 8, "channel", group=0)
    with pytest.raises(ValueError, match="shape"):
        kc.quantize(torch.randn(5), 8)
    with pytest.raises(ValueError, match="codes must be"):
        kc.pack_bits(torch.tensor([16]), 4)


def test_quantized_cache_decodes_close_to_full_precision():
    torch.manual_seed(7)
    m = kc.GQADecoder(kc.GQAConfig(vocab_size=17, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2)).eval()
    idx = torch.randint(0, 17, (2, 20))
    full, q8 = m.new_cache(), m.new_cache()
    with torch.no_grad():
        m(idx[:, :-1], cache=full)
        m(idx[:, :-1], cache=q8)
        bytes_fp32 = q8.nbytes()
        q8.quantize_(8)
        assert q8.nbytes() < bytes_fp32 / 2.5   # head size 8: scales cost 4 bytes per 8 codes
        a = m(idx[:, -1:], cache=full)[0]
        b = m(idx[:, -1:], cache=q8)[0]
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)
    assert q8.tokens() == 20 and q8.k[0].shape[-2] == 1   # new entry kept in full precision
    with pytest.raises(ValueError, match="empty"):
        m.new_cache().quantize_(8)
    with pytest.raises(ValueError, match="layer=5"):
        full.update(5, torch.zeros(1), torch.zeros(1))


# ------------------------------------------------------------------------ paged allocation
def test_block_allocator_tables_and_waste():
    a = kc.BlockAllocator(num_blocks=8, block_size=4)
    assert a.allocate("x", 5) and a.tables["x"] == [0, 1]
    assert a.allocate("y", 4) and a.tables["y"] == [2]
    for _ in range(3):
        assert a.append_token("x")           # fills block 1
    assert a.lengths["x"] == 8 and a.used_blocks == 3
    assert a.append_token("x") and a.tables["x"] == [0, 1, 3]
    assert a.slot("x", 8) == (3, 0) and a.slot("y", 3) == (2, 3)
    assert a.used_blocks * 4 - a.tokens_stored == 3 + 0   # only x's last block has empty slots
    a.free("x")
    assert len(a.free_blocks) == 7 and not a.allocate("z", 40)
    with pytest.raises(ValueError, match="already holds"):
        a.allocate("y", 1)
    with pytest.raises(ValueError, match="holds no blocks"):
        a.append_token("x")
    with pytest.raises(ValueError, match="position 9"):
        a.slot("y", 9)


def test_gather_paged_equals_contiguous():
    torch.manual_seed(8)
    a = kc.BlockAllocator(num_blocks=6, block_size=4)
    a.allocate("other", 4)
    a.allocate("r", 3)
    for _ in range(7):
        a.append_token("r")
    seq = torch.randn(10, 2, 5)                      # 10 tokens, 2 heads, head size 5
    pool = torch.zeros(6, 4, 2, 5)
    for i in range(10):
        blk, off = a.slot("r", i)
        pool[blk, off] = seq[i]
    assert torch.equal(kc.gather_paged(pool, a.tables["r"], 10), seq)


def test_contiguous_first_fit_and_merge():
    c = kc.ContiguousAllocator(10)
    assert c.allocate(1, 4) and c.allocate(2, 3) and c.allocate(3, 3)
    assert not c.allocate(4, 1)
    c.free(1)
    c.free(3)
    assert c.free_slots == 7 and c.largest_hole == 4 and not c.allocate(5, 5)  # external fragmentation
    c.free(2)
    assert c.free_list == [[0, 10]]
    with pytest.raises(ValueError, match="holds no region"):
        c.free(2)


def test_request_stream_and_simulation():
    reqs = kc.request_stream(300, seed=0, max_len=1024)
    assert reqs == kc.request_stream(300, seed=0, max_len=1024)
    assert all(p >= 1 and o >= 1 and p + o <= 1024 for p, o in reqs)
    stats = {s: kc.simulate_serving(reqs, 8 * 1024, s, max_len=1024) for s in kc.SCHEMES}
    for s in stats.values():
        total = s.token_states + s.reserved + s.internal_frag + s.unused
        assert abs(total - 1) < 1e-9
    # paged: no reservation, waste only in partly filled last blocks (< block_size per request)
    p = stats["paged"]
    assert p.reserved == 0 and p.internal_frag * 8 * 1024 < 16 * p.mean_running
    # max-length reservation: exactly capacity / max_len requests, the worst utilisation
    assert stats["max"].max_running == 8
    assert p.token_states > stats["oracle"].token_states > stats["max"].token_states
    assert p.mean_running > 2 * stats["max"].mean_running and p.steps < stats["max"].steps


def test_simulation_errors():
    with pytest.raises(ValueError, match="scheme"):
        kc.simulate_serving([(1, 1)], 4096, "buddy")
    with pytest.raises(ValueError, match="max_len"):
        kc.simulate_serving([(2000, 100)], 4096, "paged")
    with pytest.raises(ValueError, match="cannot hold"):
        kc.simulate_serving([(10, 10)], 1024, "max")
    with pytest.raises(ValueError, match="watermark"):
        kc.simulate_serving([(10, 10)], 4096, "paged", watermark=1.0)
    with pytest.raises(ValueError, match="medians"):
        kc.request_stream(5, prompt_median=0)
