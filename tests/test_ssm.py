"""Tests for transformer_challenges.ssm (the outlook chapter's selective scan)."""
import pytest
import sympy as sp
import torch

from transformer_challenges import ssm


def _inputs(b=2, L=37, d=5, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, L, d, generator=g, dtype=torch.float64)
    delta = torch.nn.functional.softplus(torch.randn(b, L, d, generator=g, dtype=torch.float64))
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3
    B = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    D = torch.randn(d, generator=g, dtype=torch.float64)
    return u, delta, A, B, C, D


def _reference(u, delta, A, B, C, D):
    """Scalar loops straight from the definition (Gu & Dao 2023, Algorithm 2)."""
    b, L, d = u.shape
    n = A.shape[1]
    y = torch.zeros_like(u)
    for i in range(b):
        for c in range(d):
            h = [0.0] * n
            for t in range(L):
                acc = 0.0
                for s in range(n):
                    h[s] = torch.exp(delta[i, t, c] * A[c, s]) * h[s] + delta[i, t, c] * B[i, t, s] * u[i, t, c]
                    acc = acc + C[i, t, s] * h[s]
                y[i, t, c] = acc + D[c] * u[i, t, c]
    return y


def test_recurrent_matches_scalar_reference():
    args = _inputs(b=1, L=9, d=3, n=2)
    torch.testing.assert_close(ssm.selective_scan_recurrent(*args), _reference(*args))


@pytest.mark.parametrize("L", [1, 2, 7, 37, 64])
def test_parallel_equals_recurrent(L):
    args = _inputs(L=L)
    torch.testing.assert_close(ssm.selective_scan_parallel(*args), ssm.selective_scan_recurrent(*args))


def test_associative_scan_matches_loop_on_other_dim():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 11, generator=g), torch.randn(3, 11, generator=g)
    h, ref = torch.zeros(3), []
    for t in range(11):
        h = a[:, t] * h + b[:, t]
        ref.append(h)
    torch.testing.assert_close(ssm.associative_scan(a.T.contiguous(), b.T.contiguous(), dim=0),
                               torch.stack(ref, 1).T)


def test_layer_modes_and_decoding_step_agree():
    torch.manual_seed(0)
    layer = ssm.SelectiveSSM(d_model=16, d_state=4)
    x = torch.randn(2, 20, 16)
    y_par, y_rec = layer(x, mode="parallel"), layer(x, mode="recurrent")
    torch.testing.assert_close(y_par, y_rec, atol=1e-5, rtol=1e-5)
    h, ys = None, []
    for t in range(20):
        y, h = layer.step(x[:, t], h)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), y_rec, atol=1e-5, rtol=1e-5)
    assert h.shape == (2, 16, 4)          # the state does not grow with the sequence
    assert (layer.A < 0).all()


def test_delta_init_range():
    torch.manual_seed(0)
    layer = ssm.SelectiveSSM(d_model=64, dt_min=1e-3, dt_max=1e-1)
    dt = torch.nn.functional.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 1e-1 + 1e-7


def test_scan_flops_matches_counted_ops():
    args = [t.float() for t in _inputs(b=2, L=13, d=6, n=5)]
    counted = ssm.count_elementwise_flops(ssm.selective_scan_recurrent, *args)
    assert counted == ssm.scan_flops(13, 6, 5, batch=2) == 2 * 13 * 6 * (7 * 5 + 2)


def test_attention_core_flops_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from transformer_challenges.attention import naive_attention
    q = k = v = torch.randn(2, 4, 32, 8)                     # batch 2, 4 heads of 8: d_model = 32
    with FlopCounterMode(display=False) as fc:
        naive_attention(q, k, v, causal=True)
    assert fc.get_total_flops() == ssm.attention_core_flops(32, 32, batch=2)


def test_formulas_accept_sympy():
    L, d, n = sp.symbols("L d n", positive=True)
    assert sp.simplify(ssm.scan_flops(L, d, n) - L * d * (7 * n + 2)) == 0
    ratio = sp.simplify(ssm.attention_core_flops(L, d) / ssm.scan_flops(L, d, n))
    assert sp.simplify(ratio - 4 * L / (7 * n + 2)) == 0


def test_saved_tensor_bytes_counts_attention_scores():
    from transformer_challenges.attention import naive_attention
    q, k, v = (torch.randn(1, 1, 64, 8, requires_grad=True) for _ in range(3))
    small = ssm.saved_tensor_bytes(naive_attention, q, k, v)
    q2, k2, v2 = (torch.randn(1, 1, 128, 8, requires_grad=True) for _ in range(3))
    big = ssm.saved_tensor_bytes(naive_attention, q2, k2, v2)
    assert small >= 64 * 64 * 4 and big > 3 * small        # the n x n weights dominate: ~4x


@pytest.mark.parametrize("kwargs, match", [
    (dict(d_model=0), "d_model"),
    (dict(d_model=8, d_state=-1), "d_state"),
    (dict(d_model=8, dt_min=0.1, dt_max=0.01), "dt_min"),
    (dict(d_model=8, dt_rank=0), "dt_rank"),
])
def test_layer_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssm.SelectiveSSM(**kwargs)


def test_forward_and_step_validation():
    layer = ssm.SelectiveSSM(d_model=8, d_state=2)
    with pytest.raises(ValueError, match="mode"):
        layer(torch.randn(1, 3, 8), mode="fast")
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(1, 3, 7))
    with pytest.raises(ValueError, match="x_t"):
        layer.step(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="h must be"):
        layer.step(torch.randn(1, 8), torch.zeros(1, 8, 3))


def test_scan_input_validation():
    u, delta, A, B, C, D = _inputs(L=5)
    with pytest.raises(ValueError, match="u must be"):
        ssm.selective_scan_recurrent(u[0], delta, A, B, C, D)
    with pytest.raises(ValueError, match="delta"):
        ssm.selective_scan_parallel(u, delta[:, :4], A, B, C, D)
    with pytest.raises(ValueError, match="A must be"):
        ssm.selective_scan_parallel(u, delta, A.T, B, C, D)
    with pytest.raises(ValueError, match="C must be"):
        ssm.selective_scan_parallel(u, delta, A, B, C[:, :, :1], D)
    with pytest.raises(ValueError, match="D must be"):
        ssm.selective_scan_parallel(u, delta, A, B, C, D[:2])
    with pytest.raises(ValueError, match="same shape"):
        ssm.associative_scan(torch.ones(3), torch.ones(4), dim=0)
    with pytest.raises(ValueError, match="out of range"):
        ssm.associative_scan(torch.ones(3), torch.ones(3), dim=2)


def test_formula_and_counter_validation():
    with pytest.raises(ValueError, match="seq_len"):
        ssm.scan_flops(0, 4, 4)
    with pytest.raises(ValueError, match="d_model"):
        ssm.attention_core_flops(8, -1)
    with pytest.raises(ValueError, match="callable"):
        ssm.count_elementwise_flops(3)
    with pytest.raises(ValueError, match="callable"):
        ssm.saved_tensor_bytes(None)
