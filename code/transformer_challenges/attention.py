"""Attention kernels with one signature: ``f(q, k, v, causal=False, ...) -> output``.

Shapes: ``q`` is ``(..., n_q, d)``, ``k`` and ``v`` are ``(..., n_k, d)`` and ``(..., n_k, d_v)``
(leading dimensions are batch and heads). Chapter 1 builds its attention layer on
``naive_attention`` and ``sdpa_attention``. The efficient-attention chapter
(``chapters/03-efficient-attention``) adds the variants it implements and measures:

- ``sliding_window_attention``: Longformer's local window plus optional global tokens, exact
  softmax attention under ``sliding_window_mask`` in O(n * window) memory;
- ``block_sparse_attention`` / ``bigbird_attention``: BigBird's window + global + random blocks
  (``bigbird_layout``, ``layout_mask``);
- ``linformer_attention``: keys and values projected along the sequence to rank k;
- ``linear_attention``: kernelised attention with phi(x) = elu(x) + 1, causal via chunked prefix
  sums (``linear_attention_quadratic`` is its O(n^2) reference form);
- ``performer_attention``: FAVOR+ positive orthogonal random features;
- measurement helpers ``sdpa_backend`` and ``saved_activation_bytes``.
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


# --------------------------------------------------------------------------------------------
# Efficient-attention variants (chapter "Efficient attention").
# --------------------------------------------------------------------------------------------

def _check_positive_int(name: str, value, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; {hint}")


def _check_nonnegative_int(name: str, value, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}; {hint}")


def _check_self_attention(q: torch.Tensor, k: torch.Tensor, name: str) -> None:
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"{name} is defined for self-attention, but q has {q.shape[-2]} positions and k has "
            f"{k.shape[-2]}; pass queries and keys of the same sequence."
        )


def _global_index(global_tokens, n: int, device=None) -> torch.Tensor:
    """Sorted unique LongTensor of global positions from an int (first g) or a sequence of indices."""
    if global_tokens is None:
        return torch.zeros(0, dtype=torch.long, device=device)
    if isinstance(global_tokens, int) and not isinstance(global_tokens, bool):
        if not 0 <= global_tokens <= n:
            raise ValueError(f"global_tokens={global_tokens} must lie in [0, {n}] (the first g positions "
                             "are global); pass a smaller count or a list of positions.")
        return torch.arange(global_tokens, device=device)
    idx = torch.as_tensor(list(global_tokens), dtype=torch.long, device=device).unique()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"global token positions must lie in [0, {n - 1}], got {idx.tolist()}; "
                         "drop the out-of-range positions.")
    return idx


def sliding_window_mask(n: int, window: int, causal: bool = False, global_tokens=None,
                        device=None) -> torch.Tensor:
    """Boolean ``(n, n)`` Longformer mask: True where |i - j| <= window, or i or j is a global token.

    ``global_tokens`` is an int g (the first g positions) or a sequence of positions; global tokens
    attend to every position and every position attends to them. ``causal`` also requires j <= i.
    """
    _check_positive_int("n", n, "pass the sequence length.")
    _check_positive_int("window", window, "the window is the number of neighbours on each side, e.g. 64.")
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    mask = (j - i).abs() <= window
    g = _global_index(global_tokens, n, device)
    if g.numel():
        mask[g, :] = True
        mask[:, g] = True
    if causal:
        mask &= j <= i
    return mask


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                             window: int = 64, global_tokens=None) -> torch.Tensor:
    """Softmax attention restricted to ``sliding_window_mask`` (Longformer), in O(n * window) memory.

    Queries are cut into blocks of ``window`` positions; each block scores only the keys of its own
    and neighbouring blocks (3 * window keys, 2 * window when causal), so no (n, n)
    matrix exists. Global tokens (see ``sliding_window_mask``) add g extra key columns for every
    query and g full rows. The result equals ``naive_attention`` with the same mask.
    """
    check_qkv(q, k, v)
    _check_self_attention(q, k, "sliding_window_attention")
    _check_positive_int("window", window, "the window is the number of neighbours on each side, e.g. 64.")
    n, d = q.shape[-2], q.shape[-1]
    lead = q.shape[:-2]
    dev = q.device
    w = min(window, n)
    nb = -(-n // w)
    pad = nb * w - n
    scale = 1.0 / math.sqrt(d)
    qb = F.pad(q, (0, 0, 0, pad)).reshape(*lead, nb, w, d)
    kb = F.pad(k, (0, 0, w, pad + w)).reshape(*lead, nb + 2, w, d)
    vb = F.pad(v, (0, 0, w, pad + w)).reshape(*lead, nb + 2, w, v.shape[-1])
    offsets = (0, 1) if causal else (0, 1, 2)          # previous, own and next key block
    # three products against shifted *views* of the padded keys: no (n, 3w, d) copy is made
    scores = torch.cat([qb @ kb[..., o:o + nb, :, :].transpose(-2, -1) for o in offsets],
                       dim=-1) * scale                                 # (..., nb, w, c*w)
    blk = torch.arange(nb, device=dev)
    qpos = blk[:, None, None] * w + torch.arange(w, device=dev)[None, :, None]
    kpos = (blk[:, None, None] - 1) * w + torch.arange(len(offsets) * w, device=dev)[None, None, :]
    rel = kpos - qpos
    allowed = (rel.abs() <= window) & (kpos >= 0) & (kpos < n)
    if causal:
        allowed &= rel <= 0
    g = _global_index(global_tokens, n, dev)
    if g.numel():
        is_global = torch.zeros(n, dtype=torch.bool, device=dev)
        is_global[g] = True
        allowed &= ~is_global[kpos.clamp(0, n - 1)]                   # global keys come separately
        gscores = q @ k[..., g, :].transpose(-2, -1) * scale          # (..., n, g)
        if causal:
            gscores = gscores.masked_fill(g[None, :] > torch.arange(n, device=dev)[:, None],
                                          float("-inf"))
        gscores = F.pad(gscores, (0, 0, 0, pad)).reshape(*lead, nb, w, g.numel())
        scores = torch.cat([scores.masked_fill(~allowed, float("-inf")), gscores], dim=-1)
        weights = torch.softmax(scores, dim=-1)
        local_w, global_w = weights.split([len(offsets) * w, g.numel()], dim=-1)
        out = global_w @ v[..., g, :].unsqueeze(-3)
    else:
        local_w = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        out = 0
    for i, o in enumerate(offsets):
        out = out + local_w[..., i * w:(i + 1) * w] @ vb[..., o:o + nb, :, :]
    out = out.reshape(*lead, nb * w, v.shape[-1])[..., :n, :]
    if g.numel():                                                      # global rows see everything
        rows = naive_attention(q[..., g, :], k, v, attn_bias=None if not causal
                               else torch.arange(n, device=dev)[None, :] <= g[:, None])
        out = out.index_copy(-2, g, rows)
    return out


def bigbird_layout(n_blocks: int, window_blocks: int = 3, global_blocks: int = 1,
                   random_blocks: int = 1, causal: bool = False, seed: int = 0) -> torch.Tensor:
    """Boolean ``(n_blocks, n_blocks)`` BigBird block layout: window + global + random blocks.

    Block row i keeps blocks j with |i - j| <= window_blocks // 2, the first ``global_blocks``
    blocks (whose rows also keep everything), and ``random_blocks`` further blocks drawn with
    ``seed`` (earlier blocks only when ``causal``). Zaheer et al. 2020, Fig. 1.
    """
    _check_positive_int("n_blocks", n_blocks, "pass ceil(seq_len / block_size).")
    _check_positive_int("window_blocks", window_blocks, "use an odd count such as 3 (the block and its two neighbours).")
    _check_nonnegative_int("global_blocks", global_blocks, "use 0 for no global blocks.")
    _check_nonnegative_int("random_blocks", random_blocks, "use 0 for no random blocks.")
    if global_blocks > n_blocks:
        raise ValueError(f"global_blocks={global_blocks} exceeds n_blocks={n_blocks}; use at most {n_blocks}.")
    i = torch.arange(n_blocks)[:, None]
    j = torch.arange(n_blocks)[None, :]
    layout = (i - j).abs() <= window_blocks // 2
    layout[:global_blocks, :] = True
    layout[:, :global_blocks] = True
    if causal:
        layout &= j <= i
    gen = torch.Generator().manual_seed(seed)
    for row in range(global_blocks, n_blocks):
        free = (~layout[row]).nonzero().flatten()
        if causal:
            free = free[free < row]
        if free.numel() and random_blocks:
            pick = free[torch.randperm(free.numel(), generator=gen)[:random_blocks]]
            layout[row, pick] = True
    return layout


def layout_mask(layout: torch.Tensor, block_size: int, n: int, causal: bool = False) -> torch.Tensor:
    """Expand a boolean block layout to the ``(n, n)`` token mask it stands for."""
    _check_positive_int("block_size", block_size, "e.g. 16.")
    nb = -(-n // block_size)
    if layout.shape != (nb, nb):
        raise ValueError(f"layout has shape {tuple(layout.shape)} but n={n}, block_size={block_size} "
                         f"needs ({nb}, {nb}); build it with n_blocks=ceil(n / block_size).")
    mask = layout.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:n, :n]
    if causal:
        mask = mask & causal_mask(n, n, layout.device)
    return mask


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                           layout: torch.Tensor | None = None, block_size: int = 16) -> torch.Tensor:
    """Softmax attention over the token pairs a boolean block ``layout`` keeps (see ``layout_mask``).

    Block rows that keep every block (global rows) are computed densely; the other rows gather
    only their kept key blocks, padded to the largest row count, so memory is
    O(n * blocks_per_row * block_size) rather than O(n^2). Every block must keep its diagonal.
    """
    check_qkv(q, k, v)
    _check_self_attention(q, k, "block_sparse_attention")
    _check_positive_int("block_size", block_size, "e.g. 16.")
    n, d, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    nb = -(-n // block_size)
    if layout is None:
        layout = bigbird_layout(nb, causal=causal)
    if layout.dtype != torch.bool or layout.shape != (nb, nb):
        raise ValueError(f"layout must be a boolean ({nb}, {nb}) tensor for n={n} and block_size="
                         f"{block_size}, got {layout.dtype} {tuple(layout.shape)}; use bigbird_layout.")
    if not bool(layout.diagonal().all()):
        raise ValueError("every block must attend to itself (layout.diagonal() all True); "
                         "set layout.fill_diagonal_(True).")
    dev = q.device
    layout = layout.to(dev)
    eff = layout & torch.ones(nb, nb, dtype=torch.bool, device=dev).tril() if causal else layout
    lead = q.shape[:-2]
    pad = nb * block_size - n
    scale = 1.0 / math.sqrt(d)
    qb = F.pad(q, (0, 0, 0, pad)).reshape(*lead, nb, block_size, d)
    kp, vp = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    kb = kp.reshape(*lead, nb, block_size, d)
    vb = vp.reshape(*lead, nb, block_size, dv)
    pos = torch.arange(nb * block_size, device=dev)
    dense = layout.all(dim=1)
    out = torch.zeros(*lead, nb, block_size, dv, dtype=q.dtype, device=dev)
    rows = (~dense).nonzero().flatten()
    if rows.numel():
        keep = eff[rows]                                               # (ns, nb)
        r = int(keep.sum(dim=1).max())
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :r]   # kept blocks first
        valid = keep.gather(1, order)                                  # (ns, r)
        kg = kb[..., order, :, :].reshape(*lead, rows.numel(), r * block_size, d)
        vg = vb[..., order, :, :].reshape(*lead, rows.numel(), r * block_size, dv)
        scores = qb[..., rows, :, :] @ kg.transpose(-2, -1) * scale    # (..., ns, bs, r*bs)
        kpos = (order[:, :, None] * block_size + torch.arange(block_size, device=dev)).reshape(rows.numel(), 1, -1)
        qpos = (rows[:, None] * block_size + torch.arange(block_size, device=dev))[:, :, None]
        allowed = valid.repeat_interleave(block_size, 1)[:, None, :] & (kpos < n)
        if causal:
            allowed = allowed & (kpos <= qpos)
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        out = out.index_copy(-3, rows, weights @ vg)
    rows = dense.nonzero().flatten()
    if rows.numel():
        qd = qb[..., rows, :, :].reshape(*lead, rows.numel() * block_size, d)
        qpos = (rows[:, None] * block_size + torch.arange(block_size, device=dev)).reshape(-1, 1)
        allowed = (pos[None, :] < n) & ((pos[None, :] <= qpos) if causal else True)
        od = naive_attention(qd, kp, vp, attn_bias=allowed)
        out = out.index_copy(-3, rows, od.reshape(*lead, rows.numel(), block_size, dv))
    return out.reshape(*lead, nb * block_size, dv)[..., :n, :]


def bigbird_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                      block_size: int = 16, window_blocks: int = 3, global_blocks: int = 1,
                      random_blocks: int = 1, seed: int = 0) -> torch.Tensor:
    """BigBird attention: ``block_sparse_attention`` with ``bigbird_layout`` (window + global + random)."""
    check_qkv(q, k, v)
    _check_positive_int("block_size", block_size, "e.g. 16.")
    nb = -(-q.shape[-2] // block_size)
    layout = bigbird_layout(nb, window_blocks, global_blocks, random_blocks, causal=causal, seed=seed)
    return block_sparse_attention(q, k, v, causal=causal, layout=layout, block_size=block_size)


def linformer_projection(n: int, rank: int, seed: int = 0) -> torch.Tensor:
    """Random ``(rank, n)`` projection with N(0, 1/rank) entries (Johnson-Lindenstrauss scaling)."""
    _check_positive_int("n", n, "pass the sequence length.")
    _check_positive_int("rank", rank, "the projected length k, e.g. 64.")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rank, n, generator=gen) / math.sqrt(rank)


def linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        rank: int = 64, proj_k: torch.Tensor | None = None,
                        proj_v: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Linformer: softmax(q (E k)^T / sqrt(d)) (F v) with ``(rank, n_k)`` projections E and F.

    E (``proj_k``) and F (``proj_v``, default E) are learned in a model; when omitted, E is the
    random ``linformer_projection(n_k, rank, seed)``. Cost O(n * rank). Projecting along the
    sequence mixes future positions into every key, so Linformer has no causal form.
    """
    check_qkv(q, k, v)
    if causal:
        raise ValueError("linformer_attention cannot be causal: E k mixes all positions, future ones "
                         "included; use causal=False (encoders) or another variant for decoders.")
    n_k = k.shape[-2]
    if proj_k is None:
        proj_k = linformer_projection(n_k, rank, seed).to(device=k.device, dtype=k.dtype)
    proj_v = proj_k if proj_v is None else proj_v
    for name, p in (("proj_k", proj_k), ("proj_v", proj_v)):
        if p.dim() != 2 or p.shape[-1] != n_k:
            raise ValueError(f"{name} must have shape (rank, n_k={n_k}), got {tuple(p.shape)}; "
                             "project along the key/value sequence.")
    if proj_k.shape[0] != proj_v.shape[0]:
        raise ValueError(f"proj_k and proj_v must share the rank, got {proj_k.shape[0]} and {proj_v.shape[0]}.")
    return naive_attention(q, proj_k @ k, proj_v @ v)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, the positive feature map of Katharopoulos et al. 2020."""
    return F.elu(x) + 1


def _kernel_attention(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, causal: bool,
                      chunk_size: int, eps: float) -> torch.Tensor:
    """(phi(q) sum_j phi(k_j) v_j^T) / (phi(q) sum_j phi(k_j)), causal by chunked prefix sums."""
    if not causal:
        num = fq @ (fk.transpose(-2, -1) @ v)
        den = fq @ fk.sum(dim=-2).unsqueeze(-1)
        return num / den.clamp_min(eps)
    n, m, dv = fq.shape[-2], fq.shape[-1], v.shape[-1]
    lead = fq.shape[:-2]
    c = min(chunk_size, n)
    nc = -(-n // c)
    pad = nc * c - n
    fqb = F.pad(fq, (0, 0, 0, pad)).reshape(*lead, nc, c, m)
    fkb = F.pad(fk, (0, 0, 0, pad)).reshape(*lead, nc, c, m)       # padded keys have phi = 0
    vb = F.pad(v, (0, 0, 0, pad)).reshape(*lead, nc, c, dv)
    kv = fkb.transpose(-2, -1) @ vb                                 # (..., nc, m, dv) per chunk
    z = fkb.sum(dim=-2)                                             # (..., nc, m)
    state = F.pad(kv.cumsum(dim=-3), (0, 0, 0, 0, 1, 0))[..., :nc, :, :]  # exclusive prefix sums
    zstate = F.pad(z.cumsum(dim=-2), (0, 0, 1, 0))[..., :nc, :]
    intra = (fqb @ fkb.transpose(-2, -1)) * torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
    num = fqb @ state + intra @ vb
    den = (fqb @ zstate.unsqueeze(-1)).squeeze(-1) + intra.sum(dim=-1)
    out = num / den.clamp_min(eps).unsqueeze(-1)
    return out.reshape(*lead, nc * c, dv)[..., :n, :]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     chunk_size: int = 64, eps: float = 1e-12) -> torch.Tensor:
    """Kernelised linear attention with phi = elu + 1 (no 1/sqrt(d) scaling), O(n d^2) time.

    Non-causal: phi(Q) (phi(K)^T V) normalised by phi(Q) phi(K)^T 1. Causal: the running sums
    S_i = sum_{j<=i} phi(k_j) v_j^T are prefix sums, taken per chunk of ``chunk_size`` positions
    (``chunk_size=1`` is the token-by-token recurrence) with an exact masked product inside a chunk.
    """
    check_qkv(q, k, v)
    _check_positive_int("chunk_size", chunk_size, "e.g. 64.")
    if causal:
        _check_self_attention(q, k, "causal linear_attention")
    return _kernel_attention(elu_feature_map(q), elu_feature_map(k), v, causal, chunk_size, eps)


def linear_attention_quadratic(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                               feature_map=elu_feature_map, eps: float = 1e-12) -> torch.Tensor:
    """Reference O(n^2) form of kernel attention: rows of phi(Q) phi(K)^T (masked), normalised, times V."""
    check_qkv(q, k, v)
    a = feature_map(q) @ feature_map(k).transpose(-2, -1)
    if causal:
        a = a * causal_mask(q.shape[-2], k.shape[-2], q.device)
    return (a @ v) / a.sum(dim=-1, keepdim=True).clamp_min(eps)


def random_features(n_features: int, dim: int, orthogonal: bool = True, seed: int = 0) -> torch.Tensor:
    """``(n_features, dim)`` Gaussian projection directions for FAVOR+.

    ``orthogonal=True`` stacks blocks of ``dim`` exactly orthogonal rows (QR of a Gaussian matrix)
    and rescales each row to the length of an independent Gaussian vector (chi distribution), so
    each row is still marginally N(0, I) (Choromanski et al. 2021, Sec. 2.4).
    """
    _check_positive_int("n_features", n_features, "the number of random features m, e.g. 64.")
    _check_positive_int("dim", dim, "the head dimension.")
    gen = torch.Generator().manual_seed(seed)
    if not orthogonal:
        return torch.randn(n_features, dim, generator=gen)
    n_blocks = -(-n_features // dim)
    qmat, _ = torch.linalg.qr(torch.randn(n_blocks, dim, dim, generator=gen))
    rows = qmat.transpose(-2, -1).reshape(n_blocks * dim, dim)[:n_features]
    norms = torch.randn(n_features, dim, generator=gen).norm(dim=1, keepdim=True)
    return rows * norms


def favor_features(x: torch.Tensor, omega: torch.Tensor, is_query: bool) -> torch.Tensor:
    """Positive random features phi(x) = exp(omega x - |x|^2 / 2) / sqrt(m), stabilised.

    E[phi(q) . phi(k)] = exp(q . k). The stabilising shift (row max for queries, global max for
    keys) multiplies numerator and denominator of attention alike, so it cancels.
    """
    proj = x @ omega.transpose(-2, -1)                                # (..., n, m)
    sq = 0.5 * (x * x).sum(dim=-1, keepdim=True)
    shift = proj.amax(dim=-1, keepdim=True) if is_query else proj.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(proj - sq - shift.detach()) / math.sqrt(omega.shape[0])


def performer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        n_features: int = 64, omega: torch.Tensor | None = None,
                        orthogonal: bool = True, seed: int = 0, chunk_size: int = 64,
                        eps: float = 1e-12) -> torch.Tensor:
    """Performer (FAVOR+): softmax attention estimated with ``n_features`` positive random features.

    q and k are scaled by d^(-1/4) so that phi(q) . phi(k) estimates exp(q . k / sqrt(d)); the
    rest is ``linear_attention``'s machinery (prefix sums when ``causal``). ``omega`` overrides
    the ``(n_features, d)`` directions from ``random_features(n_features, d, orthogonal, seed)``.
    """
    check_qkv(q, k, v)
    _check_positive_int("n_features", n_features, "the number of random features m, e.g. 64.")
    _check_positive_int("chunk_size", chunk_size, "e.g. 64.")
    if causal:
        _check_self_attention(q, k, "causal performer_attention")
    d = q.shape[-1]
    if omega is None:
        omega = random_features(n_features, d, orthogonal, seed)
    if omega.dim() != 2 or omega.shape[-1] != d:
        raise ValueError(f"omega must have shape (n_features, {d}), got {tuple(omega.shape)}.")
    omega = omega.to(device=q.device, dtype=q.dtype)
    s = d ** -0.25
    fq = favor_features(q * s, omega, is_query=True)
    fk = favor_features(k * s, omega, is_query=False)
    return _kernel_attention(fq, fk, v, causal, chunk_size, eps)


def sdpa_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                 attn_mask: torch.Tensor | None = None) -> str:
    """Name of the ATen kernel ``scaled_dot_product_attention`` dispatches to for these inputs."""
    check_qkv(q, k, v)
    from torch.utils._python_dispatch import TorchDispatchMode  # the mechanism FlopCounterMode uses

    class _Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), _Recorder() as rec:
        F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
    names = [n for n in rec.names if "scaled_dot_product" in n]
    return names[0] if names else "math (decomposed into matmul + softmax)"


def saved_activation_bytes(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> int:
    """Bytes that autograd keeps for the backward pass of ``fn(q, k, v, **kwargs)``.

    Counted with ``torch.autograd.graph.saved_tensors_hooks``: each distinct storage saved for
    backward counts once, except the storages of q, k and v themselves (they exist anyway). This
    is the per-layer activation memory of training, and it is deterministic on any device.
    A thin wrapper of ``memory.saved_tensor_bytes`` (``distinct_storages=True``, with fresh
    leaf copies of q, k and v as ``exclude``).
    """
    if not callable(fn):
        raise ValueError(f"fn must be an attention function f(q, k, v, **kwargs), got "
                         f"{type(fn).__name__}; pass e.g. naive_attention.")
    from .memory import saved_tensor_bytes  # imported here: memory imports model, which imports us

    inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    return saved_tensor_bytes(lambda: fn(*inputs, **kwargs), exclude=tuple(inputs)).total
