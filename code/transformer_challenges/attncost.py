"""Closed-form FLOPs and activation bytes of the efficient-attention variants in ``attention``.

Used by the efficient-attention chapter (``chapters/03-efficient-attention/tradeoffs``), whose
tables count the same quantities with ``torch.utils.flop_counter.FlopCounterMode`` and
``attention.saved_activation_bytes``. Every function accepts plain ints *and* SymPy symbols: with
ints it returns an ``int`` (a ``float`` or SymPy number for a crossover), with symbols a SymPy
expression, so one function derives a formula and evaluates it::

    >>> from transformer_challenges import attncost
    >>> attncost.attention_flops("window", n=2048, d=64, window=64)
    100663296
    >>> attncost.crossover_n("linformer", d=64, rank=128)
    256

What is counted, for one forward pass of ``f(q, k, v)`` (non-causal, no global tokens beyond
BigBird's global blocks, value size = ``d``), per (batch, head) slice, times ``batch * heads``:

- **FLOPs**: 2 m k n for every matrix product (m, k) @ (k, n) that the library's implementation
  runs, padding included. This is exactly what ``FlopCounterMode`` counts. It does not count the
  elementwise work: the 1/sqrt(d) scaling, masking and softmax (max, subtract, exp, sum, divide)
  of every score, the feature maps (elu + 1; the Performer's scaling, squared norms, exp and
  stabilising maxima), the sums of the features and the final division of the kernel variants,
  and the additions of the window's three partial outputs. All of these are O(scores) or
  O(n (d + m)), a factor of about d smaller than the products they accompany.
- **Bytes**: the floating-point tensors autograd saves for the backward pass (the activation
  memory a training step keeps per attention layer), as the library's implementation saves them,
  ``bytes_per_value`` each (4: float32). Not counted: q, k and v themselves (they exist anyway),
  Linformer's projection E and the Performer's directions omega (weights of the model, shared by
  every slice), and the boolean masks and integer indices the sparse variants save (shared by
  every slice; at most n * 3 window bytes for the window, O(n / block) indices for BigBird).
"""
from __future__ import annotations

import numbers
from typing import Union

import sympy as sp

Size = Union[int, sp.Expr]
VARIANTS = ("exact", "window", "bigbird", "linformer", "linear", "performer")
LABELS = {"exact": "exact (naive)", "window": "sliding window", "bigbird": "BigBird",
          "linformer": "Linformer", "linear": "linear (elu+1)", "performer": "Performer"}
#: The defaults of the library's functions (attention.sliding_window_attention, ...).
DEFAULTS = dict(window=64, block_size=16, window_blocks=3, global_blocks=1, random_blocks=1,
                rank=64, features=64)


# --------------------------------------------------------------------------- validation
def _is_symbolic(x) -> bool:
    return isinstance(x, sp.Basic) and not x.is_number


def _size(name: str, value, hint: str = "pass a size >= 1") -> Size:
    """A positive integer, or a SymPy expression not known to be non-positive."""
    if _is_symbolic(value):
        if value.is_positive is False:
            raise ValueError(f"{name}={value} is not positive; declare the symbol with positive=True.")
        return value
    if isinstance(value, sp.Basic) and value.is_integer:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer (or a SymPy symbol), got {value!r}; {hint}.")
    return int(value)


