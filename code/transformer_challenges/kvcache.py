"""Serving long contexts: the KV cache and the three levers that shrink it.

Used by the chapter "Serving long contexts" (``chapters/08-serving``, label ``ch-serving``):

* sizes: ``kv_bytes_per_token``, ``config_kv_bytes_per_request`` (capped at a sliding window)
  and ``REAL_CONFIGS`` (published model shapes, with citation keys);
* grouped-query attention (``GQAttention``; ``n_kv_heads == n_heads`` is MHA, ``1`` is MQA) and a
  small RoPE decoder built on it (``GQADecoder``) that decodes incrementally with a ``KVCache``;
* paged KV memory: a block-table allocator (``BlockAllocator``, the PagedAttention idea of
  Kwon et al. 2023), a contiguous first-fit allocator (``ContiguousAllocator``) and a request-stream
  simulator (``simulate_serving``);
* KV quantisation: ``quantize`` / ``dequantize`` (asymmetric int8/int4/int2, per token or per
  channel, with fp16 scales and zero points, codes bit-packed into bytes);
* the sliding-window cache: ``KVCache(window=W)`` keeps the last ``W`` positions only.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import naive_attention, sdpa_attention
from .model import FeedForward

ATTN_IMPLS = ("sdpa", "naive")
QUANT_AXES = ("token", "channel")
QUANT_BITS = (2, 4, 8)
SCHEMES = ("paged", "max", "pow2", "oracle")

# Published shapes (head_dim = d_model / n_heads unless given). n_kv_heads == n_heads is multi-head attention (MHA), 1 is multi-query (MQA),
# anything in between grouped-query attention (GQA). ``context`` is the trained context length.
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "GPT-3 175B": dict(n_layers=96, d_model=12288, n_heads=96, n_kv_heads=96, vocab_size=50257,
                       context=2048, cite="brown2020language"),
    # PaLM's heads are 256 wide although 48 * 256 = 12288 < d_model (its Table 1): head_dim is explicit.
    "PaLM 540B": dict(n_layers=118, d_model=18432, n_heads=48, n_kv_heads=1, head_dim=256,
                      vocab_size=256000, context=2048, cite="chowdhery2023palm"),
    "LLaMA-2 7B": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, vocab_size=32000,
                       context=4096, cite="touvron2023llama2"),
    "LLaMA-2 70B": dict(n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, vocab_size=32000,
                        context=4096, cite="touvron2023llama2"),
    "Mistral 7B": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, vocab_size=32000,
                       context=8192, window=4096, cite="jiang2023mistral"),
    "Llama 3 8B": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, vocab_size=128256,
                       context=131072, cite="grattafiori2024llama3"),
    "Llama 3 70B": dict(n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, vocab_size=128256,
                        context=131072, cite="grattafiori2024llama3"),
    "Llama 3 405B": dict(n_layers=126, d_model=16384, n_heads=128, n_kv_heads=8, vocab_size=128256,
                         context=131072, cite="grattafiori2024llama3"),
}


def _is_symbolic(*values: Any) -> bool:
    return any(type(v).__module__.startswith("sympy") for v in values)


def _check_pos_int(**kwargs: Any) -> None:
    for name, value in kwargs.items():
        if _is_symbolic(value):
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


# ----------------------------------------------------------------------------------------- sizes
def kv_bytes_per_token(n_layers: Any, n_kv_heads: Any, head_dim: Any, bytes_per_value: Any = 2) -> Any:
    """KV-cache bytes one token occupies: 2 (K and V) * layers * KV heads * head size * bytes.

    Accepts ints or SymPy symbols (then returns the symbolic expression).
    """
    _check_pos_int(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim)
    if not _is_symbolic(bytes_per_value) and not bytes_per_value > 0:
        raise ValueError(f"bytes_per_value must be > 0, got {bytes_per_value!r}; fp16 is 2, int8 is 1, int4 is 0.5.")
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value


def quantized_bytes_per_value(bits: Any, head_dim: Any, stat_bytes: int = 4) -> Any:
    """Bytes per cached value of ``quantize(x, bits, axis="token")`` on (…, tokens, head_dim) keys or
    values: ``bits / 8`` for the packed code plus the fp16 scale and zero point (``stat_bytes`` = 4)
    shared by the ``head_dim`` values of one token and head. Accepts SymPy symbols."""
    if not _is_symbolic(bits) and bits not in QUANT_BITS:
        raise ValueError(f"bits={bits!r} is not supported; use one of {QUANT_BITS}.")
    _check_pos_int(head_dim=head_dim, stat_bytes=stat_bytes)
    return sp.Rational(1, 8) * bits + sp.Integer(stat_bytes) / head_dim if _is_symbolic(bits, head_dim) \
        else bits / 8 + stat_bytes / head_dim


def config_kv_bytes_per_token(name: str, bytes_per_value: float = 2, n_kv_heads: int | None = None) -> float:
    """``kv_bytes_per_token`` for an entry of ``REAL_CONFIGS`` (optionally with other KV heads)."""
    if name not in REAL_CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; use one of {list(REAL_CONFIGS)}.")
    c = REAL_CONFIGS[name]
    kv = c["n_kv_heads"] if n_kv_heads is None else n_kv_heads
    if c["n_heads"] % kv:
        raise ValueError(f"n_kv_heads={kv} must divide n_heads={c['n_heads']} of {name}.")
    return kv_bytes_per_token(c["n_layers"], kv, head_dim_of(name), bytes_per_value)


def config_cached_tokens(name: str, seq_len: int | None = None) -> int:
    """Positions one request of ``seq_len`` tokens (default: the trained context) keeps in the cache.

    A model trained with a sliding window (``window`` in ``REAL_CONFIGS``, Mistral 7B's 4,096)
    keeps only the last ``window`` positions, so its cache stops growing there; any other model
    keeps all ``seq_len``.
    """
    if name not in REAL_CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; use one of {list(REAL_CONFIGS)}.")
    c = REAL_CONFIGS[name]
    n = c["context"] if seq_len is None else seq_len
    _check_pos_int(seq_len=n)
    return min(n, c["window"]) if c.get("window") else n


def config_kv_bytes_per_request(name: str, seq_len: int | None = None, bytes_per_value: float = 2,
                                n_kv_heads: int | None = None) -> float:
    """KV-cache bytes of one request of ``seq_len`` tokens (default: the trained context), window-capped."""
    return config_cached_tokens(name, seq_len) * config_kv_bytes_per_token(name, bytes_per_value, n_kv_heads)


def head_dim_of(name: str) -> int:
    """Head size of an entry of ``REAL_CONFIGS``."""
    if name not in REAL_CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; use one of {list(REAL_CONFIGS)}.")
    c = REAL_CONFIGS[name]
    return c.get("head_dim", c["d_model"] // c["n_heads"])


def model_config(name: str):
    """The ``costs.ModelConfig`` of an entry of ``REAL_CONFIGS`` (for ``costs.kv_cache_bytes``)."""
    from .costs import ModelConfig

    if name not in REAL_CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; use one of {list(REAL_CONFIGS)}.")
    c = REAL_CONFIGS[name]
    if head_dim_of(name) * c["n_heads"] != c["d_model"]:
        raise ValueError(
            f"{name} has heads of {head_dim_of(name)} with n_heads * head_dim != d_model, which "
            "costs.ModelConfig cannot express; use config_kv_bytes_per_token for its KV cache."
        )
    return ModelConfig(n_layers=c["n_layers"], d_model=c["d_model"], n_heads=c["n_heads"],
                       vocab_size=c["vocab_size"], seq_len=c["context"], n_kv_heads=c["n_kv_heads"])


# ------------------------------------------------------------------------------- quantisation
@dataclass
class QuantizedTensor:
    """Bit-packed integer codes with fp16 scale and zero point: x ~ code * scale + zero."""

    packed: torch.Tensor          # uint8, ``8 // bits`` codes per byte
    scale: torch.Tensor           # fp16, broadcastable to the (padded) grouped shape
    zero: torch.Tensor            # fp16, same shape as scale
    bits: int
    axis: str
    group: int | None
    shape: tuple[int, ...]        # shape of the original tensor
    grouped_shape: tuple[int, ...]  # shape the statistics were computed in (after padding / grouping)
    dtype: torch.dtype = torch.float32

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: packed codes plus fp16 scales and zero points."""
        return (self.packed.numel() * self.packed.element_size()
                + self.scale.numel() * self.scale.element_size()
                + self.zero.numel() * self.zero.element_size())


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes (< 2**bits) into a flat uint8 tensor, 8 // bits per byte."""
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits!r} is not supported; use one of {QUANT_BITS}.")
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() and int(flat.max()) >= 2 ** bits:
        raise ValueError(f"codes must be < 2**bits = {2 ** bits}; got a code {int(flat.max())}.")
    per = 8 // bits
    pad = (-flat.numel()) % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.view(-1, per)
    out = torch.zeros(flat.shape[0], dtype=torch.uint8)
    for i in range(per):
        out |= flat[:, i] << (bits * i)
    return out


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``numel`` codes as a flat uint8 tensor."""
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits!r} is not supported; use one of {QUANT_BITS}.")
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per)]
    return torch.stack(parts, dim=1).reshape(-1)[:numel]


def quantize(x: torch.Tensor, bits: int = 8, axis: str = "token", group: int | None = None) -> QuantizedTensor:
    """Asymmetric min-max quantisation of ``x`` (..., tokens, channels) to ``bits``-bit codes.

    ``axis="token"``: one (scale, zero) per token (statistics over the channel dimension).
    ``axis="channel"``: one (scale, zero) per channel, shared by ``group`` consecutive tokens
    (all tokens when ``group`` is None), as KIVI does for keys (Liu et al. 2024).
    """
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits!r} is not supported; use one of {QUANT_BITS}.")
    if axis not in QUANT_AXES:
        raise ValueError(f"axis={axis!r} is unknown; use one of {QUANT_AXES}.")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., tokens, channels), got {tuple(x.shape)}.")
    if group is not None and (not isinstance(group, int) or group <= 0):
        raise ValueError(f"group must be a positive int or None, got {group!r}.")
    xf = x.detach().float()
    shape = tuple(x.shape)
    if axis == "token":
        g = xf
        lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    else:
        t = shape[-2]
        size = t if group is None else min(group, t)
        pad = (-t) % size
        if pad:  # repeat the last token: it changes neither min nor max of its group
            xf = torch.cat([xf, xf[..., -1:, :].expand(*shape[:-2], pad, shape[-1])], dim=-2)
        g = xf.reshape(*shape[:-2], -1, size, shape[-1])
        lo, hi = g.amin(dim=-2, keepdim=True), g.amax(dim=-2, keepdim=True)
    levels = 2 ** bits - 1
    scale = ((hi - lo) / levels).clamp_min(1e-8).half()
    zero = lo.half()
    codes = torch.round((g - zero.float()) / scale.float()).clamp_(0, levels)
    if axis == "channel":  # drop the padding rows: only real tokens' codes are stored
        codes = codes.reshape(*shape[:-2], -1, shape[-1])[..., : shape[-2], :]
    return QuantizedTensor(pack_bits(codes, bits), scale, zero, bits, axis, group, shape,
                           tuple(g.shape), x.dtype)


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """Reconstruct the tensor a ``QuantizedTensor`` stands for (in its original dtype)."""
    codes = unpack_bits(q.packed, q.bits, int(np.prod(q.shape))).float().view(q.shape)
    scale, zero = q.scale.float(), q.zero.float()
    if q.axis == "channel":  # (..., groups, 1, C) -> one row per token
        size, t = q.grouped_shape[-2], q.shape[-2]
        scale = scale.squeeze(-2).repeat_interleave(size, dim=-2)[..., :t, :]
        zero = zero.squeeze(-2).repeat_interleave(size, dim=-2)[..., :t, :]
    return (codes * scale + zero).to(q.dtype)


def fake_quantize(x: torch.Tensor, bits: int = 8, axis: str = "token", group: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x, ...))``: the values a quantised cache hands back to attention."""
    return dequantize(quantize(x, bits, axis, group))


