"""Closed-form compute and memory costs of a decoder-only Transformer.

Used by the chapter "Compute and memory" (``ch-compute``) and by the KV-cache serving chapter.
Every formula accepts plain ints *and* SymPy symbols: with ints it returns an ``int`` (or a
``float`` where a rate is involved), with symbols a SymPy expression, so one function both
derives a formula and evaluates it::

    >>> from transformer_challenges import costs
    >>> costs.kv_cache_bytes(costs.GPT3_175B, batch=64, seq_len=512 + 32)
    164282499072

Conventions (Megatron-LM / Korthikanti et al. 2022 notation): ``l`` layers, hidden size
``h = d_model``, ``a`` attention heads, sequence length ``s``, micro-batch ``b``, vocabulary ``V``,
tensor-parallel size ``t``. Activations and KV cache are 16-bit (2 bytes per value).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Union

import sympy as sp

Size = Union[int, sp.Expr]
RECOMPUTE_MODES = ("none", "selective", "full")


# --------------------------------------------------------------------------- helpers
def _is_symbolic(x) -> bool:
    return isinstance(x, sp.Basic) and not x.is_number


def _as_size(name: str, value, allow_zero: bool = False) -> Size:
    """Validate a count (int or SymPy expression); return it as an int or SymPy expression."""
    if _is_symbolic(value):
        if value.is_positive is False and not (allow_zero and value.is_zero):
            raise ValueError(f"{name}={value} is not positive; declare the symbol with positive=True.")
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(value, sp.Basic):  # a SymPy number
        value = int(value) if value.is_integer else float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 300e9 tokens is fine
    if not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer (or a SymPy symbol), got {value!r}.")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a positive integer, got {value}; pass a size >= 1.")
    return value


def _as_rate(name: str, value, upper: float | None = None):
    """Validate a positive real number (int, float or SymPy expression)."""
    if _is_symbolic(value):
        if value.is_positive is False:
            raise ValueError(f"{name}={value} is not positive; declare the symbol with positive=True.")
        return value
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, sp.Basic)):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    if not value > 0 or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be > 0{bound}, got {value!r}.")
    return value


def _finish(expr, integer: bool = True):
    """SymPy result -> int (exact), float, or the expression itself when symbols remain."""
    expr = sp.nsimplify(expr) if isinstance(expr, float) else sp.sympify(expr)
    if expr.free_symbols:
        return sp.factor(expr) if integer else sp.simplify(expr)
    if integer and expr.is_integer:
        return int(expr)
    if integer and expr.is_rational:
        return int(math.ceil(expr))  # a fraction of a byte rounds up
    return float(expr)


def _divides(name_d: str, d, name_n: str, n, fix: str) -> None:
    if not _is_symbolic(d) and not _is_symbolic(n) and n % d:
        raise ValueError(f"{name_n}={n} is not divisible by {name_d}={d}; {fix}")


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPT-style decoder: ``d_ff`` defaults to 4·d_model, ``n_kv_heads`` to ``n_heads``.

    ``n_kv_heads < n_heads`` describes grouped-query attention (Ainslie et al. 2023);
    ``n_kv_heads = 1`` is multi-query attention. Sizes may be ints or SymPy symbols.
    """

    n_layers: Size
    d_model: Size
    n_heads: Size
    vocab_size: Size
    seq_len: Size
    d_ff: Size | None = None
    n_kv_heads: Size | None = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            object.__setattr__(self, f.name, _as_size(f.name, value))
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        _divides("n_heads", self.n_heads, "d_model", self.d_model,
                 "choose n_heads that divides d_model (head size = d_model / n_heads).")
        _divides("n_kv_heads", self.n_kv_heads, "n_heads", self.n_heads,
                 "grouped-query attention needs n_kv_heads that divides n_heads.")

    @property
    def head_dim(self) -> Size:
        """Size of one attention head, d_model / n_heads."""
        if _is_symbolic(self.d_model) or _is_symbolic(self.n_heads):
            return self.d_model / self.n_heads
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> Size:
        """Width of the K (or V) projection: n_kv_heads · head_dim (= d_model without GQA)."""
        return self.n_kv_heads * self.head_dim

    @classmethod
    def symbolic(cls, gqa: bool = False) -> "ModelConfig":
        """A configuration of positive SymPy symbols l, h, a, V, s (and a_kv when ``gqa``)."""
        l, h, a, V, s = sp.symbols("l h a V s", positive=True, integer=True)
        a_kv = sp.Symbol("a_kv", positive=True, integer=True) if gqa else None
        return cls(n_layers=l, d_model=h, n_heads=a, vocab_size=V, seq_len=s, n_kv_heads=a_kv)


