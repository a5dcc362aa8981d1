"""Tests for transformer_challenges.flash: FlashAttention's tiled forward and its HBM-access counts.

References: PyTorch's ``scaled_dot_product_attention`` for the output, and the closed forms of
Dao et al. 2022 (Algorithm 1 block sizes, Theorem 2 orders) for the counts.
"""
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from transformer_challenges import flash as FL


def qkv(n=45, d=8, b=2, h=3, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, b, h, n, d, generator=gen, dtype=dtype).unbind(0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sram", [8, 100, 256, 5000])
def test_flash_matches_sdpa(causal, sram):
    q, k, v = qkv()
    out, _ = FL.flash_attention_forward(q, k, v, causal=causal, sram=sram)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_standard_matches_sdpa(causal):
    q, k, v = qkv()
    out, _ = FL.standard_attention_forward(q, k, v, causal=causal)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-5)


def test_block_sizes_algorithm_1():
    assert FL.flash_block_sizes(4096, 64) == (16, 16)      # ceil(4096 / 256) = 16 <= d
    assert FL.flash_block_sizes(65536, 64) == (64, 256)    # B_r capped at d
    assert FL.flash_block_sizes(100, 8) == (4, 4)          # ceil(100 / 32) = 4


@pytest.mark.parametrize("n,d,sram", [(45, 8, 8), (45, 8, 100), (64, 16, 1024), (33, 4, 50)])
@pytest.mark.parametrize("causal", [False, True])
def test_counts_match_closed_forms(n, d, sram, causal):
    q, k, v = qkv(n=n, d=d, b=1, h=2)
    _, hbm = FL.flash_attention_forward(q, k, v, causal=causal, sram=sram)
    assert hbm.total == 2 * FL.flash_hbm_accesses(n, d, sram)
    assert hbm.by_tensor["K"] == hbm.by_tensor["V"] == 2 * n * d     # read once each
    _, std = FL.standard_attention_forward(q, k, v, causal=causal)
    assert std.total == 2 * FL.standard_hbm_accesses(n, d)
    assert std.by_tensor["S"] == std.by_tensor["P"] == 2 * 2 * n * n  # written once, read once


def test_symbolic_leading_order_is_theorem_2():
    N, d, M = sp.symbols("N d M", positive=True)
    flash = sp.expand(FL.flash_hbm_accesses(N, d, M, exact_ceil=False))
    assert sp.simplify(sp.limit(flash / (N**2 * d**2 / M), N, sp.oo) - (12 + 16 / d)) == 0
    assert sp.expand(FL.standard_hbm_accesses(N, d)) == 4 * N * d + 4 * N**2
    # the symbolic form evaluates to the integer count when M / 4d and N / B_c divide evenly
    assert FL.flash_hbm_accesses(N, d, M, exact_ceil=False).subs({N: 64, d: 16, M: 1024}) == \
        FL.flash_hbm_accesses(64, 16, 1024)


def test_flash_traffic_below_standard_for_large_n():
    assert FL.flash_hbm_accesses(4096, 64, 25_000) < FL.standard_hbm_accesses(4096, 64)


def test_bad_arguments():
    q, k, v = qkv(n=8, d=4, b=1, h=1)
    with pytest.raises(ValueError, match="sram"):
        FL.flash_attention_forward(q, k, v, sram=2)                 # M < d
    with pytest.raises(ValueError, match="sram"):
        FL.flash_block_sizes(1.5, 4)
    with pytest.raises(ValueError, match="head dimension"):
        FL.flash_block_sizes(64, 0)
    with pytest.raises(ValueError, match="length and width"):
        FL.flash_attention_forward(q, k[..., :5, :], v[..., :5, :])
    with pytest.raises(ValueError, match="positive"):
        FL.flash_hbm_accesses(0, 4, 64)
    with pytest.raises(ValueError, match="positive"):
        FL.standard_hbm_accesses(8, 0)