# ------------------------------------------------------------------------------------ KV cache
class KVCache:
    """Per-layer keys and values of the tokens seen so far, with their absolute positions.

    ``window=W`` turns it into the sliding-window (rolling) cache of Mistral 7B: only the last
    ``W`` positions are kept, so its size stops growing. ``quantize_`` replaces the stored
    entries by bit-packed codes; entries appended later stay in full precision (KIVI's residual).
    """

    def __init__(self, n_layers: int, window: int | None = None):
        _check_pos_int(n_layers=n_layers)
        if window is not None:
            _check_pos_int(window=window)
        self.n_layers, self.window = n_layers, window
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.qk: list[QuantizedTensor | None] = [None] * n_layers
        self.qv: list[QuantizedTensor | None] = [None] * n_layers
        self.pos: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.length = 0  # tokens seen (the next token's absolute position)

    def next_positions(self, n: int, device=None) -> torch.Tensor:
        """Absolute positions of the next ``n`` tokens."""
        return torch.arange(self.length, self.length + n, device=device)

    def _read(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        k, v = self.k[layer], self.v[layer]
        if self.qk[layer] is not None:
            dk, dv = dequantize(self.qk[layer]), dequantize(self.qv[layer])
            k = dk if k is None else torch.cat([dk, k], dim=-2)
            v = dv if v is None else torch.cat([dv, v], dim=-2)
        return k, v

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values of ``layer``; return all keys/values attention may read."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer={layer} is out of range for a cache of {self.n_layers} layers.")
        k_old, v_old = self._read(layer)
        k_all = k_new if k_old is None else torch.cat([k_old, k_new], dim=-2)
        v_all = v_new if v_old is None else torch.cat([v_old, v_new], dim=-2)
        n_new = k_new.shape[-2]
        if layer == self.n_layers - 1:  # the last layer advances the positions
            pos_all = torch.cat([self.pos.to(k_new.device), self.next_positions(n_new, k_new.device)])
        # store: quantised prefix + full-precision residual (new entries)
        if self.qk[layer] is not None:
            self.k[layer] = k_new if self.k[layer] is None else torch.cat([self.k[layer], k_new], dim=-2)
            self.v[layer] = v_new if self.v[layer] is None else torch.cat([self.v[layer], v_new], dim=-2)
        else:
            self.k[layer], self.v[layer] = k_all, v_all
        if self.window is not None:
            self._trim(layer)
        if layer == self.n_layers - 1:
            self.pos = pos_all if self.window is None else pos_all[-self.window:]
            self.length += n_new
        return k_all, v_all

    def _trim(self, layer: int) -> None:
        if self.qk[layer] is not None:  # a windowed + quantised cache: fold back to full precision
            self.k[layer], self.v[layer] = self._read(layer)
            self.qk[layer] = self.qv[layer] = None
        self.k[layer] = self.k[layer][..., -self.window:, :]
        self.v[layer] = self.v[layer][..., -self.window:, :]

    def key_positions(self, n_new: int, device=None) -> torch.Tensor:
        """Absolute positions of the keys attention reads while ``n_new`` tokens are being added."""
        return torch.cat([self.pos.to(device), self.next_positions(n_new, device)])

    def quantize_(self, bits: int = 8, key_axis: str = "token", value_axis: str = "token",
                  group: int | None = None) -> "KVCache":
        """Quantise every stored key and value in place (keys and values may use different axes)."""
        for layer in range(self.n_layers):
            k, v = self._read(layer)
            if k is None:
                raise ValueError("the cache is empty; run a prefill before quantising it.")
            self.qk[layer] = quantize(k, bits, key_axis, group)
            self.qv[layer] = quantize(v, bits, value_axis, group)
            self.k[layer] = self.v[layer] = None
        return self

    def tokens(self) -> int:
        """Number of positions currently stored."""
        return int(self.pos.numel())

    def nbytes(self) -> int:
        """Bytes held: full-precision tensors at their dtype size plus packed codes and scales."""
        total = 0
        for layer in range(self.n_layers):
            for t in (self.k[layer], self.v[layer]):
                if t is not None:
                    total += t.numel() * t.element_size()
            for q in (self.qk[layer], self.qv[layer]):
                if q is not None:
                    total += q.nbytes
        return total


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, T, d) -> (B, H_kv * n_rep, T, d): query head h reads KV head h // n_rep."""
    _check_pos_int(n_rep=n_rep)
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Boolean (n_q, n_k) mask, True where query at q_pos may read key at k_pos (causal, in window)."""
    diff = q_pos[:, None] - k_pos[None, :]
    keep = diff >= 0
    if window is not None:
        keep &= diff < window
    return keep


class GQAttention(nn.Module):
    """Grouped-query self-attention: ``n_heads`` query heads share ``n_kv_heads`` key/value heads.

    ``n_kv_heads == n_heads`` is multi-head attention, ``n_kv_heads == 1`` multi-query attention
    (Shazeer 2019), in between GQA (Ainslie et al. 2023). ``rope`` rotates queries and keys by their
    absolute positions; ``window`` restricts each query to the last ``window`` keys (itself included).
    With a ``KVCache`` the call appends this chunk's keys/values and attends to everything cached.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, bias: bool = True,
                 impl: str = "sdpa", rope: bool = True, rope_base: float = 10000.0,
                 window: int | None = None):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        _check_pos_int(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads)
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}; choose n_heads that divides d_model.")
        if n_heads % n_kv_heads:
            raise ValueError(
                f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads} (each KV head serves a whole "
                f"group of query heads); use a divisor such as {[g for g in range(1, n_heads + 1) if n_heads % g == 0]}."
            )
        if impl not in ATTN_IMPLS:
            raise ValueError(f"impl={impl!r} is not supported; use one of {ATTN_IMPLS}.")
        if window is not None:
            _check_pos_int(window=window)
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        if rope and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {self.head_dim}; change d_model or n_heads.")
        self.impl, self.rope, self.rope_base, self.window = impl, rope, rope_base, window
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_model, 2 * n_kv_heads * self.head_dim, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected input (batch, seq, {self.d_model}), got {tuple(x.shape)}.")
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.n_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_pos = cache.next_positions(n, x.device) if cache is not None else torch.arange(n, device=x.device)
        if self.rope:
            from .positional import apply_rope
            q = apply_rope(q, q_pos, base=self.rope_base)
            k = apply_rope(k, q_pos, base=self.rope_base)
        if cache is not None:
            k_pos = cache.key_positions(n, x.device)
            k, v = cache.update(layer, k, v)
        else:
            k_pos = q_pos
        rep = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, rep), repeat_kv(v, rep)
        if cache is None and self.window is None:
            mask, causal = None, True
        else:
            mask, causal = window_mask(q_pos, k_pos, self.window), False
        if self.impl == "naive":
            out = naive_attention(q, k, v, causal=causal, attn_bias=mask)
        else:
            out = sdpa_attention(q, k, v, causal=causal, attn_bias=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.d_model))

    @classmethod
    def from_mha(cls, mha: nn.Module, impl: str | None = None) -> "GQAttention":
        """A GQA layer with ``n_kv_heads = n_heads`` holding the weights of a ``model.MultiHeadAttention``."""
        if not hasattr(mha, "qkv") or not hasattr(mha, "n_heads"):
            raise ValueError("from_mha expects a transformer_challenges.model.MultiHeadAttention.")
        if mha.position not in ("none", "rope"):
            raise ValueError(f"MultiHeadAttention with position={mha.position!r} has no GQA twin; use 'none' or 'rope'.")
        bias = mha.qkv.bias is not None
        new = cls(mha.d_model, mha.n_heads, mha.n_heads, bias=bias, impl=impl or mha.impl,
                  rope=mha.position == "rope", rope_base=mha.rope_base)
        d = mha.d_model
        with torch.no_grad():
            new.q.weight.copy_(mha.qkv.weight[:d])
            new.kv.weight.copy_(mha.qkv.weight[d:])
            new.proj.weight.copy_(mha.proj.weight)
            if bias:
                new.q.bias.copy_(mha.qkv.bias[:d])
                new.kv.bias.copy_(mha.qkv.bias[d:])
                new.proj.bias.copy_(mha.proj.bias)
        return new


