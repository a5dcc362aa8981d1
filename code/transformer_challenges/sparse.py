"""Fixed sparse patterns (Sparse Transformer) and content-based hashing (Reformer's LSH attention).

Used by ``chapters/03-efficient-attention/variants`` (section "Strided, fixed and hashed
patterns"). The position-based patterns are boolean masks for ``scaled_dot_product_attention``;
LSH attention is computed chunk by chunk after sorting by hash bucket, and ``lsh_mask`` gives the
pairs it attends to, so that it can be checked against exact attention under that mask.

- ``strided_mask`` / ``fixed_mask``: the two factorised patterns of Child et al. 2019 (merged
  into one head: the union of both halves);
- ``pattern_attention``: SDPA under a boolean mask;
- ``lsh_buckets``: angular LSH by random rotations, h(x) = argmax([xR; -xR]) (Kitaev et al. 2020);
- ``lsh_attention``: shared-QK attention within the own and previous chunk of the bucket-sorted
  sequence, over ``n_rounds`` hash rounds, duplicates across rounds counted once;
- ``lsh_mask``, ``shared_qk_attention``: its pair set and its exact full-attention reference;
- ``topk_recall``: the fraction of each query's top-k keys that a mask keeps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .attention import _check_positive_int, check_qkv

SELF_SCORE = -1e5
"""Score given to a token's own key under shared QK: it attends to itself only without other targets."""


def _grid(n: int, device=None):
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return i, j


def strided_mask(n: int, stride: int, causal: bool = True, device=None) -> torch.Tensor:
    """Boolean ``(n, n)`` strided pattern: the previous ``stride`` positions, or every stride-th one.

    Child et al. 2019: A1(i) = {j : i - stride < j <= i}, A2(i) = {j : (i - j) mod stride = 0};
    the mask is their union (the "merged head"). Without ``causal`` both halves are symmetric.
    """
    _check_positive_int("n", n, "pass the sequence length.")
    _check_positive_int("stride", stride, "Child et al. choose it close to sqrt(n).")
    i, j = _grid(n, device)
    mask = ((i - j).abs() < stride) | ((i - j) % stride == 0)
    return mask & (j <= i) if causal else mask


def fixed_mask(n: int, stride: int, summary: int = 1, causal: bool = True, device=None) -> torch.Tensor:
    """Boolean ``(n, n)`` fixed pattern: the own block of ``stride`` positions, or a summary column.

    Child et al. 2019: A1(i) = {j : floor(j / l) = floor(i / l)}, A2(i) = {j : j mod l >= l - c},
    with l = ``stride`` and c = ``summary`` (the last c positions of every block are read by all).
    """
    _check_positive_int("n", n, "pass the sequence length.")
    _check_positive_int("stride", stride, "the block length l, e.g. 16 or 128.")
    _check_positive_int("summary", summary, "c summary positions per block, between 1 and stride.")
    if summary > stride:
        raise ValueError(f"summary={summary} exceeds stride={stride}; use at most {stride}.")
    i, j = _grid(n, device)
    mask = (i // stride == j // stride) | (j % stride >= stride - summary)
    return mask & (j <= i) if causal else mask


def pattern_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention under a boolean ``(n_q, n_k)`` mask (True = keep), via PyTorch's SDPA."""
    check_qkv(q, k, v)
    if mask.dtype != torch.bool or mask.shape[-2:] != (q.shape[-2], k.shape[-2]):
        raise ValueError(f"mask must be boolean with last dims ({q.shape[-2]}, {k.shape[-2]}), got "
                         f"{mask.dtype} {tuple(mask.shape)}; build it with strided_mask or fixed_mask.")
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every query must keep at least one key (a row of the mask is all False); "
                         "add the diagonal: mask |= torch.eye(n, dtype=torch.bool).")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.device))


