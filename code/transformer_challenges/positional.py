"""Position information: sinusoidal tables (1D and 2D), RoPE, ALiBi (used by Chapter 1's model
slot, the position chapter ``ch-position`` and the tiny ViT of ``vision.py``).

Conventions: ``sinusoidal`` puts sin on even and cos on odd dimensions (Vaswani et al. 2017);
``apply_rope`` rotates interleaved pairs (x[2i], x[2i+1]) by angle p * theta_i with
theta_i = base^(-2i/d) (Su et al. 2024); ``apply_rope_half`` is the same rotation in the
"rotate-half" layout (pairs (x[i], x[i + d/2]), GPT-NeoX / LLaMA code), equal to ``apply_rope`` up
to the fixed permutation ``rope_half_permutation``; ``alibi_bias`` is -slope_h * |i - j|
(Press et al. 2022); ``relative_position_buckets`` and ``RelativePositionBias`` are T5's learned
bias per head and bucketed relative distance (Raffel et al. 2020; Shaw et al. 2018 for the clipping).
"""
from __future__ import annotations

import math

import torch


def _check_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def sinusoidal(n_positions: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """(n_positions, d) table: PE[p, 2j] = sin(p / base^(2j/d)), PE[p, 2j+1] = cos(same)."""
    _check_int("n_positions", n_positions)
    _check_int("d", d)
    if base <= 0:
        raise ValueError(f"base must be > 0, got {base}; the usual value is 10000.")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_j = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / base ** (two_j / d)
    table = torch.zeros(n_positions, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d // 2])
    return table.float()


def sinusoidal_2d(rows: int, cols: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """(rows * cols, d) table for a row-major grid: the first d/2 dims are ``sinusoidal`` of the row,
    the last d/2 of the column (the 2D scheme of e.g. MAE / DETR-style ViTs)."""
    _check_int("rows", rows)
    _check_int("cols", cols)
    _check_int("d", d)
    if d % 4:
        raise ValueError(f"2D sinusoidal encoding needs d divisible by 4 (sin/cos pairs for rows and "
                         f"columns), got d={d}; use d={d + (4 - d % 4)}.")
    row = sinusoidal(rows, d // 2, base)                         # (rows, d/2)
    col = sinusoidal(cols, d // 2, base)                         # (cols, d/2)
    return torch.cat([row[:, None, :].expand(rows, cols, d // 2),
                      col[None, :, :].expand(rows, cols, d // 2)], dim=-1).reshape(rows * cols, d)


def rope_angles(d: int, base: float = 10000.0) -> torch.Tensor:
    """The d/2 rotation frequencies theta_i = base^(-2i/d), i = 0 .. d/2 - 1 (float64)."""
    _check_int("d", d, 2)
    if d % 2:
        raise ValueError(f"RoPE needs an even dimension, got d={d}; use d={d + 1} or d={d - 1}.")
    if not base > 0:
        raise ValueError(f"base must be > 0, got {base}; the usual value is 10000.")
    return base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) of ``x`` (..., seq, d) by positions * theta_i."""
    cos, sin = _rope_cos_sin(x, positions, base)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def _rope_cos_sin(x: torch.Tensor, positions, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[-1]
    theta = rope_angles(d, base).to(x.device)
    positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() == 0 or positions.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"positions has shape {tuple(positions.shape)} but x has {x.shape[-2]} positions; "
            "pass one position per sequence element."
        )
    angle = positions.to(torch.float64)[..., None] * theta      # (..., seq, d/2)
    return torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)


def apply_rope_half(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE in the rotate-half layout: rotate each pair (x[..., i], x[..., i + d/2]) by positions * theta_i."""
    cos, sin = _rope_cos_sin(x, positions, base)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rope_half_permutation(d: int) -> torch.Tensor:
    """Index map P with apply_rope_half(x[..., P]) == apply_rope(x)[..., P]: even dims first, then odd."""
    rope_angles(d)  # validates d
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def rope_decay_curve(d: int, max_distance: int, base: float = 10000.0) -> torch.Tensor:
    """(1/(d/2)) * sum_{j=1}^{d/2} |S_j(m)|, S_j(m) = sum_{i<j} exp(i m theta_i), for m = 0..max_distance."""
    _check_int("max_distance", max_distance, 0)
    theta = rope_angles(d, base)
    m = torch.arange(max_distance + 1, dtype=torch.float64)[:, None]
    partial = torch.cumsum(torch.exp(1j * m * theta), dim=-1)   # column j-1 holds S_j
    return partial.abs().mean(dim=-1)


def rope_abel_bound(q: torch.Tensor, k: torch.Tensor, distance: int, base: float = 10000.0) -> torch.Tensor:
    """Su's bound on |<R_m q, R_n k>| for m - n = ``distance``: max_i |h_{i+1} - h_i| * sum_j |S_j|,
    with h_i = q_[2i:2i+1] conj(k_[2i:2i+1]) as complex numbers and h_{d/2} = 0. q, k: (..., d)."""
    if not isinstance(distance, int) or isinstance(distance, bool):
        raise ValueError(f"distance must be an integer m - n, got {distance!r}.")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}.")
    d = q.shape[-1]
    theta = rope_angles(d, base)
    qc = torch.complex(q[..., 0::2].double(), q[..., 1::2].double())
    kc = torch.complex(k[..., 0::2].double(), k[..., 1::2].double())
    h = qc * kc.conj()                                               # (..., d/2)
    h_next = torch.cat([h[..., 1:], torch.zeros_like(h[..., :1])], dim=-1)   # h_{i+1}, h_{d/2} = 0
    partial_sums = torch.cumsum(torch.exp(1j * distance * theta), dim=-1)   # S_1 .. S_{d/2}
    return (h_next - h).abs().amax(dim=-1) * partial_sums.abs().sum()


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Head slopes of ALiBi: 2^(-8/n), 2^(-16/n), ... for n a power of two; for other n, the
    slopes of the nearest lower power of two followed by every other slope of the next one."""
    _check_int("n_heads", n_heads)

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, seq_len: int) -> torch.Tensor:
    """(n_heads, seq_len, seq_len) additive bias -slope_h * |i - j| for query i and key j."""
    _check_int("seq_len", seq_len)
    slopes = alibi_slopes(n_heads)
    pos = torch.arange(seq_len)
    dist = (pos[:, None] - pos[None, :]).abs().float()
    return -slopes[:, None, None] * dist


def relative_position_buckets(n_queries: int, n_keys: int, num_buckets: int = 32, max_distance: int = 128,
                              bidirectional: bool = False) -> torch.Tensor:
    """(n_queries, n_keys) bucket index of each query-key offset, T5's scheme (Raffel et al. 2020).

    The offset is key - query. Causal (``bidirectional=False``): distance = max(query - key, 0);
    distances below ``num_buckets // 2`` get a bucket each (Shaw et al. 2018's clipped relative
    positions, exact part); larger ones share log-spaced buckets up to ``max_distance``, and every
    distance >= ``max_distance`` falls into the last bucket ``num_buckets - 1``. Bidirectional: half
    of the buckets for keys after the query, half for keys before it. Computed in float64, so the
    rounding at bucket boundaries does not depend on the device.
    """
    _check_int("n_queries", n_queries)
    _check_int("n_keys", n_keys)
    _check_int("num_buckets", num_buckets, 2)
    if bidirectional and num_buckets < 4:
        raise ValueError(f"bidirectional buckets need num_buckets >= 4 (two halves of >= 2), got {num_buckets}.")
    offset = torch.arange(n_keys)[None, :] - torch.arange(n_queries)[:, None]   # key - query
    buckets = torch.zeros_like(offset)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (offset > 0).long() * num_buckets
        distance = offset.abs()
    else:
        distance = (-offset).clamp(min=0)
    max_exact = num_buckets // 2
    _check_int("max_distance", max_distance, max_exact + 1)
    large = max_exact + (torch.log(distance.double().clamp(min=1) / max_exact)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class RelativePositionBias(torch.nn.Module):
    """Learned additive attention bias, one scalar per head and relative-distance bucket.

    ``forward(n_queries, n_keys)`` returns the (n_heads, n_queries, n_keys) bias
    ``table[bucket(i, j), h]`` with buckets from ``relative_position_buckets``; add it to the
    attention scores (as T5 does; Shaw et al. learn a vector per clipped distance instead). The
    table starts at zero, so an untrained model attends without position bias.
    """

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = False):
        super().__init__()
        _check_int("n_heads", n_heads)
        relative_position_buckets(1, 1, num_buckets, max_distance, bidirectional)   # validates
        self.n_heads, self.num_buckets = n_heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.table = torch.nn.Parameter(torch.zeros(num_buckets, n_heads))

    def forward(self, n_queries: int, n_keys: int | None = None) -> torch.Tensor:
        n_keys = n_queries if n_keys is None else n_keys
        buckets = relative_position_buckets(n_queries, n_keys, self.num_buckets, self.max_distance,
                                            self.bidirectional).to(self.table.device)
        return self.table[buckets].permute(2, 0, 1)                  # (n_heads, n_queries, n_keys)
