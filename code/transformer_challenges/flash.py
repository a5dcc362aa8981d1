"""FlashAttention as an IO-aware algorithm: tiling, online softmax and counted HBM traffic.

Used by ``chapters/03-efficient-attention/variants`` (section "FlashAttention: exact attention,
fewer memory accesses"). The GPU's two memories are modelled explicitly: the inputs q, k, v, the
output and the softmax statistics live in "HBM" tensors, and every element the algorithm reads
from or writes to them is counted by an ``HBMCounter``. The arithmetic happens on the slices
that were read (the "SRAM" working set).

- ``flash_block_sizes``: Algorithm 1's block sizes B_c = ceil(M / 4d), B_r = min(B_c, d) for an
  SRAM of M elements (Dao et al. 2022);
- ``flash_attention_forward``: Algorithm 1, the forward pass with online softmax over key/value
  blocks (Milakov & Gimelshein 2018), returns the output and the counter;
- ``standard_attention_forward``: Algorithm 0, which writes S and P to HBM, with its counter;
- ``flash_hbm_accesses`` / ``standard_hbm_accesses``: the closed forms of those two counts
  (plain ints or SymPy symbols), Theta(N^2 d^2 / M) and Theta(N d + N^2) (Theorem 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .attention import causal_mask, check_qkv


@dataclass
class HBMCounter:
    """Counts the elements read from and written to HBM tensors, in total and per tensor name."""

    reads: int = 0
    writes: int = 0
    by_tensor: dict = field(default_factory=dict)

    def read(self, name: str, t: torch.Tensor, rows: slice) -> torch.Tensor:
        """Copy rows ``rows`` (second-to-last dim for matrices, last for vectors) out of HBM."""
        x = (t[..., rows, :] if name in _MATRICES else t[..., rows]).clone()
        self.reads += x.numel()
        self.by_tensor[name] = self.by_tensor.get(name, 0) + x.numel()
        return x

    def write(self, name: str, t: torch.Tensor, rows: slice, value: torch.Tensor) -> None:
        """Store ``value`` into rows ``rows`` of an HBM tensor."""
        if name in _MATRICES:
            t[..., rows, :] = value
        else:
            t[..., rows] = value
        self.writes += value.numel()
        self.by_tensor[name] = self.by_tensor.get(name, 0) + value.numel()

    @property
    def total(self) -> int:
        """Reads plus writes, in elements."""
        return self.reads + self.writes


_MATRICES = {"Q", "K", "V", "O", "S", "P"}


def _check_sram(sram: int, d: int) -> None:
    if not isinstance(sram, int) or isinstance(sram, bool) or sram < d:
        raise ValueError(f"sram={sram!r} must be an integer number of elements >= d={d} "
                         "(Theorem 2 assumes d <= M <= N d); e.g. sram=100 * 1024 // 4 for 100 KB of fp32.")


def flash_block_sizes(sram: int, d: int) -> tuple[int, int]:
    """Algorithm 1's block sizes ``(B_r, B_c)`` = (min(ceil(M/4d), d), ceil(M/4d)) for SRAM size M."""
    if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
        raise ValueError(f"d={d!r} must be a positive integer (the head dimension).")
    _check_sram(sram, d)
    b_c = _ceil_div(sram, 4 * d)
    return min(b_c, d), b_c


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                            sram: int = 4096) -> tuple[torch.Tensor, HBMCounter]:
    """FlashAttention forward (Dao et al. 2022, Algorithm 1): exact softmax attention by tiles.

    The outer loop walks over key/value blocks of B_c rows, the inner loop over query blocks of
    B_r rows; each query block keeps a running row maximum m, a running sum l and an output O
    (online softmax) in HBM, rescaled whenever a later key block raises the maximum. No (N, N)
    tensor exists. ``causal`` masks S inside each tile (fully masked tiles are still visited, as
    in the paper's algorithm; real kernels skip them). Returns ``(output, counter)``; the counter
    equals ``flash_hbm_accesses(N, d, sram)`` times the number of heads. Needs q, k, v of the
    same length N and width d (self-attention with d_v = d, as in the paper).
    """
    check_qkv(q, k, v)
    n, d = q.shape[-2], q.shape[-1]
    if k.shape[-2] != n or v.shape[-1] != d:
        raise ValueError(f"flash_attention_forward follows Algorithm 1 (N x d inputs): got q{tuple(q.shape)}, "
                         f"k{tuple(k.shape)}, v{tuple(v.shape)}; pass keys and values of q's length and width.")
    b_r, b_c = flash_block_sizes(sram, d)
    hbm = HBMCounter()
    lead = q.shape[:-2]
    O = torch.empty_like(q)
    l_vec = torch.empty(*lead, n, dtype=q.dtype, device=q.device)
    m_vec = torch.empty_like(l_vec)
    hbm.write("O", O, slice(None), torch.zeros_like(q))                        # line 2
    hbm.write("l", l_vec, slice(None), torch.zeros_like(l_vec))
    hbm.write("m", m_vec, slice(None), torch.full_like(m_vec, float("-inf")))
    scale = 1.0 / math.sqrt(d)
    for j0 in range(0, n, b_c):                                                # line 5
        cols = slice(j0, min(j0 + b_c, n))
        kj, vj = hbm.read("K", k, cols), hbm.read("V", v, cols)                # line 6
        for i0 in range(0, n, b_r):                                            # line 7
            rows = slice(i0, min(i0 + b_r, n))
            qi, oi = hbm.read("Q", q, rows), hbm.read("O", O, rows)            # line 8
            li, mi = hbm.read("l", l_vec, rows), hbm.read("m", m_vec, rows)
            s = qi @ kj.transpose(-2, -1) * scale                              # line 9
            if causal:  # the tile's part of the causal mask, built from its index ranges
                keep = (torch.arange(rows.start, rows.stop, device=q.device)[:, None]
                        >= torch.arange(cols.start, cols.stop, device=q.device)[None, :])
                s = s.masked_fill(~keep, float("-inf"))
            m_tile = s.amax(dim=-1)                                            # line 10
            m_new = torch.maximum(mi, m_tile)                                  # line 11
            safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # all masked so far
            p = torch.exp(s - safe[..., None])                                 # exp(S - m_new)
            alpha = torch.exp(mi - safe)                                       # rescales the old state
            l_new = alpha * li + p.sum(dim=-1)
            o_new = (alpha * li)[..., None] * oi + p @ vj                      # line 12, unnormalised
            o_new = o_new / torch.where(l_new > 0, l_new, torch.ones_like(l_new))[..., None]
            hbm.write("O", O, rows, o_new)                                     # lines 12-13
            hbm.write("l", l_vec, rows, l_new)
            hbm.write("m", m_vec, rows, m_new)
    return O, hbm