def pool_kv_heads(attn: GQAttention, n_kv_heads: int) -> GQAttention:
    """Convert a GQA/MHA layer to fewer KV heads by mean-pooling each group's K and V projections
    (the checkpoint conversion of Ainslie et al. 2023, before any up-training)."""
    _check_pos_int(n_kv_heads=n_kv_heads)
    if attn.n_kv_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads={n_kv_heads} must divide the layer's {attn.n_kv_heads} KV heads.")
    bias = attn.q.bias is not None
    new = GQAttention(attn.d_model, attn.n_heads, n_kv_heads, bias=bias, impl=attn.impl, rope=attn.rope,
                      rope_base=attn.rope_base, window=attn.window)
    f = attn.n_kv_heads // n_kv_heads
    with torch.no_grad():
        new.q.load_state_dict(attn.q.state_dict())
        new.proj.load_state_dict(attn.proj.state_dict())
        w = attn.kv.weight.view(2, n_kv_heads, f, attn.head_dim, attn.d_model).mean(dim=2)
        new.kv.weight.copy_(w.reshape(-1, attn.d_model))
        if bias:
            new.kv.bias.copy_(attn.kv.bias.view(2, n_kv_heads, f, attn.head_dim).mean(dim=2).reshape(-1))
    return new


# ---------------------------------------------------------------------------------- the decoder
@dataclass
class GQAConfig:
    """Sizes of ``GQADecoder``: a Pre-LN RoPE decoder with grouped-query attention."""

    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_layers: int = 2
    d_ff: int | None = None
    window: int | None = None
    impl: str = "sdpa"
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _check_pos_int(vocab_size=self.vocab_size, d_model=self.d_model, n_heads=self.n_heads,
                       n_kv_heads=self.n_kv_heads, n_layers=self.n_layers)


