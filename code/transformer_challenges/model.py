"""A small, readable decoder-only Transformer: the parts Chapter 1 assembles.

``MultiHeadAttention`` (naive or SDPA), ``FeedForward`` (GELU), ``MoEFeedForward`` (top-k routed
experts with a load-balancing loss), ``Block`` (Pre-LN or Post-LN wiring, a residual scale) and
``TinyGPT``. Later chapters reuse them: training dynamics flips ``norm``, the position chapter
fills the ``position`` slot, the interpretability chapter hooks the modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import naive_attention, sdpa_attention

ATTN_IMPLS = ("sdpa", "naive")
NORMS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")


def _check_positive(**kwargs) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {choices}.")


def check_heads(d_model: int, n_heads: int) -> int:
    """Validate that ``n_heads`` divides ``d_model``; return the head size."""
    _check_positive(d_model=d_model, n_heads=n_heads)
    if d_model % n_heads:
        divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
        near = min(divisors, key=lambda h: abs(h - n_heads))
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; choose n_heads that divides "
            f"d_model (e.g. {near}) or change d_model to a multiple of {n_heads}."
        )
    return d_model // n_heads


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    ``impl="naive"`` materialises the (B, h, n, n) score matrix and can keep the attention
    weights (``store_weights=True`` puts them in ``self.last_weights``); ``impl="sdpa"`` calls
    ``torch.nn.functional.scaled_dot_product_attention``. ``position`` is ``"rope"`` to rotate q and
    k, ``"alibi"`` to add a linear distance bias, anything else to leave attention position-free.
    """

    def __init__(self, d_model: int, n_heads: int, impl: str = "sdpa", causal: bool = True,
                 bias: bool = True, position: str = "none", rope_base: float = 10000.0):
        super().__init__()
        self.head_dim = check_heads(d_model, n_heads)
        _check_choice("impl", impl, ATTN_IMPLS)
        _check_choice("position", position, POSITIONS)
        if position == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {self.head_dim}; change d_model or n_heads.")
        self.d_model, self.n_heads, self.impl, self.causal = d_model, n_heads, impl, causal
        self.position, self.rope_base = position, rope_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.store_weights = False
        self.last_weights: torch.Tensor | None = None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d_model) -> (B, h, n, head_dim)."""
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected input (batch, seq, {self.d_model}), got {tuple(x.shape)}.")
        b, n, _ = x.shape
        q, k, v = (self.split_heads(t) for t in self.qkv(x).split(self.d_model, dim=-1))
        bias = None
        if self.position == "rope":
            from .positional import apply_rope
            pos = torch.arange(n, device=x.device)
            q, k = apply_rope(q, pos, base=self.rope_base), apply_rope(k, pos, base=self.rope_base)
        elif self.position == "alibi":
            from .positional import alibi_bias
            bias = alibi_bias(self.n_heads, n).to(device=x.device, dtype=q.dtype)
        if self.impl == "naive" or self.store_weights:
            out, w = naive_attention(q, k, v, causal=self.causal, attn_bias=bias, return_weights=True)
            self.last_weights = w.detach() if self.store_weights else None
        else:
            out = sdpa_attention(q, k, v, causal=self.causal, attn_bias=bias)
        out = out.transpose(1, 2).reshape(b, n, self.d_model)  # heads side by side: proj's input
        return self.proj(out)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(d, d_ff) -> GELU -> Linear(d_ff, d)."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = True):
        super().__init__()
        _check_positive(d_model=d_model, d_ff=d_ff)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class MoEFeedForward(nn.Module):
    """Mixture of experts: a router sends each token to its ``top_k`` of ``n_experts`` FFNs.

    Gates are the router's softmax probabilities of the chosen experts, renormalised to sum to 1
    (Shazeer et al. 2017). ``self.aux_loss`` holds the Switch-Transformer load-balancing loss
    n_experts * sum_i f_i * P_i of the last call (f_i: share of routed slots that went to expert i,
    P_i: mean router probability of expert i); it equals 1 for perfectly even routing.
    Only the selected experts run, so compute per token grows with ``top_k``, not ``n_experts``.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int = 2, bias: bool = True):
        super().__init__()
        _check_positive(d_model=d_model, d_ff=d_ff, n_experts=n_experts, top_k=top_k)
        if top_k > n_experts:
            raise ValueError(
                f"top_k={top_k} is larger than n_experts={n_experts}; a token cannot visit more "
                f"experts than exist: use top_k <= {n_experts} or add experts."
            )
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, bias) for _ in range(n_experts))
        self.aux_loss = torch.tensor(0.0)
        self.last_counts = torch.zeros(n_experts, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(flat), dim=-1)               # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)                   # (N, k)
        gates = top_p / top_p.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        counts = torch.zeros(self.n_experts, dtype=torch.long)
        for e, expert in enumerate(self.experts):
            token, slot = (top_i == e).nonzero(as_tuple=True)
            counts[e] = token.numel()
            if token.numel():
                out.index_add_(0, token, gates[token, slot, None] * expert(flat[token]))
        frac = counts.to(probs.dtype).to(probs.device) / (flat.shape[0] * self.top_k)
        self.aux_loss = self.n_experts * (frac * probs.mean(dim=0)).sum()
        self.last_counts = counts
        return out.reshape(shape)


