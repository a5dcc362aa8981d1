"""Measure what autograd keeps for the backward pass: the activation memory of a layer.

Used by the chapter "Compute and memory" (page ``ch-compute-activations``). ``ReferenceLayer`` is
the Megatron-style GPT layer that Korthikanti et al. (2022) analyse (LayerNorm -> QKV -> softmax
attention with dropout -> projection -> dropout -> residual; LayerNorm -> Linear -> GELU -> Linear ->
dropout -> residual); ``saved_tensor_bytes`` runs a function under
``torch.autograd.graph.saved_tensors_hooks`` and counts the bytes of every distinct storage
saved for backward, excluding parameters (or, with ``distinct_storages=False``, of every saved
tensor). It is the library's only saved-for-backward counter: ``attention.saved_activation_bytes``
(chapter 3) and ``ssm.saved_tensor_bytes`` (chapter 10) wrap it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import check_heads

ATTENTION_KINDS = ("naive", "sdpa")


@dataclass(frozen=True)
class SavedTensor:
    """One storage (or one saved tensor) autograd saved: its shape, dtype and size in bytes."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


@dataclass
class SavedReport:
    """What ``saved_tensor_bytes`` found: the saved storages (or tensors) and their total."""

    tensors: list[SavedTensor]

    @property
    def total(self) -> int:
        """Total bytes of the entries (distinct storages, or every saved tensor)."""
        return sum(t.nbytes for t in self.tensors)

    def by_dtype(self) -> dict[str, int]:
        """Bytes per dtype name (e.g. ``{"bfloat16": ..., "bool": ..., "float32": ...}``)."""
        out: dict[str, int] = {}
        for t in self.tensors:
            key = str(t.dtype).replace("torch.", "")
            out[key] = out.get(key, 0) + t.nbytes
        return out


def saved_tensor_bytes(fn: Callable[[], torch.Tensor], exclude: tuple[torch.Tensor, ...] = (),
                       distinct_storages: bool = True) -> SavedReport:
    """Run ``fn()`` and report the bytes autograd saves for backward: the book's one such counter.

    ``distinct_storages=True`` (the default) counts what is resident: tensors that share a
    storage (views such as q, k, v split from one QKV output, or a weight and its transpose)
    are counted once, with the storage's full size. ``distinct_storages=False`` counts every
    saved tensor each time it is saved, at its own size (``numel * element_size``), views
    included: an upper bound on what is resident (``ssm.saved_tensor_bytes`` uses it). In both
    modes storages of ``exclude`` (pass the module's parameters) are skipped: they are weights,
    not activations. The saved tensors and the output of ``fn`` are kept alive until the report
    is built, so no storage is freed and reused in between. ``attention.saved_activation_bytes``
    and ``ssm.saved_tensor_bytes`` are thin wrappers around this function.
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable taking no arguments, got {type(fn).__name__}; "
                         "wrap your call in a lambda.")
    if not isinstance(distinct_storages, bool):
        raise ValueError(f"distinct_storages must be True or False, got {distinct_storages!r}.")
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, SavedTensor] = {}
    every: list[SavedTensor] = []
    keep: list[torch.Tensor] = []  # hold references so no storage is freed and reused mid-run

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in skip:
            if not distinct_storages:
                every.append(SavedTensor(tuple(t.shape), t.dtype, t.numel() * t.element_size()))
            elif ptr not in seen:
                seen[ptr] = SavedTensor(tuple(t.shape), t.dtype, st.nbytes())
        keep.append(t)
        # detached: returning ``t`` itself would tie a saved output to its own grad_fn, a reference
        # cycle that no garbage collection frees when no backward pass follows (the forward graph
        # of every count would stay in memory)
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    report = SavedReport(list(seen.values()) if distinct_storages else every)
    del out, keep
    return report


class ReferenceLayer(nn.Module):
    """A GPT layer as in Megatron-LM / Korthikanti et al. (2022), with a choice of attention kernel.

    ``attention="naive"`` materialises the (b, a, s, s) scores (softmax, dropout, times V);
    ``attention="sdpa"`` calls ``F.scaled_dot_product_attention`` (a fused kernel that saves a
    log-sum-exp instead of the scores). ``dropout`` is the probability used at the three dropout
    sites (attention probabilities, attention output, MLP output); 0 removes them. With
    ``attention="sdpa"`` the attention-probability dropout is left out (see ``attend``). Causal.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.1,
                 attention: str = "naive"):
        super().__init__()
        self.head_dim = check_heads(d_model, n_heads)
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={attention!r} is unknown; use one of {ATTENTION_KINDS}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1); use 0 to switch dropout off.")
        self.d_model, self.n_heads, self.p, self.attention = d_model, n_heads, dropout, attention
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # native_dropout saves a bool mask (1 byte per element), as Megatron's fused GPU dropout
        # does; F.dropout on a CPU would save a mask in the input's dtype (2 bytes in bf16).
        return torch.native_dropout(x, self.p, True)[0] if self.p > 0 and self.training else x

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention sub-layer (without its residual): (b, s, h) -> (b, s, h)."""
        b, s, h = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.attention == "sdpa":
            # no dropout inside the fused kernel: on a CPU a non-zero dropout_p falls back to the
            # math path, which materialises the scores (in fp32). FlashAttention on a GPU keeps
            # only the RNG state and regenerates the mask in backward.
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
            probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
            ctx = self._drop(probs) @ v
        return self._drop(self.proj(ctx.transpose(1, 2).reshape(b, s, h)))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """Feed-forward sub-layer (without its residual)."""
        return self._drop(self.fc2(F.gelu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected input (batch, seq, {self.d_model}), got {tuple(x.shape)}.")
        x = x + self.attend(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def layer_saved_bytes(layer: nn.Module, x: torch.Tensor, checkpoint: bool = False) -> SavedReport:
    """Bytes ``layer(x)`` saves for backward (parameters excluded); optionally under checkpointing.

    ``checkpoint=True`` wraps the call in ``torch.utils.checkpoint.checkpoint`` (non-reentrant):
    the layer's internals are then recomputed in backward, and only what the checkpoint keeps
    (its input) remains.
    """
    params = tuple(layer.parameters())
    if checkpoint:
        from torch.utils.checkpoint import checkpoint as ckpt
        return saved_tensor_bytes(lambda: ckpt(layer, x, use_reentrant=False), exclude=params)
    return saved_tensor_bytes(lambda: layer(x), exclude=params)


__all__ = ["SavedTensor", "SavedReport", "saved_tensor_bytes", "ReferenceLayer", "layer_saved_bytes"]