def standard_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               causal: bool = False) -> tuple[torch.Tensor, HBMCounter]:
    """Standard attention (Dao et al. 2022, Algorithm 0): S = QK^T and P = softmax(S) go through HBM."""
    check_qkv(q, k, v)
    n, d = q.shape[-2], q.shape[-1]
    if k.shape[-2] != n or v.shape[-1] != d:
        raise ValueError(f"standard_attention_forward models N x d inputs: got q{tuple(q.shape)}, "
                         f"k{tuple(k.shape)}, v{tuple(v.shape)}; pass keys and values of q's length and width.")
    hbm = HBMCounter()
    lead = q.shape[:-2]
    all_rows = slice(None)
    S = torch.empty(*lead, n, n, dtype=q.dtype, device=q.device)
    P = torch.empty_like(S)
    O = torch.empty_like(q)
    s = hbm.read("Q", q, all_rows) @ hbm.read("K", k, all_rows).transpose(-2, -1) / math.sqrt(d)
    if causal:
        s = s.masked_fill(~causal_mask(n, n, q.device), float("-inf"))
    hbm.write("S", S, all_rows, s)                                             # line 1
    hbm.write("P", P, all_rows, torch.softmax(hbm.read("S", S, all_rows), dim=-1))  # line 2
    hbm.write("O", O, all_rows, hbm.read("P", P, all_rows) @ hbm.read("V", v, all_rows))  # line 3
    return O, hbm


def _ceil_div(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    import sympy as sp
    return sp.ceiling(sp.sympify(a) / b)


def flash_hbm_accesses(n, d, sram, exact_ceil: bool = True):
    """Elements that ``flash_attention_forward`` reads plus writes for one head of length n, width d.

    Initialisation writes O, l, m (Nd + 2N); K and V are read once (2Nd); each of the
    T_c = ceil(N / B_c) outer steps reads Q, O, l, m (2Nd + 2N) and writes O, l, m (Nd + 2N).
    Accepts SymPy symbols; with ``exact_ceil=False`` T_c is N / B_c with B_c = M / 4d, the form
    whose leading term is 12 N^2 d^2 / M.
    """
    if isinstance(n, int) and isinstance(d, int):
        if n <= 0:
            raise ValueError(f"n={n!r} must be a positive integer (the sequence length).")
        flash_block_sizes(sram, d)                     # validates d and sram
    if exact_ceil:
        t_c = _ceil_div(n, _ceil_div(sram, 4 * d))
    else:
        t_c = n * 4 * d / sram
    return (n * d + 2 * n) + 2 * n * d + t_c * ((2 * n * d + 2 * n) + (n * d + 2 * n))


def standard_hbm_accesses(n, d):
    """Elements Algorithm 0 reads plus writes: Q, K (2Nd), S (N^2 out, N^2 in), P (N^2 out, N^2 in), V, O (2Nd)."""
    if isinstance(n, int) and isinstance(d, int) and (n <= 0 or d <= 0):
        raise ValueError(f"n={n!r} and d={d!r} must be positive integers.")
    return 4 * n * d + 4 * n * n