class Block(nn.Module):
    """One Transformer layer: attention and FFN sub-layers with residual connections.

    ``norm="pre"``:  x <- alpha * x + F(LN(x))   (GPT-2/3, LLaMA; the default)
    ``norm="post"``: x <- LN(alpha * x + F(x))   (the original Transformer)

    F is the attention sub-layer, then the FFN sub-layer (two updates per block). In both wirings
    alpha = ``residual_scale`` multiplies the skip path before each addition; the default 1.0 is the
    plain residual. DeepNorm uses alpha > 1 with Post-LN to up-weight the skip path; with Pre-LN an
    alpha != 1 scales the un-normalised stream by alpha at every addition (alpha**(2L) over L blocks).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, norm: str = "pre",
                 attn_impl: str = "sdpa", causal: bool = True, n_experts: int = 0, top_k: int = 2,
                 position: str = "none", residual_scale: float = 1.0, bias: bool = True):
        super().__init__()
        check_heads(d_model, n_heads)
        _check_choice("norm", norm, NORMS)
        d_ff = 4 * d_model if d_ff is None else d_ff
        if residual_scale <= 0:
            raise ValueError(f"residual_scale must be > 0, got {residual_scale}; 1.0 is the plain residual.")
        self.norm, self.residual_scale = norm, residual_scale
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, impl=attn_impl, causal=causal, bias=bias,
                                       position=position)
        self.ffn = (MoEFeedForward(d_model, d_ff, n_experts, top_k, bias) if n_experts
                    else FeedForward(d_model, d_ff, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.residual_scale
        if self.norm == "pre":
            x = a * x + self.attn(self.ln1(x))
            return a * x + self.ffn(self.ln2(x))
        x = self.ln1(a * x + self.attn(x))
        return self.ln2(a * x + self.ffn(x))


@dataclass
class GPTConfig:
    """Sizes and switches of ``TinyGPT``. ``d_ff`` defaults to 4 * d_model; ``n_experts=0`` is dense."""

    vocab_size: int
    seq_len: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int | None = None
    norm: str = "pre"
    attn_impl: str = "sdpa"
    position: str = "learned"
    n_experts: int = 0
    top_k: int = 2
    residual_scale: float = 1.0
    bias: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_positive(vocab_size=self.vocab_size, seq_len=self.seq_len, n_layers=self.n_layers)
        check_heads(self.d_model, self.n_heads)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        _check_choice("position", self.position, POSITIONS)
        if self.n_experts and self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} > n_experts={self.n_experts}; use top_k <= n_experts.")


class TinyGPT(nn.Module):
    """Decoder-only language model: embeddings -> n_layers Blocks -> final LN -> tied output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.position == "learned":
            self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        elif cfg.position == "sinusoidal":
            from .positional import sinusoidal
            self.register_buffer("pos_table", sinusoidal(cfg.seq_len, cfg.d_model), persistent=False)
        attn_position = cfg.position if cfg.position in ("rope", "alibi") else "none"
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_ff, norm=cfg.norm, attn_impl=cfg.attn_impl,
                  n_experts=cfg.n_experts, top_k=cfg.top_k, position=attn_position,
                  residual_scale=cfg.residual_scale, bias=cfg.bias)
            for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus (for absolute schemes) position embeddings: the residual stream's start."""
        n = idx.shape[1]
        if n > self.cfg.seq_len and self.cfg.position in ("learned", "sinusoidal"):
            raise ValueError(
                f"sequence of {n} tokens is longer than seq_len={self.cfg.seq_len}, the size of the "
                f"{self.cfg.position} position table; crop the input or use rope/alibi/none."
            )
        x = self.tok_emb(idx)
        if self.cfg.position == "learned":
            x = x + self.pos_emb(torch.arange(n, device=idx.device))
        elif self.cfg.position == "sinusoidal":
            x = x + self.pos_table[:n]
        return x

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Return ``(logits, loss)``; ``loss`` is the mean next-token cross-entropy or None."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq) token ids, got shape {tuple(idx.shape)}.")
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE load-balancing losses of the last forward pass (0 for a dense model)."""
        losses = [b.ffn.aux_loss for b in self.blocks if isinstance(b.ffn, MoEFeedForward)]
        return torch.stack(losses).sum() if losses else torch.tensor(0.0)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens (greedy when ``temperature == 0``)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}; 0 means greedy.")
        for _ in range(max_new_tokens):
            window = idx[:, -self.cfg.seq_len:]
            logits = self(window)[0][:, -1, :]
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable parameters (a tied weight is counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