class GQABlock(nn.Module):
    """Pre-LN layer: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, cfg: GQAConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = GQAttention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, impl=cfg.impl,
                                rope_base=cfg.rope_base, window=cfg.window)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff or 4 * cfg.d_model)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.ffn(self.ln2(x))


class GQADecoder(nn.Module):
    """Decoder-only LM with GQA and RoPE, trainable with ``training.train_lm``, that decodes with a cache."""

    def __init__(self, cfg: GQAConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(GQABlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def new_cache(self, window: int | None = None) -> KVCache:
        """An empty cache for this model (sliding-window when ``window`` or the model's window is set)."""
        return KVCache(self.cfg.n_layers, window=window if window is not None else self.cfg.window)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """Return ``(logits, loss)``; with a cache, ``idx`` holds only the new tokens."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq) token ids, got shape {tuple(idx.shape)}.")
        x = self.tok_emb(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                 cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding; return the tokens and the (B, max_new_tokens, vocab) logits that chose them.

        ``use_cache=False`` recomputes the whole prefix at every step (what a cache saves).
        """
        _check_pos_int(max_new_tokens=max_new_tokens)
        steps = []
        if use_cache:
            cache = cache if cache is not None else self.new_cache()
            logits = self(idx, cache=cache)[0][:, -1]
        for step in range(max_new_tokens):
            if not use_cache:
                logits = self(idx)[0][:, -1]
            steps.append(logits)
            nxt = logits.argmax(dim=-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
            if use_cache and step + 1 < max_new_tokens:
                logits = self(nxt, cache=cache)[0][:, -1]
        return idx, torch.stack(steps, dim=1)


# ------------------------------------------------------------------------------ paged allocator
class BlockAllocator:
    """PagedAttention's memory manager (Kwon et al. 2023): fixed-size blocks and per-request block tables.

    Memory is ``num_blocks`` physical blocks of ``block_size`` token slots. A request's logical
    token ``i`` lives in block ``table[i // block_size]`` at offset ``i % block_size``; blocks are
    taken from a free list only when the previous one is full, so at most ``block_size - 1`` slots
    per request are ever allocated but empty.
    """

    def __init__(self, num_blocks: int, block_size: int = 16):
        _check_pos_int(num_blocks=num_blocks, block_size=block_size)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.tables: dict[Any, list[int]] = {}
        self.lengths: dict[Any, int] = {}

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks needed to hold ``n_tokens`` tokens."""
        return -(-n_tokens // self.block_size)

    def can_allocate(self, n_tokens: int) -> bool:
        """Whether ``n_tokens`` more token slots' worth of blocks are free."""
        return self.blocks_for(n_tokens) <= len(self.free_blocks)

    def allocate(self, req: Any, n_tokens: int) -> bool:
        """Give a new request blocks for its first ``n_tokens`` tokens; False (and no change) if they do not fit."""
        if req in self.tables:
            raise ValueError(f"request {req!r} already holds blocks; free it first or use append_token.")
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}.")
        need = self.blocks_for(n_tokens)
        if need > len(self.free_blocks):
            return False
        self.tables[req] = [self.free_blocks.popleft() for _ in range(need)]
        self.lengths[req] = n_tokens
        return True

    def append_token(self, req: Any) -> bool:
        """Add one token to ``req``; take a new block only when its last block is full. False if none is free."""
        if req not in self.tables:
            raise ValueError(f"request {req!r} holds no blocks; allocate it first.")
        if self.lengths[req] == len(self.tables[req]) * self.block_size:
            if not self.free_blocks:
                return False
            self.tables[req].append(self.free_blocks.popleft())
        self.lengths[req] += 1
        return True

    def free(self, req: Any) -> None:
        """Return all blocks of ``req`` to the free list."""
        if req not in self.tables:
            raise ValueError(f"request {req!r} holds no blocks.")
        self.free_blocks.extend(self.tables.pop(req))
        del self.lengths[req]

    def slot(self, req: Any, position: int) -> tuple[int, int]:
        """(physical block, offset) of logical token ``position`` of ``req``: the block-table lookup."""
        if req not in self.tables or not 0 <= position < self.lengths[req]:
            raise ValueError(f"position {position} is not stored for request {req!r}.")
        return self.tables[req][position // self.block_size], position % self.block_size

    @property
    def used_blocks(self) -> int:
        """Blocks currently owned by some request."""
        return self.num_blocks - len(self.free_blocks)

    @property
    def tokens_stored(self) -> int:
        """Token slots holding a token."""
        return sum(self.lengths.values())


def gather_paged(pool: torch.Tensor, table: Sequence[int], length: int) -> torch.Tensor:
    """Read one request's ``length`` tokens from a block pool (num_blocks, block_size, ...) via its block table."""
    if length > len(table) * pool.shape[1]:
        raise ValueError(f"length={length} exceeds the {len(table)} blocks of the table.")
    idx = torch.as_tensor(list(table), dtype=torch.long)
    return pool[idx].reshape(-1, *pool.shape[2:])[:length]


class ContiguousAllocator:
    """Pre-PagedAttention memory management: each request reserves one contiguous region (first fit)."""

    def __init__(self, capacity: int):
        _check_pos_int(capacity=capacity)
        self.capacity = capacity
        self.free_list: list[list[int]] = [[0, capacity]]   # sorted [start, length] intervals
        self.regions: dict[Any, tuple[int, int]] = {}

    def allocate(self, req: Any, size: int) -> bool:
        """Reserve ``size`` contiguous slots for ``req`` (first fit); False if no hole is large enough."""
        if req in self.regions:
            raise ValueError(f"request {req!r} already holds a region; free it first.")
        _check_pos_int(size=size)
        for i, (start, length) in enumerate(self.free_list):
            if length >= size:
                self.regions[req] = (start, size)
                if length == size:
                    self.free_list.pop(i)
                else:
                    self.free_list[i] = [start + size, length - size]
                return True
        return False

    def free(self, req: Any) -> None:
        """Release ``req``'s region and merge it with neighbouring holes."""
        if req not in self.regions:
            raise ValueError(f"request {req!r} holds no region.")
        start, size = self.regions.pop(req)
        self.free_list.append([start, size])
        self.free_list.sort()
        merged: list[list[int]] = []
        for s, n in self.free_list:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1][1] += n
            else:
                merged.append([s, n])
        self.free_list = merged

    @property
    def free_slots(self) -> int:
        """Total free slots (possibly split into holes)."""
        return sum(n for _, n in self.free_list)

    @property
    def largest_hole(self) -> int:
        """The largest contiguous free region."""
        return max((n for _, n in self.free_list), default=0)


def request_stream(n: int, seed: int = 0, prompt_median: float = 160.0, output_median: float = 200.0,
                   sigma: float = 1.0, max_len: int = 2048) -> list[tuple[int, int]]:
    """``n`` seeded (prompt_len, output_len) pairs, lognormal, clipped so prompt + output <= ``max_len``."""
    _check_pos_int(n=n, max_len=max_len)
    if prompt_median <= 0 or output_median <= 0 or sigma < 0:
        raise ValueError("medians must be > 0 and sigma >= 0.")
    rng = np.random.default_rng(seed)
    p = np.clip(np.round(rng.lognormal(math.log(prompt_median), sigma, n)), 1, max_len - 1).astype(int)
    o = np.clip(np.round(rng.lognormal(math.log(output_median), sigma, n)), 1, None).astype(int)
    o = np.minimum(o, max_len - p)
    return [(int(a), int(b)) for a, b in zip(p, o)]


@dataclass
class ServingStats:
    """What ``simulate_serving`` measures. Fractions are of the whole KV budget, averaged over the
    steps during which requests were waiting (the system is memory-bound)."""

    scheme: str
    steps: int
    mean_running: float
    token_states: float
    reserved: float
    internal_frag: float
    unused: float
    preemptions: int
    max_running: int
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def as_row(self) -> dict[str, float]:
        """The headline numbers as a flat dict (for a table)."""
        return dict(steps=self.steps, mean_running=self.mean_running, token_states=self.token_states,
                    reserved=self.reserved, internal_frag=self.internal_frag, unused=self.unused,
                    preemptions=self.preemptions)


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def simulate_serving(requests: Sequence[tuple[int, int]], capacity: int, scheme: str = "paged",
                     block_size: int = 16, max_len: int = 2048, watermark: float = 0.01) -> ServingStats:
    """Serve ``requests`` (prompt_len, output_len), all queued at step 0, with a KV budget of ``capacity`` token slots.

    Each step admits waiting requests first-come first-served while they fit, then every running
    request decodes one token; a finished request frees its memory at once. Schemes:
    ``"paged"`` (block tables; when a block is needed and none is free the newest request is
    pre-empted and re-queued, as vLLM does), and the contiguous reservations Kwon et al. compare
    against: ``"max"`` (``max_len`` slots), ``"pow2"`` (next power of two of the true final
    length) and ``"oracle"`` (exactly the true final length); the last two know the future.
    ``watermark``: the paged scheme admits a request only if this fraction of all blocks stays
    free afterwards (vLLM's default is 0.01), headroom for the running requests to grow.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is unknown; use one of {SCHEMES}.")
    _check_pos_int(capacity=capacity, block_size=block_size, max_len=max_len)
    if not 0 <= watermark < 1:
        raise ValueError(f"watermark={watermark!r} must be in [0, 1); vLLM uses 0.01.")
    for p, o in requests:
        if p < 1 or o < 1 or p + o > max_len:
            raise ValueError(f"request ({p}, {o}) needs 1 <= prompt, 1 <= output, prompt + output <= max_len={max_len}.")
    if scheme == "paged":
        alloc: Any = BlockAllocator(capacity // block_size, block_size)
        if alloc.blocks_for(max_len) > alloc.num_blocks:
            raise ValueError(f"capacity={capacity} cannot hold one request of max_len={max_len}.")
    else:
        alloc = ContiguousAllocator(capacity)
        if capacity < max_len:
            raise ValueError(f"capacity={capacity} cannot hold one request of max_len={max_len}.")

    def reservation(p: int, o: int) -> int:
        if scheme == "max":
            return max_len
        if scheme == "pow2":
            return min(_next_pow2(p + o), max_len)
        return p + o

    queue: deque[int] = deque(range(len(requests)))
    running: dict[int, int] = {}         # request -> tokens generated so far
    order: list[int] = []                # admission order (for pre-emption)
    hist: dict[str, list[float]] = {k: [] for k in ("running", "token_states", "reserved", "internal_frag", "unused")}
    preemptions, step, max_running = 0, 0, 0
    while queue or running:
        while queue:  # admission, first come first served
            r = queue[0]
            p, o = requests[r]
            if scheme == "paged":
                headroom = len(alloc.free_blocks) - alloc.blocks_for(p)
                ok = headroom >= watermark * alloc.num_blocks and alloc.allocate(r, p)
            else:
                ok = alloc.allocate(r, reservation(p, o))
            if not ok:
                break
            queue.popleft()
            running[r] = 0
            order.append(r)
        if not running:
            raise RuntimeError("no request could be admitted into an empty cache")  # pragma: no cover
        for r in list(order):  # decode one token per running request
            if r not in running:
                continue
            if scheme == "paged":
                while not alloc.append_token(r):
                    victim = order[-1]
                    alloc.free(victim)
                    del running[victim]
                    order.pop()
                    queue.appendleft(victim)
                    preemptions += 1
                    if victim == r:
                        break
                if r not in running:
                    continue
            running[r] += 1
        waiting = bool(queue)
        tokens = sum(requests[r][0] + g for r, g in running.items())
        if scheme == "paged":
            allocated = alloc.used_blocks * block_size
            reserved, internal = 0, allocated - tokens
        else:
            reserved = sum(requests[r][0] + requests[r][1] - requests[r][0] - g for r, g in running.items())
            internal = sum(reservation(*requests[r]) - sum(requests[r]) for r in running)
            allocated = tokens + reserved + internal
        if waiting:
            hist["running"].append(len(running))
            hist["token_states"].append(tokens / capacity)
            hist["reserved"].append(reserved / capacity)
            hist["internal_frag"].append(internal / capacity)
            hist["unused"].append((capacity - allocated) / capacity)
        max_running = max(max_running, len(running))
        for r in [r for r, g in running.items() if g >= requests[r][1]]:
            alloc.free(r)
            del running[r]
            order.remove(r)
        step += 1

    def mean(key: str) -> float:
        return float(np.mean(hist[key])) if hist[key] else 0.0

    return ServingStats(scheme, step, mean("running"), mean("token_states"), mean("reserved"),
                        mean("internal_frag"), mean("unused"), preemptions, max_running, hist)
