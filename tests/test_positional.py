"""Unit tests for transformer_challenges.positional (sinusoidal, RoPE, ALiBi)."""
import math

import pytest
import torch

from transformer_challenges import positional as P


# --- sinusoidal -----------------------------------------------------------------------------

def test_sinusoidal_closed_form():
    # Vaswani et al. 2017, Sec. 3.5: PE(p, 2j) = sin(p / 10000^(2j/d)), PE(p, 2j+1) = cos(...).
    table = P.sinusoidal(50, 128)
    assert table.shape == (50, 128)
    for p, j in [(0, 0), (1, 0), (7, 3), (49, 63), (23, 40)]:
        angle = p / 10000 ** (2 * j / 128)
        assert table[p, 2 * j].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[p, 2 * j + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_relative_rotation():
    # PE(p + k) is a fixed rotation (depending on k only) of PE(p), pair by pair.
    d, k = 16, 5
    table = P.sinusoidal(40, d).double()
    theta = P.rope_angles(d)
    for p in (0, 3, 20):
        for j in range(d // 2):
            c, s = math.cos(k * theta[j]), math.sin(k * theta[j])
            sin_p, cos_p = table[p, 2 * j], table[p, 2 * j + 1]
            assert table[p + k, 2 * j].item() == pytest.approx((c * sin_p + s * cos_p).item(), abs=1e-6)
            assert table[p + k, 2 * j + 1].item() == pytest.approx((c * cos_p - s * sin_p).item(), abs=1e-6)


def test_sinusoidal_odd_d_and_errors():
    assert P.sinusoidal(3, 5).shape == (3, 5)
    with pytest.raises(ValueError, match="n_positions"):
        P.sinusoidal(0, 8)
    with pytest.raises(ValueError, match="d must"):
        P.sinusoidal(4, 0)
    with pytest.raises(ValueError, match="base"):
        P.sinusoidal(4, 8, base=-1.0)


def test_sinusoidal_2d_rows_and_columns():
    t = P.sinusoidal_2d(3, 4, 16)
    assert t.shape == (12, 16)
    row, col = P.sinusoidal(3, 8), P.sinusoidal(4, 8)
    for r in range(3):
        for c in range(4):
            torch.testing.assert_close(t[4 * r + c], torch.cat([row[r], col[c]]))
    with pytest.raises(ValueError, match="divisible by 4"):
        P.sinusoidal_2d(2, 2, 6)


# --- RoPE -----------------------------------------------------------------------------------

def _rope_complex(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Reference: view pairs as complex numbers and multiply by exp(i p theta_i) (Su et al. 2024)."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())
    z = z * torch.exp(1j * pos.double()[:, None] * theta)
    return torch.stack([z.real, z.imag], dim=-1).reshape(x.shape)


def test_rope_matches_complex_multiplication():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 32, generator=gen, dtype=torch.float64)
    pos = torch.arange(10) * 7
    torch.testing.assert_close(P.apply_rope(x, pos), _rope_complex(x, pos))
    torch.testing.assert_close(P.apply_rope(x, pos, base=500000.0), _rope_complex(x, pos, 500000.0))


def test_rope_preserves_norm_and_is_relative():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 64, generator=gen, dtype=torch.float64)
    # <R_m q, R_n k> depends on m - n only, and equals Re sum_i q_i conj(k_i) e^{i (m-n) theta_i}.
    qc = torch.complex(q[0::2], q[1::2])
    kc = torch.complex(k[0::2], k[1::2])
    theta = P.rope_angles(64)
    for m, n in [(0, 0), (5, 2), (103, 100), (40, 77), (1000, 997)]:
        rq = P.apply_rope(q[None], torch.tensor([m]))[0]
        rk = P.apply_rope(k[None], torch.tensor([n]))[0]
        direct = (qc * kc.conj() * torch.exp(1j * (m - n) * theta)).sum().real
        assert (rq @ rk).item() == pytest.approx(direct.item(), abs=1e-9)
        assert rq.norm().item() == pytest.approx(q.norm().item(), rel=1e-12)
    a = P.apply_rope(q[None], torch.tensor([5]))[0] @ P.apply_rope(k[None], torch.tensor([2]))[0]
    b = P.apply_rope(q[None], torch.tensor([103]))[0] @ P.apply_rope(k[None], torch.tensor([100]))[0]
    assert a.item() == pytest.approx(b.item(), abs=1e-9)


def test_rope_interleaved_equals_rotate_half_under_permutation():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 12, 16, generator=gen)
    pos = torch.arange(12)
    perm = P.rope_half_permutation(16)
    assert perm.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]
    torch.testing.assert_close(P.apply_rope_half(x[..., perm], pos), P.apply_rope(x, pos)[..., perm])
    # Without the permutation the two conventions differ (the test can fail).
    assert not torch.allclose(P.apply_rope_half(x, pos), P.apply_rope(x, pos))


