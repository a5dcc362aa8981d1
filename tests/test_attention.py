"""Tests for transformer_challenges.attention: every variant against exact softmax attention.

References: ``naive_attention`` (the textbook formula) and PyTorch's
``torch.nn.functional.scaled_dot_product_attention`` with an explicit ``attn_mask``.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from transformer_challenges import attention as A


def qkv(n=37, d=8, dv=None, b=2, h=3, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    dv = d if dv is None else dv
    return (torch.randn(b, h, n, d, generator=gen, dtype=dtype),
            torch.randn(b, h, n, d, generator=gen, dtype=dtype),
            torch.randn(b, h, n, dv, generator=gen, dtype=dtype))


# ---------------------------------------------------------------- exact baselines (Chapter 1)

@pytest.mark.parametrize("causal", [False, True])
def test_naive_matches_sdpa(causal):
    q, k, v = qkv()
    assert torch.allclose(A.naive_attention(q, k, v, causal=causal),
                          A.sdpa_attention(q, k, v, causal=causal), atol=1e-5)


def test_causal_mask_bottom_right():
    m = A.causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


# ---------------------------------------------------------------- sliding window (Longformer)

def test_sliding_window_mask_small():
    m = A.sliding_window_mask(5, 1)
    assert m.sum().item() == 13            # 5 diagonal + 2 * 4 off-diagonal
    m = A.sliding_window_mask(5, 1, causal=True, global_tokens=[4])
    assert m[4].tolist() == [True] * 5 and m[:, 4].tolist() == [False] * 4 + [True]
    assert m[2].tolist() == [False, True, True, False, False]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,window", [(1, 1), (16, 4), (37, 5), (37, 1), (20, 64)])
@pytest.mark.parametrize("glob", [None, 2, [0, 7, 11]])
def test_sliding_window_equals_masked_softmax(causal, n, window, glob):
    if isinstance(glob, list):
        glob = [g for g in glob if g < n]
    if isinstance(glob, int) and glob > n:
        glob = n
    q, k, v = qkv(n=n, dv=5)
    mask = A.sliding_window_mask(n, window, causal=causal, global_tokens=glob)
    out = A.sliding_window_attention(q, k, v, causal=causal, window=window, global_tokens=glob)
    assert torch.allclose(out, A.naive_attention(q, k, v, attn_bias=mask), atol=1e-5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)


def test_sliding_window_memory_is_linear():
    """Saved activations grow linearly in n (the (n, n) score matrix is never stored)."""
    small = A.saved_activation_bytes(A.sliding_window_attention, *qkv(n=256, b=1, h=1), window=16)
    large = A.saved_activation_bytes(A.sliding_window_attention, *qkv(n=1024, b=1, h=1), window=16)
    assert 3.9 < large / small < 4.1
    naive = A.saved_activation_bytes(A.naive_attention, *qkv(n=1024, b=1, h=1))
    assert naive >= 1024 * 1024 * 4 and large < naive / 5


def test_sliding_window_gradients_match():
    q, k, v = (t.requires_grad_(True) for t in qkv(n=23))
    A.sliding_window_attention(q, k, v, causal=True, window=3, global_tokens=1).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    mask = A.sliding_window_mask(23, 3, causal=True, global_tokens=1)
    A.naive_attention(q2, k2, v2, attn_bias=mask).sum().backward()
    for g, t in zip(grads, (q2, k2, v2)):
        assert torch.allclose(g, t.grad, atol=1e-5)


# ---------------------------------------------------------------- BigBird / block sparse

def test_bigbird_layout_structure():
    lay = A.bigbird_layout(8, window_blocks=3, global_blocks=1, random_blocks=1, seed=0)
    assert lay[0].all() and lay[:, 0].all()                          # global block
    assert all(lay[i, j] for i in range(8) for j in range(8) if abs(i - j) <= 1)
    rows = lay[2:-1].sum(dim=1)                                       # interior, non-global rows
    assert (rows == 1 + 3 + 1).all()                                  # global + window + random
    assert torch.equal(lay, A.bigbird_layout(8, seed=0))              # seeded
    causal = A.bigbird_layout(8, causal=True, seed=0)
    assert not causal.triu(1).any()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,bs", [(37, 4), (64, 16), (5, 16), (40, 1)])
@pytest.mark.parametrize("glob,rand", [(1, 1), (0, 2)])
def test_block_sparse_equals_masked_softmax(causal, n, bs, glob, rand):
    q, k, v = qkv(n=n, dv=6)
    nb = -(-n // bs)
    lay = A.bigbird_layout(nb, 3, glob, rand, causal=causal, seed=3)
    mask = A.layout_mask(lay, bs, n, causal=causal)
    out = A.block_sparse_attention(q, k, v, causal=causal, layout=lay, block_size=bs)
    assert torch.allclose(out, A.naive_attention(q, k, v, attn_bias=mask), atol=1e-5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)


def test_bigbird_attention_uses_layout():
    q, k, v = qkv(n=64)
    lay = A.bigbird_layout(4, 3, 1, 1, seed=5)
    assert torch.allclose(A.bigbird_attention(q, k, v, block_size=16, seed=5),
                          A.naive_attention(q, k, v, attn_bias=A.layout_mask(lay, 16, 64)), atol=1e-5)


def test_full_layout_is_exact_attention():
    q, k, v = qkv(n=30)
    lay = torch.ones(4, 4, dtype=torch.bool)
    assert torch.allclose(A.block_sparse_attention(q, k, v, causal=True, layout=lay, block_size=8),
                          A.naive_attention(q, k, v, causal=True), atol=1e-5)


# ---------------------------------------------------------------- Linformer

def test_linformer_identity_projection_is_exact():
    q, k, v = qkv(n=20)
    eye = torch.eye(20)
    assert torch.allclose(A.linformer_attention(q, k, v, proj_k=eye),
                          A.naive_attention(q, k, v), atol=1e-5)


def test_linformer_matches_formula():
    q, k, v = qkv(n=20)
    e = A.linformer_projection(20, 6, seed=1)
    f = A.linformer_projection(20, 6, seed=2)
    ref = torch.softmax(q @ (e @ k).transpose(-2, -1) / math.sqrt(8), dim=-1) @ (f @ v)
    out = A.linformer_attention(q, k, v, proj_k=e, proj_v=f)
    assert out.shape == (2, 3, 20, 8) and torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(A.linformer_attention(q, k, v, rank=6, seed=1),
                          A.linformer_attention(q, k, v, proj_k=e), atol=1e-6)


# ---------------------------------------------------------------- linear attention

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,chunk", [(1, 64), (37, 1), (37, 8), (64, 64), (100, 7)])
def test_linear_attention_equals_quadratic_form(causal, n, chunk):
    q, k, v = qkv(n=n, dv=5, dtype=torch.float64)
    assert torch.allclose(A.linear_attention(q, k, v, causal=causal, chunk_size=chunk),
                          A.linear_attention_quadratic(q, k, v, causal=causal), atol=1e-10)


def test_linear_attention_quadratic_form_by_hand():
    q, k, v = qkv(n=4, b=1, h=1, dtype=torch.float64)
    fq, fk = F.elu(q[0, 0]) + 1, F.elu(k[0, 0]) + 1
    i = 2                                                  # causal row 2: keys 0, 1, 2
    w = torch.stack([fq[i] @ fk[j] for j in range(3)])
    expected = (w[:, None] * v[0, 0, :3]).sum(0) / w.sum()
    assert torch.allclose(A.linear_attention(q, k, v, causal=True)[0, 0, i], expected)


# ---------------------------------------------------------------- Performer

def test_random_features_orthogonal_rows():
    w = A.random_features(16, 16, orthogonal=True, seed=0)
    unit = w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(unit @ unit.T, torch.eye(16), atol=1e-5)
    assert A.random_features(40, 16).shape == (40, 16)


def test_favor_features_estimate_softmax_kernel():
    """E[phi(x) . phi(y)] = exp(x . y): check with many features (Choromanski et al. 2021, Lemma 1)."""
    gen = torch.Generator().manual_seed(0)
    x, y = 0.5 * torch.randn(2, 1, 8, generator=gen, dtype=torch.float64)
    omega = A.random_features(20000, 8, seed=1).double()
    est = (A.favor_features(x, omega, True) * A.favor_features(y, omega, True)).sum()
    # the stabilising shifts scale the estimate; undo them
    shift = (x @ omega.T).max() + (y @ omega.T).max()
    est = est * torch.exp(shift)
    assert abs(est.item() / math.exp((x * y).sum().item()) - 1) < 0.03


def test_performer_error_falls_with_features():
    q, k, v = qkv(n=128, d=16, b=1, h=2, dtype=torch.float64)
    q, k = 0.5 * q, 0.5 * k
    exact = A.naive_attention(q, k, v)
    err = []
    for m in (16, 256, 4096):
        runs = [(A.performer_attention(q, k, v, n_features=m, seed=s) - exact).norm() / exact.norm()
                for s in range(3)]
        err.append(sum(runs) / 3)
    assert err[0] > 2 * err[1] > 4 * err[2]


@pytest.mark.parametrize("causal", [False, True])
def test_performer_equals_its_quadratic_form(causal):
    q, k, v = qkv(n=50, dtype=torch.float64)
    omega = A.random_features(32, 8, seed=0).double()
    s = 8 ** -0.25
    phi = [A.favor_features(q * s, omega, True), A.favor_features(k * s, omega, False)]
    it = iter(phi)
    ref = A.linear_attention_quadratic(q, k, v, causal=causal, feature_map=lambda x: next(it))
    out = A.performer_attention(q, k, v, causal=causal, omega=omega, chunk_size=8)
    assert torch.allclose(out, ref, atol=1e-10)


# ---------------------------------------------------------------- measurement helpers

def test_sdpa_backend_names_a_kernel():
    name = A.sdpa_backend(*qkv(n=16))
    assert "scaled_dot_product" in name


def test_saved_activation_bytes_naive_is_n_squared():
    q, k, v = qkv(n=64, b=1, h=2)
    # naive attention keeps the (b, h, n, n) softmax output and the boolean-free scaled scores path
    got = A.saved_activation_bytes(A.naive_attention, q, k, v)
    assert got == 2 * 64 * 64 * 4
    assert A.saved_activation_bytes(A.sdpa_attention, q, k, v) < got / 4
    with pytest.raises(ValueError, match="attention function"):
        A.saved_activation_bytes(None, q, k, v)


# ---------------------------------------------------------------- argument validation

VARIANTS = [
    (A.sliding_window_attention, {}),
    (A.block_sparse_attention, {}),
    (A.bigbird_attention, {}),
    (A.linformer_attention, {}),
    (A.linear_attention, {}),
    (A.performer_attention, {}),
]


@pytest.mark.parametrize("fn,kw", VARIANTS)
def test_bad_shapes_raise(fn, kw):
    q, k, v = qkv(n=16)
    with pytest.raises(ValueError, match="head"):
        fn(q, k[..., :4], v, **kw)
    with pytest.raises(ValueError, match="positions"):
        fn(q, k, v[..., :8, :], **kw)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_window_raises(bad):
    q, k, v = qkv(n=16)
    with pytest.raises(ValueError, match="window"):
        A.sliding_window_attention(q, k, v, window=bad)
    with pytest.raises(ValueError, match="window"):
        A.sliding_window_mask(16, bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_feature_counts_raise(bad):
    q, k, v = qkv(n=16)
    with pytest.raises(ValueError, match="n_features"):
        A.performer_attention(q, k, v, n_features=bad)
    with pytest.raises(ValueError, match="rank"):
        A.linformer_attention(q, k, v, rank=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        A.linear_attention(q, k, v, chunk_size=bad)
    with pytest.raises(ValueError, match="block_size"):
        A.block_sparse_attention(q, k, v, block_size=bad)


def test_other_validation():
    q, k, v = qkv(n=16)
    with pytest.raises(ValueError, match="self-attention"):
        A.sliding_window_attention(q, k[..., :8, :], v[..., :8, :], window=2)
    with pytest.raises(ValueError, match="causal"):
        A.linformer_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="global"):
        A.sliding_window_attention(q, k, v, window=2, global_tokens=[16])
    with pytest.raises(ValueError, match="itself"):
        A.block_sparse_attention(q, k, v, layout=torch.zeros(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="layout"):
        A.block_sparse_attention(q, k, v, layout=torch.ones(3, 3, dtype=torch.bool), block_size=4)
    with pytest.raises(ValueError, match="proj_k"):
        A.linformer_attention(q, k, v, proj_k=torch.randn(4, 15))
    with pytest.raises(ValueError, match="omega"):
        A.performer_attention(q, k, v, omega=torch.randn(4, 5))
    with pytest.raises(ValueError, match="global_blocks"):
        A.bigbird_layout(2, global_blocks=3)
