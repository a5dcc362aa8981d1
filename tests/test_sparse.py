"""Tests for transformer_challenges.sparse: Sparse Transformer patterns and Reformer's LSH attention.

References: ``naive_attention`` under a mask, PyTorch's ``scaled_dot_product_attention``, and the
pattern definitions of Child et al. 2019 (checked on small hand-countable cases).
"""
import math

import pytest
import torch

from transformer_challenges import attention as A
from transformer_challenges import sparse as SP


def qkv(n=64, d=8, b=2, h=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, b, h, n, d, generator=gen).unbind(0)


def test_strided_mask_by_hand():
    m = SP.strided_mask(8, 3)
    assert m[7].nonzero().flatten().tolist() == [1, 4, 5, 6, 7]      # previous 3 and 7-3, 7-6
    assert m.tril().equal(m)
    sym = SP.strided_mask(8, 3, causal=False)
    assert sym.equal(sym.T) and sym[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 6]


def test_fixed_mask_by_hand():
    m = SP.fixed_mask(8, 4, summary=1)
    assert m[6].nonzero().flatten().tolist() == [3, 4, 5, 6]          # own block 4..6, summary column 3
    assert m[2].nonzero().flatten().tolist() == [0, 1, 2]
    assert SP.fixed_mask(8, 4, summary=2, causal=False)[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 6, 7]


@pytest.mark.parametrize("causal", [False, True])
def test_pattern_attention_matches_naive(causal):
    q, k, v = qkv()
    for mask in (SP.strided_mask(64, 8, causal=causal), SP.fixed_mask(64, 8, 2, causal=causal)):
        assert torch.allclose(SP.pattern_attention(q, k, v, mask),
                              A.naive_attention(q, k, v, attn_bias=mask), atol=1e-5)


def test_lsh_buckets_range_and_angle():
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    b = SP.lsh_buckets(x, 8, n_rounds=3)
    assert b.shape == (3, 50) and b.min() >= 0 and b.max() < 8
    assert SP.lsh_buckets(2.5 * x, 8, 3).equal(b)                      # depends on direction only
    assert SP.lsh_buckets(-x, 8, 1).equal((b[:1] + 4) % 8)             # -x lands in the opposite bucket


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_lsh_attention_is_exact_under_its_mask(causal, rounds):
    q, _, v = qkv()
    kw = dict(n_buckets=4, chunk_size=8, n_rounds=rounds, seed=3)
    mask = SP.lsh_mask(q, causal=causal, **kw)
    out = SP.lsh_attention(q, v, causal=causal, **kw)
    assert torch.allclose(out, SP.shared_qk_attention(q, v, causal=causal, mask=mask), atol=1e-5)


def test_lsh_one_chunk_is_full_attention():
    q, _, v = qkv(n=16)
    out = SP.lsh_attention(q, v, n_buckets=2, chunk_size=16)
    assert torch.allclose(out, SP.shared_qk_attention(q, v), atol=1e-5)


def test_shared_qk_reference():
    q, _, v = qkv(n=16)
    kn = q / q.norm(dim=-1, keepdim=True)
    bias = torch.zeros(16, 16).masked_fill(torch.eye(16, dtype=torch.bool), SP.SELF_SCORE)
    assert torch.allclose(SP.shared_qk_attention(q, v), A.naive_attention(q, kn, v, attn_bias=bias), atol=1e-6)


def test_more_rounds_keep_more_pairs():
    q, _, _ = qkv(n=128, b=1, h=1)
    kept = [int(SP.lsh_mask(q, n_buckets=8, chunk_size=16, n_rounds=r).sum()) for r in (1, 2, 4)]
    assert kept[0] < kept[1] < kept[2]
    assert kept[0] == 16 * (2 * 128 - 16)                              # one round: own + previous chunk


def test_topk_recall():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    mask = torch.tensor([[True, False, True, True]])
    assert SP.topk_recall(scores, mask, 2) == 0.5
    assert SP.topk_recall(scores, torch.ones(1, 4, dtype=torch.bool), 3) == 1.0
    with pytest.raises(ValueError, match="smaller k"):
        SP.topk_recall(scores, mask, 2, candidates=torch.tensor([[True, False, False, False]]))


def test_bad_arguments():
    q, k, v = qkv(n=30)
    with pytest.raises(ValueError, match="not a multiple of chunk_size"):
        SP.lsh_attention(q, v, chunk_size=8)
    with pytest.raises(ValueError, match="even"):
        SP.lsh_attention(q, v, n_buckets=5, chunk_size=10)
    with pytest.raises(ValueError, match="stride"):
        SP.strided_mask(30, 0)
    with pytest.raises(ValueError, match="summary"):
        SP.fixed_mask(30, 4, summary=5)
    with pytest.raises(ValueError, match="boolean"):
        SP.pattern_attention(q, k, v, torch.ones(30, 30))
    with pytest.raises(ValueError, match="at least one key"):
        SP.pattern_attention(q, k, v, torch.zeros(30, 30, dtype=torch.bool))