def test_rope_errors():
    with pytest.raises(ValueError, match="even"):
        P.apply_rope(torch.zeros(4, 7), torch.arange(4))
    with pytest.raises(ValueError, match="positions"):
        P.apply_rope(torch.zeros(4, 8), torch.arange(5))
    with pytest.raises(ValueError, match="base"):
        P.rope_angles(8, base=0.0)
    with pytest.raises(ValueError, match="even"):
        P.rope_half_permutation(5)


def test_rope_decay_curve_values():
    d = 128
    curve = P.rope_decay_curve(d, 256)
    assert curve.shape == (257,)
    # At m = 0 every term is 1, |S_j| = j, the mean of 1..d/2 is (d/2 + 1)/2 = 32.5.
    assert curve[0].item() == pytest.approx((d / 2 + 1) / 2)
    # Direct double loop, with the source's Mathematica indexing (i = 0..j, j = 0..d/2-1).
    theta = [10000 ** (-2 * i / d) for i in range(d // 2)]
    for m in (1, 17, 256):
        f = sum(abs(sum(complex(math.cos(m * theta[i]), math.sin(m * theta[i])) for i in range(j + 1)))
                for j in range(d // 2)) / (d / 2)
        assert curve[m].item() == pytest.approx(f, rel=1e-10)
    assert curve[256] < 0.5 * curve[0]   # the long-range decay the source plots


def test_rope_decay_curve_errors():
    with pytest.raises(ValueError, match="max_distance"):
        P.rope_decay_curve(128, -1)
    with pytest.raises(ValueError, match="even"):
        P.rope_decay_curve(127, 10)


def test_rope_abel_bound_bounds_the_inner_product():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(500, 64, generator=gen, dtype=torch.float64)
    k = torch.randn(500, 64, generator=gen, dtype=torch.float64)
    for m, n in [(0, 0), (9, 3), (3, 9), (200, 0)]:
        rq = P.apply_rope(q[:, None], torch.tensor([m]))[:, 0]
        rk = P.apply_rope(k[:, None], torch.tensor([n]))[:, 0]
        inner = (rq * rk).sum(-1).abs()
        bound = P.rope_abel_bound(q, k, m - n)
        assert bool((inner <= bound + 1e-9).all())
    # h_{d/2} = 0 matters: for q = k = e_{d-2} only the last pair is non-zero, |h_{d/2-1}| = 1,
    # so the bound must still be at least |<q, k>| = 1 at distance 0.
    e = torch.zeros(1, 64, dtype=torch.float64)
    e[0, 62] = 1.0
    assert P.rope_abel_bound(e, e, 0).item() >= 1.0
    with pytest.raises(ValueError, match="same shape"):
        P.rope_abel_bound(q, k[:, :32], 0)


# --- ALiBi ----------------------------------------------------------------------------------

def test_alibi_slopes_power_of_two():
    # Press et al. 2022, Sec. 3: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    assert P.alibi_slopes(8).tolist() == pytest.approx([2.0 ** -k for k in range(1, 9)])
    # 16 heads: the geometric sequence starting at 2^-0.5 with ratio 2^-0.5.
    assert P.alibi_slopes(16).tolist() == pytest.approx([2.0 ** (-0.5 * k) for k in range(1, 17)])


def test_alibi_slopes_non_power_of_two():
    # Press et al.'s code (ofirpress/attention_with_linear_biases, get_slopes): the 8 slopes of 8 heads,
    # then every other slope of 16 heads: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    expected = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    assert P.alibi_slopes(12).tolist() == pytest.approx(expected)
    assert P.alibi_slopes(1).tolist() == pytest.approx([2.0 ** -8])


def test_alibi_bias_matrix():
    bias = P.alibi_bias(8, 5)
    assert bias.shape == (8, 5, 5) and bias.dtype == torch.float32
    slopes = P.alibi_slopes(8)
    for h in (0, 7):
        for i, j in [(0, 0), (4, 1), (1, 4), (3, 0)]:
            assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(i - j))


def test_alibi_errors():
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="n_heads"):
            P.alibi_slopes(bad)
    with pytest.raises(ValueError, match="seq_len"):
        P.alibi_bias(4, 0)


# --- relative position bias (T5 buckets) ----------------------------------------------------

def test_relative_position_buckets_hand_computed():
    # Causal, 8 buckets, max_distance 20: distances 0..3 exact (max_exact = 4); above, bucket
    # 4 + floor(log(dist / 4) / log(20 / 4) * 4), capped at 7. By hand: dist 5 -> 4 + floor(0.55),
    # 6 -> 4 + floor(1.008), 8 -> 4 + floor(1.72), 9 -> 4 + floor(2.015), 13 -> 4 + floor(2.93),
    # 14 -> 4 + floor(3.11); 20 and beyond -> 4 + 4 capped at 7.
    expected = [0, 1, 2, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]
    b = P.relative_position_buckets(25, 25, num_buckets=8, max_distance=20)
    assert b[:, 0].tolist() == expected                     # query i, key 0: distance i
    assert b[24].flip(0).tolist() == expected               # query 24, key 24 - dist
    assert (b.triu(1) == 0).all()                           # causal: keys after the query -> bucket 0
    # A function of the offset only: constant along every diagonal.
    assert all(b.diagonal(-k).unique().numel() == 1 for k in range(25))


def test_relative_position_buckets_bidirectional():
    # 8 buckets -> 4 per direction, max_exact 2; keys after the query are offset by 4.
    b = P.relative_position_buckets(4, 4, num_buckets=8, max_distance=20, bidirectional=True)
    assert b.tolist() == [[0, 5, 6, 6], [1, 0, 5, 6], [2, 1, 0, 5], [2, 2, 1, 0]]


def test_relative_position_bias_table_lookup():
    rel = P.RelativePositionBias(n_heads=2, num_buckets=8, max_distance=20)
    assert torch.count_nonzero(rel(5)) == 0                 # starts at zero
    with torch.no_grad():
        rel.table.copy_(torch.arange(16.0).reshape(8, 2))   # bucket b, head h -> 2b + h
    bias = rel(25)
    assert bias.shape == (2, 25, 25)
    buckets = P.relative_position_buckets(25, 25, 8, 20)
    assert torch.equal(bias[0], 2.0 * buckets) and torch.equal(bias[1], 2.0 * buckets + 1)
    assert bias[1, 24, 0].item() == 15.0                    # distance 24 -> last bucket 7 -> 2*7 + 1
    bias.sum().backward()                                   # learned: gradients reach the table
    assert rel.table.grad is not None and rel.table.grad.abs().sum() > 0


def test_relative_position_buckets_errors():
    with pytest.raises(ValueError, match="num_buckets"):
        P.relative_position_buckets(4, 4, num_buckets=1)
    with pytest.raises(ValueError, match="max_distance"):
        P.relative_position_buckets(4, 4, num_buckets=8, max_distance=4)
    with pytest.raises(ValueError, match="bidirectional"):
        P.relative_position_buckets(4, 4, num_buckets=2, bidirectional=True)
    with pytest.raises(ValueError, match="n_heads"):
        P.RelativePositionBias(0)