def lsh_buckets(x: torch.Tensor, n_buckets: int, n_rounds: int = 1, seed: int = 0) -> torch.Tensor:
    """Angular LSH bucket ids, ``(n_rounds, ..., n)``: argmax over [xR; -xR] for a random R per round.

    R is ``(d, n_buckets / 2)`` Gaussian (Kitaev et al. 2020, Sec. 3, after Andoni et al. 2015):
    vectors at a small angle land in the same bucket with high probability.
    """
    _check_positive_int("n_buckets", n_buckets, "an even number such as n / chunk_size.")
    _check_positive_int("n_rounds", n_rounds, "the number of hash rounds, e.g. 1, 2 or 4.")
    if n_buckets % 2:
        raise ValueError(f"n_buckets={n_buckets} must be even (the hash is argmax over [xR; -xR]).")
    gen = torch.Generator().manual_seed(seed)
    rot = torch.randn(n_rounds, x.shape[-1], n_buckets // 2, generator=gen).to(x.device, x.dtype)
    proj = torch.einsum("...nd,rdb->r...nb", x, rot)
    return torch.cat([proj, -proj], dim=-1).argmax(dim=-1)


def _shared_keys(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _check_lsh(q, v, n_buckets, chunk_size, n_rounds):
    check_qkv(q, q, v)
    _check_positive_int("chunk_size", chunk_size, "e.g. 32; the sequence length must be a multiple of it.")
    n = q.shape[-2]
    if n % chunk_size:
        raise ValueError(f"sequence length {n} is not a multiple of chunk_size={chunk_size}; "
                         "pad the sequence or pick a divisor of it.")
    _check_positive_int("n_rounds", n_rounds, "the number of hash rounds, e.g. 1, 2 or 4.")
    _check_positive_int("n_buckets", n_buckets, "an even number such as n / chunk_size.")


def _sorted_chunks(q, n_buckets, chunk_size, n_rounds, seed):
    """Per round: the bucket-sorted order of positions, and each position's chunk index."""
    n = q.shape[-2]
    buckets = lsh_buckets(q, n_buckets, n_rounds, seed)                        # (R, ..., n)
    pos = torch.arange(n, device=q.device)
    order = torch.argsort(buckets * n + pos, dim=-1)                            # sort by bucket, then position
    chunk_of = torch.empty_like(order)
    chunk_of.scatter_(-1, order, (pos // chunk_size).expand_as(order))          # inverse permutation // c
    return order, chunk_of


def lsh_attention(q: torch.Tensor, v: torch.Tensor, causal: bool = False, n_buckets: int = 8,
                  chunk_size: int = 32, n_rounds: int = 1, seed: int = 0) -> torch.Tensor:
    """Reformer's LSH attention with shared QK (keys are the unit-normalised queries).

    Each round hashes the queries (``lsh_buckets``), sorts positions by bucket, cuts the sorted
    sequence into chunks of ``chunk_size`` and lets every query attend to the keys of its own and
    the previous chunk (Kitaev et al. 2020, Sec. 3): c * 2c scores per chunk instead of n^2 in all.
    A token's own key scores ``SELF_SCORE`` (used only without other targets). Rounds are merged
    by their log-sum-exp, with a pair that several rounds find counted once, so the result is
    exact softmax attention over the union of the pairs (``lsh_mask``).
    """
    _check_lsh(q, v, n_buckets, chunk_size, n_rounds)
    n, d, c = q.shape[-2], q.shape[-1], chunk_size
    nc = n // c
    kn = _shared_keys(q)
    order, chunk_of = _sorted_chunks(q, n_buckets, chunk_size, n_rounds, seed)
    outs, lses = [], []
    for r in range(n_rounds):
        idx = order[r]                                                           # (..., n)
        gather = lambda t: t.gather(-2, idx[..., None].expand(*idx.shape, t.shape[-1]))  # noqa: E731
        qs, ks, vs = (gather(t).reshape(*t.shape[:-2], nc, c, t.shape[-1]) for t in (q, kn, v))
        qpos = idx.reshape(*idx.shape[:-1], nc, c)
        kw = torch.cat([ks.roll(1, dims=-3), ks], dim=-2)                        # previous + own chunk
        vw = torch.cat([vs.roll(1, dims=-3), vs], dim=-2)                        # (..., nc, 2c, .)
        kpos = torch.cat([qpos.roll(1, dims=-2), qpos], dim=-1)                  # (..., nc, 2c)
        scores = qs @ kw.transpose(-2, -1) / math.sqrt(d)                        # (..., nc, c, 2c)
        valid = torch.ones(nc, 1, 2 * c, dtype=torch.bool, device=q.device)
        valid[0, :, :c] = False                                                  # chunk 0 has no predecessor
        valid = valid.expand_as(scores)
        if causal:
            valid = valid & (kpos[..., None, :] <= qpos[..., :, None])
        # a pair found by several rounds is counted once: subtract log(how many rounds find it)
        cq_q = torch.stack([chunk_of[s].gather(-1, qpos.flatten(-2)).reshape(qpos.shape) for s in range(n_rounds)])
        cq_k = torch.stack([chunk_of[s].gather(-1, kpos.flatten(-2)).reshape(kpos.shape) for s in range(n_rounds)])
        diff = cq_q[..., :, None] - cq_k[..., None, :]                           # (R, ..., nc, c, 2c)
        times = ((diff == 0) | (diff == 1)).sum(dim=0).clamp_min(1)
        scores = scores - times.to(scores.dtype).log()
        scores = torch.where(kpos[..., None, :] == qpos[..., :, None],
                             torch.full_like(scores, SELF_SCORE), scores)
        scores = scores.masked_fill(~valid, float("-inf"))
        lse = scores.logsumexp(dim=-1)                                           # (..., nc, c)
        out = torch.softmax(scores, dim=-1) @ vw
        unsort = torch.empty_like(idx)
        unsort.scatter_(-1, idx, torch.arange(n, device=q.device).expand_as(idx))
        flat = lambda t: t.reshape(*t.shape[:-3], n, t.shape[-1])                # noqa: E731
        outs.append(flat(out).gather(-2, unsort[..., None].expand(*unsort.shape, out.shape[-1])))
        lses.append(lse.reshape(*lse.shape[:-2], n).gather(-1, unsort))
    lse = torch.stack(lses)                                                      # (R, ..., n)
    w = torch.softmax(lse, dim=0)
    return (w[..., None] * torch.stack(outs)).sum(dim=0)


def lsh_mask(q: torch.Tensor, causal: bool = False, n_buckets: int = 8, chunk_size: int = 32,
             n_rounds: int = 1, seed: int = 0) -> torch.Tensor:
    """Boolean ``(..., n, n)`` mask of the pairs ``lsh_attention`` attends to (with the same arguments)."""
    _check_lsh(q, q, n_buckets, chunk_size, n_rounds)
    n = q.shape[-2]
    _, chunk_of = _sorted_chunks(q, n_buckets, chunk_size, n_rounds, seed)
    diff = chunk_of[..., :, None] - chunk_of[..., None, :]                       # (R, ..., n, n)
    mask = ((diff == 0) | (diff == 1)).any(dim=0)
    if causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return mask


def shared_qk_attention(q: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Exact softmax attention with shared QK (keys q / |q|, own key scored ``SELF_SCORE``), optionally masked."""
    check_qkv(q, q, v)
    n = q.shape[-2]
    scores = q @ _shared_keys(q).transpose(-2, -1) / math.sqrt(q.shape[-1])
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    scores = scores.masked_fill(eye, SELF_SCORE)
    keep = torch.ones(n, n, dtype=torch.bool, device=q.device) if mask is None else mask
    if causal:
        keep = keep & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ v


def topk_recall(scores: torch.Tensor, mask: torch.Tensor, k: int, candidates: torch.Tensor | None = None) -> float:
    """Mean fraction of each query's ``k`` highest-scoring keys that ``mask`` keeps.

    ``candidates`` (boolean, broadcast to ``scores``) restricts which keys compete (e.g. causal
    and not the query itself); queries with fewer than ``k`` candidates are skipped.
    """
    _check_positive_int("k", k, "e.g. 8.")
    if mask.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} and scores {tuple(scores.shape)} must end in the same (n_q, n_k).")
    cand = torch.ones_like(scores, dtype=torch.bool) if candidates is None else candidates.expand(scores.shape)
    top = scores.masked_fill(~cand, float("-inf")).topk(k, dim=-1).indices
    hit = mask.expand(scores.shape).gather(-1, top).float().mean(dim=-1)
    rows = cand.sum(dim=-1) >= k
    if not bool(rows.any()):
        raise ValueError(f"no query has {k} candidate keys; pass a smaller k.")
    return hit[rows].mean().item()