def _count(name: str, value, minimum: int, hint: str) -> int:
    """A structural integer (BigBird's block counts): a plain int, never a symbol."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}.")
    return int(value)


def _variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is unknown; use one of {VARIANTS}.")
    return variant


def _result(expr):
    """An int when the expression is a whole number, else the SymPy expression."""
    expr = sp.sympify(expr)
    if expr.free_symbols:
        return expr
    return int(expr) if expr.is_integer else expr


# --------------------------------------------------------------------------- BigBird's layout
def _bigbird_rows(n_blocks: int, window_blocks: int, global_blocks: int, random_blocks: int):
    """(sparse rows, blocks computed per sparse row, dense rows) of ``attention.bigbird_layout``.

    A non-global block row i keeps its window |i - j| <= window_blocks // 2, the global columns and
    min(random_blocks, blocks still free) random blocks; a row that keeps every block is dense.
    ``block_sparse_attention`` computes every sparse row against the largest kept count r.
    """
    half = window_blocks // 2
    kept = []
    for i in range(global_blocks, n_blocks):
        own = len(set(range(max(0, i - half), min(n_blocks, i + half + 1))) | set(range(global_blocks)))
        kept.append(min(n_blocks, own + random_blocks))
    sparse = [c for c in kept if c < n_blocks]
    return len(sparse), max(sparse, default=0), n_blocks - len(sparse)


def _bigbird_table(n_blocks, window_blocks: int, global_blocks: int, random_blocks: int):
    """(ns * r, nd) as an expression of ``n_blocks``: exact rows below the regime where every
    non-global row is sparse and some row keeps R = window + global + random blocks, the closed
    form (n_blocks - g) R and g from there on."""
    span = 2 * (window_blocks // 2) + 1
    per_row = span + global_blocks + random_blocks
    start = per_row + 1                       # from here on: no dense non-global row, r = R
    closed = ((n_blocks - global_blocks) * per_row, global_blocks)
    if not _is_symbolic(n_blocks):
        if n_blocks >= start:
            return closed
        ns, r, nd = _bigbird_rows(int(n_blocks), window_blocks, global_blocks, random_blocks)
        return ns * r, nd
    pieces = [[], []]
    for nb in range(1, start):
        ns, r, nd = _bigbird_rows(nb, window_blocks, global_blocks, random_blocks)
        pieces[0].append((ns * r, sp.Eq(n_blocks, nb)))
        pieces[1].append((nd, sp.Eq(n_blocks, nb)))
    return tuple(sp.Piecewise(*p, (c, True)) for p, c in zip(pieces, closed))


def _bigbird_parts(n, block_size, window_blocks, global_blocks, random_blocks):
    window_blocks = _count("window_blocks", window_blocks, 1, "use an odd count such as 3")
    global_blocks = _count("global_blocks", global_blocks, 0, "use 0 for no global blocks")
    random_blocks = _count("random_blocks", random_blocks, 0, "use 0 for no random blocks")
    nb = sp.ceiling(sp.sympify(n) / block_size)
    if not _is_symbolic(nb):
        nb = int(nb)
        if global_blocks > nb:
            raise ValueError(f"global_blocks={global_blocks} exceeds the {nb} blocks of n={n} with "
                             f"block_size={block_size}; use at most {nb} (bigbird_layout raises too).")
    sparse, dense = _bigbird_table(nb, window_blocks, global_blocks, random_blocks)
    return nb, sparse, dense, global_blocks


# --------------------------------------------------------------------------- FLOPs
def _flops_per_slice(variant, n, d, window, block_size, window_blocks, global_blocks, random_blocks,
                     rank, features, whole_blocks=False):
    if variant == "exact":
        return 4 * n**2 * d                                   # q k^T and weights @ v
    if variant == "window":
        w = window if whole_blocks else sp.Min(window, n)      # whole windows: n a multiple, >= w
        blocks = n / w if whole_blocks else sp.ceiling(n / w)
        return 12 * blocks * w**2 * d                         # 3 key blocks: 3 (w x w) scores, 3 outputs
    if variant == "bigbird":
        nb, sparse, dense, _ = _bigbird_parts(n, block_size, window_blocks, global_blocks, random_blocks)
        return 4 * block_size**2 * d * (sparse + dense * nb)  # (b x rb) rows + dense (b x n) rows
    if variant == "linformer":
        return 8 * n * rank * d                               # E k, F v, then (n x k) attention
    if variant == "linear":
        return 4 * n * d**2 + 2 * n * d                       # phi(K)^T V, phi(Q) S, phi(Q) z
    m = features
    return 8 * n * m * d + 2 * n * m                          # q, k features; then as linear with m


def _common(n, d, window, block_size, rank, features, batch, heads):
    n = _size("n", n, "pass the sequence length")
    d = _size("d", d, "pass the head dimension")
    window = _size("window", window, "the window is the number of neighbours on each side, e.g. 64")
    block_size = _size("block_size", block_size, "BigBird's block size, e.g. 16")
    rank = _size("rank", rank, "Linformer's projected length k, e.g. 64")
    features = _size("features", features, "the Performer's number of random features m, e.g. 64")
    slices = _size("batch", batch) * _size("heads", heads)
    return n, d, window, block_size, rank, features, slices


def attention_flops(variant: str, n: Size, d: Size, *, window: Size = DEFAULTS["window"],
                    block_size: Size = DEFAULTS["block_size"],
                    window_blocks: int = DEFAULTS["window_blocks"],
                    global_blocks: int = DEFAULTS["global_blocks"],
                    random_blocks: int = DEFAULTS["random_blocks"], rank: Size = DEFAULTS["rank"],
                    features: Size = DEFAULTS["features"], batch: Size = 1, heads: Size = 1) -> Size:
    """Matrix-product FLOPs of one non-causal forward pass of ``variant`` (what FlopCounterMode counts).

    Per (batch, head) slice, with n positions, head size d (value size d as well):
    exact 4 n^2 d; window 12 ceil(n/w) w^2 d with w = min(window, n); BigBird 4 b^2 d (ns r + nd nb)
    over nb = ceil(n/b) block rows, ns sparse ones computing r blocks each and nd dense ones
    (for nb > window + global + random blocks: ns = nb - global, r = window + global + random,
    nd = global); Linformer 8 n k d; linear 4 n d^2 + 2 n d; Performer 8 n m d + 2 n m.
    """
    variant = _variant(variant)
    n, d, window, block_size, rank, features, slices = _common(n, d, window, block_size, rank,
                                                               features, batch, heads)
    per = _flops_per_slice(variant, n, d, window, block_size, window_blocks, global_blocks,
                           random_blocks, rank, features)
    return _result(slices * per)


# --------------------------------------------------------------------------- bytes
def attention_bytes(variant: str, n: Size, d: Size, *, window: Size = DEFAULTS["window"],
                    block_size: Size = DEFAULTS["block_size"],
                    window_blocks: int = DEFAULTS["window_blocks"],
                    global_blocks: int = DEFAULTS["global_blocks"],
                    random_blocks: int = DEFAULTS["random_blocks"], rank: Size = DEFAULTS["rank"],
                    features: Size = DEFAULTS["features"], batch: Size = 1, heads: Size = 1,
                    bytes_per_value: Size = 4) -> Size:
    """Bytes of the floating-point tensors autograd saves for backward in one forward pass.

    Values per (batch, head) slice, n padded to whole blocks (nb w or nb b) where the variant pads:
    exact n^2 (the softmax); window 3 nb w^2 (the softmax over 3 key blocks) + nb w d (queries) +
    6 nb w d (key and value blocks, copied per shift when batch * heads > 1; with one slice the
    three shifts are views of the padded keys and values, 2 (nb + 2) w d); BigBird
    ns r b (b + 2d) (softmax, gathered keys and values) + nd nb b^2 (dense softmax) + 2 nb b d
    (queries, outputs) + 2 nb b d when a dense row exists (padded keys and values); Linformer
    n k + 2 k d (softmax, projected keys and values); linear 3 n d + d^2 + d + 2 n (features,
    numerator, state, normaliser); Performer 6 n m + 3 n d + 3 n + m d + m + 1 (projections,
    exponentials and features of q and k, scaled q and k, numerator, the stabilising maxima and
    normaliser, state).
    """
    variant = _variant(variant)
    n, d, window, block_size, rank, features, slices = _common(n, d, window, block_size, rank,
                                                               features, batch, heads)
    bpv = _size("bytes_per_value", bytes_per_value, "4 for float32, 2 for 16-bit")
    if variant == "exact":
        per = n**2
    elif variant == "window":
        w = sp.Min(window, n)
        nb = sp.ceiling(n / w)
        one = 2 * (nb + 2) * w * d                             # the padded keys and values, once
        many = 6 * nb * w * d                                  # three shifted copies of each
        kv = sp.Piecewise((one, sp.Eq(slices, 1)), (many, True)) if _is_symbolic(slices) \
            else (one if slices == 1 else many)
        per = 3 * nb * w**2 + nb * w * d + kv
    elif variant == "bigbird":
        b = block_size
        nb, sparse, dense, _ = _bigbird_parts(n, b, window_blocks, global_blocks, random_blocks)
        has_dense = sp.Piecewise((1, dense > 0), (0, True)) if _is_symbolic(dense) else int(dense > 0)
        per = sparse * b * (b + 2 * d) + dense * nb * b**2 + 2 * nb * b * d + has_dense * 2 * nb * b * d
    elif variant == "linformer":
        per = n * rank + 2 * rank * d
    elif variant == "linear":
        per = 3 * n * d + d**2 + d + 2 * n
    else:
        m = features
        per = 6 * n * m + 3 * n * d + 3 * n + m * d + m + 1
    return _result(bpv * slices * per)


# --------------------------------------------------------------------------- crossover
def crossover_n(variant: str, d: Size, *, window: Size = DEFAULTS["window"],
                block_size: Size = DEFAULTS["block_size"],
                window_blocks: int = DEFAULTS["window_blocks"],
                global_blocks: int = DEFAULTS["global_blocks"],
                random_blocks: int = DEFAULTS["random_blocks"], rank: Size = DEFAULTS["rank"],
                features: Size = DEFAULTS["features"]) -> Size:
    """The length n* beyond which ``variant`` does fewer matrix-product FLOPs than exact attention.

    For every n > n* the variant's ``attention_flops`` is below exact attention's, and at n* and
    below it is not; for the window and BigBird, which pad to whole windows or blocks, among
    lengths that are multiples of the window or block. Derived by solving flops(n) = 4 n^2 d
    with SymPy (whole blocks): window 3 w, Linformer 2 k, linear d + 1/2, Performer
    2 m + m / (2 d). BigBird's blocks are dense while n / b is small, so its n* is the last whole
    number of blocks at which it is not cheaper (4 b with the library's 3 + 1 + 1 blocks).
    """
    variant = _variant(variant)
    if variant == "exact":
        raise ValueError("exact attention has no crossover with itself; pass one of "
                         f"{VARIANTS[1:]}.")
    _, d, window, block_size, rank, features, _ = _common(1, d, window, block_size, rank, features, 1, 1)
    if variant == "bigbird":
        window_blocks = _count("window_blocks", window_blocks, 1, "use an odd count such as 3")
        global_blocks = _count("global_blocks", global_blocks, 0, "use 0 for no global blocks")
        random_blocks = _count("random_blocks", random_blocks, 0, "use 0 for no random blocks")
        per_row = 2 * (window_blocks // 2) + 1 + global_blocks + random_blocks
        # beyond per_row blocks the closed form (nb - g) R + g nb < nb^2 holds; check the rows below
        last = max(nb for nb in range(max(1, global_blocks), per_row + 1)
                   if _bigbird_cost_blocks(nb, window_blocks, global_blocks, random_blocks) >= nb**2)
        return _result(last * block_size)
    x = sp.Symbol("n", positive=True)
    cost = _flops_per_slice(variant, x, d, window, block_size, window_blocks, global_blocks,
                            random_blocks, rank, features, whole_blocks=True)
    roots = [r for r in sp.solve(sp.Eq(cost, 4 * x**2 * d), x) if r != 0]
    if len(roots) != 1:
        raise ValueError(f"no unique positive crossover for {variant} with these arguments: {roots}.")
    return _result(sp.simplify(roots[0]))


def _bigbird_cost_blocks(nb: int, window_blocks: int, global_blocks: int, random_blocks: int) -> int:
    """BigBird's FLOPs in units of 4 b^2 d (exact attention on nb blocks costs nb^2 of them)."""
    sparse, dense = _bigbird_table(nb, window_blocks, global_blocks, random_blocks)
    return int(sparse + dense * nb)


# --------------------------------------------------------------------------- the explorer
def explorer(n: int = 2048, d: int = 64, window: int = 64, block_size: int = 64, rank: int = 128,
             features: int = 128, heads: int = 2):
    """The efficient-attention cost explorer for the static site (``explorers.Explorer``).

    Controls n, d, window, BigBird block size, Linformer rank, Performer features and
    batch x heads, defaulting to the arguments (the tradeoffs page's running example). Outputs,
    generated by calling ``attention_flops``, ``attention_bytes`` and ``crossover_n`` with SymPy
    symbols: FLOPs and saved bytes of each variant and each variant's crossover n*; one curve per
    variant of FLOPs against n (log-log).
    """
    from .explorers import Control, Explorer, Output

    names = ("n", "d", "window", "block", "rank", "features", "heads")
    sym = {k: sp.Symbol(k, positive=True, integer=True) for k in names}
    length = sp.Symbol("length", positive=True)        # the curves' x, apart from the control n
    params = dict(window=sym["window"], block_size=sym["block"], rank=sym["rank"],
                  features=sym["features"])
    for key, value in dict(n=n, d=d, window=window, block_size=block_size, rank=rank,
                           features=features, heads=heads).items():
        _size(key, value)
    controls = [
        Control("n", "sequence length n", n, min=1, max=2**20, unit="tokens"),
        Control("d", "head size d", d, min=1, max=1024),
        Control("window", "window w (neighbours on each side)", window, min=1, max=2**16, unit="tokens"),
        Control("block", "BigBird block size b", block_size, min=1, max=2**12, unit="tokens"),
        Control("rank", "Linformer rank k", rank, min=1, max=2**16),
        Control("features", "Performer features m", features, min=1, max=2**16),
        Control("heads", "batch x heads", heads, min=1, max=2**12, unit="slices"),
    ]
    outputs, plots = [], []
    for v in VARIANTS:
        label = LABELS[v]
        outputs.append(Output(f"flops_{v}", f"{label}: FLOPs",
                              attention_flops(v, sym["n"], sym["d"], heads=sym["heads"], **params), "sci", 3))
        outputs.append(Output(f"bytes_{v}", f"{label}: bytes saved for backward",
                              attention_bytes(v, sym["n"], sym["d"], heads=sym["heads"], **params), "sci", 3))
        if v != "exact":
            outputs.append(Output(f"cross_{v}", f"{label}: fewer FLOPs than exact for n >",
                                  crossover_n(v, sym["d"], **params), "fixed", 1))
        plots.append({"type": "curve", "x": "length", "from": 1, "to": 6, "points": 151,
                      "xlog": True, "ylog": True, "label": label,
                      "y": attention_flops(v, length, sym["d"], heads=sym["heads"], **params),
                      "xlabel": "sequence length n (tokens)", "ylabel": "FLOPs (matrix products)"})
    return Explorer(
        "attention-cost", "Efficient attention: FLOPs, saved memory and the crossover length",
        controls, outputs, plots=plots,
        note="attncost.attention_flops / attention_bytes / crossover_n: one non-causal forward pass, "
             "value size d. FLOPs: the matrix products, as FlopCounterMode counts them (softmax, "
             "feature maps and other elementwise work not included). Bytes: float32 tensors saved "
             "for backward, without q, k, v, Linformer's E, the Performer's omega and the sparse "
             "variants' masks and indices. BigBird keeps 3 window + 1 global + 1 random blocks per "
             "row. Window and BigBird crossovers are among lengths that are whole windows or blocks.")


__all__ = ["VARIANTS", "LABELS", "DEFAULTS", "attention_flops", "attention_bytes", "crossover_n", "explorer"]
