"""Attention kernels with one signature: ``f(q, k, v, causal=False, ...) -> output``.

Shapes: ``q`` is ``(..., n_q, d)``, ``k`` and ``v`` are ``(..., n_k, d)`` and ``(..., n_k, d_v)``
(leading dimensions are batch and heads). Chapter 1 builds its attention layer on
``naive_attention`` and ``sdpa_attention``; the efficient-attention chapter adds variants here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ``ValueError`` unless q, k, v have compatible attention shapes."""
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError("q, k and v need at least 2 dimensions (..., seq, dim).")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last (head) dimension, got {q.shape[-1]} and {k.shape[-1]}; "
            "project them to the same head size."
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions, got {k.shape[-2]} and {v.shape[-2]}."
        )
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            f"batch/head dimensions differ: q{tuple(q.shape[:-2])}, k{tuple(k.shape[:-2])}, "
            f"v{tuple(v.shape[:-2])}; broadcast or repeat them first."
        )


def causal_mask(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """Boolean ``(n_q, n_k)`` mask, True where query i may attend to key j (j <= i + n_k - n_q)."""
    i = torch.arange(n_q, device=device)[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    return j <= i + (n_k - n_q)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    attn_bias: torch.Tensor | None = None, return_weights: bool = False):
    """Textbook softmax attention, softmax(q k^T / sqrt(d) + bias) v, materialising the score matrix.

    ``attn_bias`` is added to the scores (broadcast to ``(..., n_q, n_k)``); a boolean bias is a
    mask (True = keep). With ``return_weights`` the attention probabilities are returned too.
    """
    check_qkv(q, k, v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        if attn_bias.dtype == torch.bool:
            scores = scores.masked_fill(~attn_bias, float("-inf"))
        else:
            scores = scores + attn_bias
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                   attn_bias: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch's fused ``scaled_dot_product_attention`` (Flash / memory-efficient / math backend)."""
    check_qkv(q, k, v)
    if attn_bias is None and (not causal or q.shape[-2] == k.shape[-2]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if attn_bias is None:  # causal with n_q != n_k: align the mask bottom-right, as decoding needs
        attn_bias = causal_mask(q.shape[-2], k.shape[-2], q.device)
    elif causal:
        keep = causal_mask(q.shape[-2], k.shape[-2], q.device)
        if attn_bias.dtype == torch.bool:
            attn_bias = attn_bias & keep
        else:
            attn_bias = attn_bias.masked_fill(~keep, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype)
                                          if attn_bias.dtype != torch.bool else attn_bias)