# The GPT-3 family, Brown et al. 2020, Table 2.1 (vocabulary 50257 BPE tokens, context 2048).
# Two rows of that table are inconsistent with n_heads * d_head = d_model; we keep d_model and
# d_head = 128 from the table and fix the other number:
#   GPT-3 XL: the table says n_heads=24, d_head=128, but 24*128 = 3072 != 2048 -> n_heads = 16.
#   GPT-3 13B: the table says d_model=5140, but 40 heads * 128 = 5120 -> d_model = 5120.
GPT3_VOCAB, GPT3_CONTEXT = 50257, 2048
GPT3_SMALL = ModelConfig(12, 768, 12, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_MEDIUM = ModelConfig(24, 1024, 16, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_LARGE = ModelConfig(24, 1536, 16, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_XL = ModelConfig(24, 2048, 16, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_2_7B = ModelConfig(32, 2560, 32, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_6_7B = ModelConfig(32, 4096, 32, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_13B = ModelConfig(40, 5120, 40, GPT3_VOCAB, GPT3_CONTEXT)
GPT3_175B = ModelConfig(96, 12288, 96, GPT3_VOCAB, GPT3_CONTEXT)

GPT3_FAMILY = {
    "GPT-3 Small": GPT3_SMALL, "GPT-3 Medium": GPT3_MEDIUM, "GPT-3 Large": GPT3_LARGE,
    "GPT-3 XL": GPT3_XL, "GPT-3 2.7B": GPT3_2_7B, "GPT-3 6.7B": GPT3_6_7B,
    "GPT-3 13B": GPT3_13B, "GPT-3 175B": GPT3_175B,
}


def _check_cfg(cfg) -> ModelConfig:
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"expected a costs.ModelConfig, got {type(cfg).__name__}; build one with "
                         "ModelConfig(n_layers, d_model, n_heads, vocab_size, seq_len).")
    return cfg


# --------------------------------------------------------------------------- parameters
def param_terms(cfg: ModelConfig) -> dict[str, Size]:
    """Parameter count of each part of a GPT-2/3-style model (learned positions, tied output head)."""
    cfg = _check_cfg(cfg)
    l, h, f, kv = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.kv_dim
    return {
        "token embedding (V·h, tied with the output head)": cfg.vocab_size * h,
        "position embedding (s·h)": cfg.seq_len * h,
        "attention weights l·(h·(h+2·kv) + h·h)": l * (h * (h + 2 * kv) + h * h),
        "attention biases l·(h+2·kv + h)": l * (h + 2 * kv + h),
        "MLP weights l·2·h·d_ff": l * 2 * h * f,
        "MLP biases l·(d_ff + h)": l * (f + h),
        "layer norms l·4·h": l * 4 * h,
        "final layer norm 2·h": 2 * h,
    }


def param_count(cfg: ModelConfig) -> Size:
    """Total parameters, embeddings included: 12·l·h² + 13·l·h + (V + s)·h + 2·h for a standard GPT.

    Counted: token and learned position embeddings, QKV/output projections with biases, the
    two MLP matrices with biases, two LayerNorms per layer and the final LayerNorm. The output
    head is tied to the token embedding (GPT-2/3), so it is not counted twice.
    """
    return _finish(sum(param_terms(cfg).values()))


# --------------------------------------------------------------------------- compute
def training_flops(n_params: Size, n_tokens: Size, recompute: bool = False) -> Size:
    """Training FLOPs 6·N·D (forward 2ND + backward 4ND), or 8·N·D with full recomputation."""
    n = _as_size("n_params", n_params)
    d = _as_size("n_tokens", n_tokens)
    if not isinstance(recompute, bool):
        raise ValueError(f"recompute must be True or False, got {recompute!r}.")
    return _finish((8 if recompute else 6) * sp.sympify(n) * d)


def training_time_seconds(n_params: Size, n_tokens: Size, n_gpus: Size, peak_flops,
                          utilization, recompute: bool = True):
    """Wall-clock seconds: training_flops / (n_gpus · peak_flops · utilization).

    ``recompute=True`` (the default, as in Narayanan et al. 2021 and the source) uses 8·N·D:
    full activation recomputation runs the forward pass twice.
    """
    flops = training_flops(n_params, n_tokens, recompute)
    g = _as_size("n_gpus", n_gpus)
    p = _as_rate("peak_flops", peak_flops)
    u = _as_rate("utilization", utilization, upper=1)
    if any(_is_symbolic(x) for x in (flops, g, p, u)):
        return sp.simplify(sp.sympify(flops) / (g * sp.nsimplify(p) * sp.nsimplify(u)))
    return float(flops) / (g * float(p) * float(u))


# --------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class ActivationTerm:
    """One tensor a Transformer layer saves for its backward pass (Korthikanti et al. 2022, §4.1)."""

    block: str          # "attention", "MLP" or "layer norm"
    tensor: str         # what is stored
    bytes: Size         # per layer, for the whole micro-batch, no parallelism
    tp_split: bool      # divided by t under tensor parallelism (without sequence parallelism)
    selective: bool     # dropped (recomputed) by selective activation recomputation


def activation_terms(cfg: ModelConfig, batch: Size, seq_len: Size | None = None,
                     dropout: bool = True) -> list[ActivationTerm]:
    """The per-layer saved tensors of the reference (Megatron) layer in 16-bit, term by term.

    With the defaults (d_ff = 4h, no GQA, dropout) they sum to s·b·h·(34 + 5·a·s/h) bytes.
    ``dropout=False`` drops the three dropout masks (1 byte per element) and the dropout output
    after the softmax (the attention-times-V product then saves the softmax output itself).
    """
    cfg = _check_cfg(cfg)
    b = _as_size("batch", batch)
    s = _as_size("seq_len", cfg.seq_len if seq_len is None else seq_len)
    h, a, f, kv = cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.kv_dim
    sb = s * b
    terms = [
        ActivationTerm("layer norm", "input of LayerNorm 1 (2sbh)", 2 * sb * h, False, False),
        ActivationTerm("attention", "input of the QKV projection (2sbh)", 2 * sb * h, False, False),
        ActivationTerm("attention", "Q and K for QK^T (4sbh)", 2 * sb * (h + kv), True, False),
        ActivationTerm("attention", "softmax output (2as^2b)", 2 * a * s * sb, True, True),
    ]
    if dropout:
        terms += [
            ActivationTerm("attention", "softmax dropout mask (as^2b)", a * s * sb, True, True),
            ActivationTerm("attention", "softmax dropout output (2as^2b)", 2 * a * s * sb, True, True),
        ]
    terms += [
        ActivationTerm("attention", "V for attention-times-V (2sbh)", 2 * sb * kv, True, False),
        ActivationTerm("attention", "input of the output projection (2sbh)", 2 * sb * h, True, False),
    ]
    if dropout:
        terms.append(ActivationTerm("attention", "attention dropout mask (sbh)", sb * h, False, False))
    terms += [
        ActivationTerm("layer norm", "input of LayerNorm 2 (2sbh)", 2 * sb * h, False, False),
        ActivationTerm("MLP", "input of the first MLP linear (2sbh)", 2 * sb * h, False, False),
        ActivationTerm("MLP", "input of GELU (8sbh)", 2 * sb * f, True, False),
        ActivationTerm("MLP", "input of the second MLP linear (8sbh)", 2 * sb * f, True, False),
    ]
    if dropout:
        terms.append(ActivationTerm("MLP", "MLP dropout mask (sbh)", sb * h, False, False))
    return terms


def activation_bytes(cfg: ModelConfig, batch: Size, seq_len: Size | None = None,
                     recompute: str = "none", tensor_parallel: Size = 1,
                     sequence_parallel: bool = False) -> Size:
    """Activation bytes of all ``n_layers`` layers per GPU (Korthikanti et al. 2022, Table 2).

    Per layer, 16-bit activations, d_ff = 4h:
    ``none``: s·b·h·(34 + 5·a·s/h); with tensor parallelism t: s·b·h·(10 + 24/t + 5·a·s/(h·t));
    with sequence parallelism as well: s·b·h·(34 + 5·a·s/h)/t. ``selective`` drops the 5·a·s/h
    term (softmax, its dropout mask and output are recomputed). ``full`` keeps only each layer's
    input, 2·s·b·h (divided by t with sequence parallelism). Embedding and output-layer
    activations are not included (Korthikanti et al.'s Eq. 4 adds them; they are small).
    """
    cfg = _check_cfg(cfg)
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute={recompute!r} is unknown; use one of {RECOMPUTE_MODES}.")
    if not isinstance(sequence_parallel, bool):
        raise ValueError(f"sequence_parallel must be True or False, got {sequence_parallel!r}.")
    t = _as_size("tensor_parallel", tensor_parallel)
    _divides("tensor_parallel", t, "n_heads", cfg.n_heads,
             "tensor parallelism splits whole heads: use a tensor_parallel that divides n_heads.")
    _divides("tensor_parallel", t, "n_kv_heads", cfg.n_kv_heads,
             "tensor parallelism splits whole KV heads: use a tensor_parallel that divides n_kv_heads.")
    s = _as_size("seq_len", cfg.seq_len if seq_len is None else seq_len)
    b = _as_size("batch", batch)
    t = sp.sympify(t)
    if recompute == "full":
        per_layer = 2 * sp.sympify(s) * b * cfg.d_model / (t if sequence_parallel else 1)
    else:
        per_layer = 0
        for term in activation_terms(cfg, b, s, dropout=True):
            if recompute == "selective" and term.selective:
                continue
            split = term.tp_split or sequence_parallel
            per_layer += term.bytes / t if split else term.bytes
    return _finish(cfg.n_layers * per_layer)


# --------------------------------------------------------------------------- inference
def kv_cache_bytes(cfg: ModelConfig, batch: Size, seq_len: Size, bytes_per_value=2) -> Size:
    """KV-cache bytes: 2 (K and V) · n_layers · n_kv_heads · head_dim · batch · seq_len · bytes.

    ``seq_len`` counts every cached token (prompt plus generated). ``bytes_per_value`` is 2 for
    fp16/bf16, 1 for int8, 0.5 for int4. Without GQA this is 4·b·l·h·tokens bytes in 16-bit.
    """
    cfg = _check_cfg(cfg)
    b = _as_size("batch", batch)
    s = _as_size("seq_len", seq_len)
    nbytes = _as_rate("bytes_per_value", bytes_per_value)
    if isinstance(nbytes, float):
        nbytes = sp.nsimplify(nbytes)
    return _finish(2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * b * s * sp.sympify(nbytes))


def parameter_bytes(n_params: Size, bytes_per_param=2) -> Size:
    """Bytes to hold ``n_params`` parameters: 2 for fp16 weights, 16 for mixed-precision Adam (ZeRO)."""
    n = _as_size("n_params", n_params)
    per = _as_rate("bytes_per_param", bytes_per_param)
    if isinstance(per, float):
        per = sp.nsimplify(per)
    return _finish(sp.sympify(n) * per)


# --------------------------------------------------------------------------- will it fit?
# A free Colab runtime's GPU is an NVIDIA T4 with 16 GB. The CUDA context, cuBLAS workspaces and
# the caching allocator's fragmentation take some of it, so a chapter's estimate must leave
# GPU_HEADROOM of the card free.
T4_BYTES = 16 * 10**9
GPU_HEADROOM = 0.25


def training_memory_parts(cfg: ModelConfig, batch: Size, bytes_per_value: int = 4,
                          optimizer_bytes_per_param: int = 16) -> dict[str, Size]:
    """Upper-bound GPU memory of one training step of a GPT-style model, by part.

    Parameters, gradients and Adam's two moments in fp32 take ``optimizer_bytes_per_param`` =
    16 bytes per parameter; activations are Korthikanti et al.'s per-layer formula, written for
    16-bit values, scaled to ``bytes_per_value`` (4: the book's small models train in fp32); the
    logits, their softmax and gradient are 3·b·s·V values. Sizes may be SymPy symbols.
    """
    cfg = _check_cfg(cfg)
    b = _as_size("batch", batch)
    if bytes_per_value not in (2, 4):
        raise ValueError(f"bytes_per_value={bytes_per_value!r}: use 4 (fp32) or 2 (fp16/bf16).")
    if optimizer_bytes_per_param not in (8, 12, 16):
        raise ValueError(f"optimizer_bytes_per_param={optimizer_bytes_per_param!r}: use 16 (fp32 "
                         "Adam: weights, gradients, two moments), 12 (SGD with momentum) or 8 (SGD).")
    scale = sp.Rational(bytes_per_value, 2)
    return {
        "weights+grads+optimizer":
            _finish(optimizer_bytes_per_param * sp.sympify(param_count(cfg))),
        "activations": _finish(scale * activation_bytes(cfg, b)),
        "logits":
            _finish(3 * b * cfg.seq_len * cfg.vocab_size * bytes_per_value),
    }


def gpu_fit_line(parts: dict[str, int], gpu_bytes: int = T4_BYTES, gpu: str = "16 GB T4",
                 headroom: float = GPU_HEADROOM) -> str:
    """One line for a chapter's set-up cell: the full-mode GPU memory estimate and its parts,
    and that it fits ``gpu``. Raises ``ValueError`` when it does not fit with ``headroom`` to spare."""
    if not parts:
        raise ValueError("parts is empty: give the estimate's parts as {name: bytes}.")
    bad = {k: v for k, v in parts.items() if not isinstance(v, numbers.Integral) or v < 0}
    if bad:
        raise ValueError(f"parts must be non-negative integers of bytes; got {bad}.")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom={headroom!r} must lie in [0, 1); e.g. 0.25 keeps a quarter free.")
    total = sum(int(v) for v in parts.values())
    budget = gpu_bytes * (1 - headroom)
    if total > budget:
        raise ValueError(f"the full-mode estimate {total / 1e9:.2f} GB exceeds {budget / 1e9:.1f} GB "
                         f"({1 - headroom:.0%} of a {gpu}); shrink the full sizes of this chapter.")
    detail = ", ".join(f"{name} {int(v) / 1e9:.2f}" for name, v in parts.items())
    return (f"full mode needs ~{total / 1e9:.2f} GB on the GPU ({detail} GB): "
            f"fits a {gpu} ({total / gpu_bytes:.0%} of it)")


__all__ = [
    "ModelConfig", "ActivationTerm", "GPT3_FAMILY", "GPT3_SMALL", "GPT3_MEDIUM", "GPT3_LARGE",
    "GPT3_XL", "GPT3_2_7B", "GPT3_6_7B", "GPT3_13B", "GPT3_175B", "RECOMPUTE_MODES",
    "param_terms", "param_count", "training_flops", "training_time_seconds", "activation_terms",
    "activation_bytes", "kv_cache_bytes", "parameter_bytes", "T4_BYTES", "GPU_HEADROOM",
    "training_memory_parts", "gpu_fit_line",
]
