"""Training dynamics of deep Transformers: gradients at initialisation, DeepNorm, Jacobian algebra.

Used by the chapter "Training dynamics" (``chapters/05-training``, label ``ch-training``).

* ``layer_grad_norms``: the Frobenius norm of one parameter's gradient in every block after one
  backward pass (Xiong et al. 2020 look at the FFN's second matrix, ``ffn.down.weight``).
* ``residual_norms``: the mean squared norm of the residual stream after every block, divided by
  ``d_model`` (the quantity of Xiong et al.'s Lemma 3).
* ``xavier_init_``, ``deepnorm_constants``, ``deepnorm_init_``, ``deepnorm_gpt``: the DeepNorm
  recipe of Wang et al. 2022 (x <- LN(alpha * x + G(x)) plus beta-scaled Xavier initialisation)
  applied to ``model.TinyGPT`` without changing ``model.py``.
* ``power_law_exponent``: the slope of a log-log fit, to compare a measured scaling with an O(.).
* ``residual_jacobian``: the chain-rule product of a Pre-LN or Post-LN stack written with
  non-commuting SymPy symbols, which shows the identity path of Pre-LN.
"""
from __future__ import annotations

import math
from typing import Sequence

import sympy as sp
import torch
import torch.nn as nn

from .model import Block, GPTConfig, TinyGPT

DEEPNORM_ARCHS = ("decoder-only", "encoder-only", "encoder-decoder")
WIRINGS = ("pre", "post")


def _blocks(model: nn.Module) -> list[Block]:
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} contains no model.Block; pass a TinyGPT or a stack of Blocks."
        )
    return blocks


def _check_layers(name: str, value) -> None:
    if isinstance(value, sp.Basic):
        if value.is_positive is False or value.is_number and not value.is_positive:
            raise ValueError(f"{name} must be positive, got {value}; use a positive symbol or int.")
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer (or a SymPy symbol), got {value!r}.")


def layer_grad_norms(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor,
                     param: str = "ffn.down.weight") -> list[float]:
    """Frobenius norm of d(loss)/d(``param``) in every Block, after one forward/backward pass."""
    blocks = _blocks(model)
    names = dict(blocks[0].named_parameters())
    if param not in names:
        raise ValueError(f"param={param!r} is not a parameter of Block; use one of {sorted(names)}.")
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, targets)
    if loss is None:
        raise ValueError("the model returned no loss; pass targets so a gradient can be taken.")
    loss.backward()
    out = []
    for block in blocks:
        grad = dict(block.named_parameters())[param].grad
        out.append(0.0 if grad is None else grad.norm().item())
    model.zero_grad(set_to_none=True)
    return out


@torch.no_grad()
def residual_norms(model: TinyGPT, idx: torch.Tensor) -> list[float]:
    """Mean over tokens of ||x_l||^2 / d_model for the residual stream x_0 (embedding), x_1, ..., x_L."""
    if not isinstance(model, TinyGPT):
        raise ValueError(f"residual_norms needs a TinyGPT, got {type(model).__name__}.")
    x = model.embed(idx)
    d = x.shape[-1]
    out = [(x.pow(2).sum(-1).mean() / d).item()]
    for block in model.blocks:
        x = block(x)
        out.append((x.pow(2).sum(-1).mean() / d).item())
    return out


def _xavier_normal_slice_(weight: torch.Tensor, gain: float) -> None:
    fan_out, fan_in = weight.shape
    weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


@torch.no_grad()
def xavier_init_(model: nn.Module, gain: float = 1.0, qk_gain: float | None = None) -> nn.Module:
    """Re-initialise every Block's linear maps with Xavier-normal weights (std gain*sqrt(2/(in+out))).

    The fused QKV matrix is treated as three separate d x d maps; the query and key slices get
    ``qk_gain`` (default: ``gain``), values, output projection and FFN get ``gain``. Biases are zeroed.
    """
    if gain <= 0 or (qk_gain is not None and qk_gain <= 0):
        raise ValueError(f"gains must be > 0, got gain={gain}, qk_gain={qk_gain}; 1.0 is plain Xavier.")
    qk_gain = gain if qk_gain is None else qk_gain
    for block in _blocks(model):
        d = block.attn.d_model
        w = block.attn.qkv.weight
        _xavier_normal_slice_(w[:d], qk_gain)
        _xavier_normal_slice_(w[d:2 * d], qk_gain)
        _xavier_normal_slice_(w[2 * d:], gain)
        linears = [block.attn.proj] + [m for m in block.ffn.modules() if isinstance(m, nn.Linear)]
        for lin in linears:
            if lin is getattr(block.ffn, "router", None):
                continue
            _xavier_normal_slice_(lin.weight, gain)
        for lin in [block.attn.qkv] + linears:
            if lin.bias is not None:
                lin.bias.zero_()
    return model


def deepnorm_constants(n_layers, arch: str = "decoder-only", n_decoder_layers=None):
    """DeepNorm's (alpha, beta) of Wang et al. 2022 for an N-layer stack (ints or SymPy symbols).

    decoder-only / encoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4).
    encoder-decoder (N encoder, M decoder layers): returns ((alpha_enc, beta_enc), (alpha_dec, beta_dec))
    with alpha_enc = 0.81 (N^4 M)^(1/16), beta_enc = 0.87 (N^4 M)^(-1/16), alpha_dec = (3M)^(1/4),
    beta_dec = (12M)^(-1/4).
    """
    if arch not in DEEPNORM_ARCHS:
        raise ValueError(f"arch={arch!r} is unknown; use one of {DEEPNORM_ARCHS}.")
    _check_layers("n_layers", n_layers)
    symbolic = isinstance(n_layers, sp.Basic) or isinstance(n_decoder_layers, sp.Basic)
    power = sp.Rational if symbolic else (lambda p, q: p / q)
    if arch != "encoder-decoder":
        if n_decoder_layers is not None:
            raise ValueError(f"n_decoder_layers is only used with arch='encoder-decoder', not {arch!r}.")
        return (2 * n_layers) ** power(1, 4), (8 * n_layers) ** power(-1, 4)
    if n_decoder_layers is None:
        raise ValueError("arch='encoder-decoder' needs n_decoder_layers (M); pass e.g. n_decoder_layers=6.")
    _check_layers("n_decoder_layers", n_decoder_layers)
    n, m = n_layers, n_decoder_layers
    c1, c2 = (sp.Rational(81, 100), sp.Rational(87, 100)) if symbolic else (0.81, 0.87)
    enc = (c1 * (n ** 4 * m) ** power(1, 16), c2 * (n ** 4 * m) ** power(-1, 16))
    dec = ((3 * m) ** power(1, 4), (12 * m) ** power(-1, 4))
    return enc, dec


def deepnorm_init_(model: nn.Module, beta: float) -> nn.Module:
    """DeepNorm initialisation: Xavier-normal with gain ``beta`` for values, output projection and
    FFN, gain 1 for queries and keys (Wang et al. 2022, Figure 2)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}; take it from deepnorm_constants(n_layers).")
    return xavier_init_(model, gain=float(beta), qk_gain=1.0)


def deepnorm_gpt(cfg: GPTConfig) -> TinyGPT:
    """A Post-LN TinyGPT with DeepNorm: residual_scale = alpha and beta-scaled init, both from n_layers."""
    if cfg.norm != "post":
        raise ValueError(f"DeepNorm modifies Post-LN; got cfg.norm={cfg.norm!r}, set norm='post'.")
    alpha, beta = deepnorm_constants(cfg.n_layers)
    cfg = GPTConfig(**{**cfg.__dict__, "residual_scale": float(alpha)})
    return deepnorm_init_(TinyGPT(cfg), beta)


def power_law_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope k of log(y) = k log(x) + c: the measured exponent of y ~ x^k."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need two equally long sequences of at least 2 points, got {len(xs)} and {len(ys)}.")
    if min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("a power law is fitted in log space: all xs and ys must be > 0.")
    lx = [math.log(v) for v in xs]
    ly = [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise ValueError("all xs are equal; a slope needs at least two different x values.")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def residual_jacobian(n_layers: int, wiring: str) -> sp.Expr:
    """d x_L / d x_0 of an L-layer residual stack as an expanded product of non-commuting symbols.

    ``J_l`` is the Jacobian of sub-layer l's branch, ``N_l`` that of its normalisation (at the point
    where it is evaluated). Pre-LN: x_{l+1} = x_l + F_l(LN(x_l)) gives prod (1 + J_l N_l);
    Post-LN: x_{l+1} = LN(x_l + F_l(x_l)) gives prod N_l (1 + J_l). ``1`` is the identity matrix.
    """
    _check_layers("n_layers", n_layers)
    if isinstance(n_layers, sp.Basic):
        raise ValueError("residual_jacobian needs a concrete number of layers, e.g. 3.")
    if wiring not in WIRINGS:
        raise ValueError(f"wiring={wiring!r} is unknown; use one of {WIRINGS}.")
    J = sp.symbols(f"J1:{n_layers + 1}", commutative=False)
    N = sp.symbols(f"N1:{n_layers + 1}", commutative=False)
    result = sp.Integer(1)
    for l in range(n_layers):  # the last layer's factor stands leftmost (chain rule)
        factor = 1 + J[l] * N[l] if wiring == "pre" else N[l] * (1 + J[l])
        result = factor * result
    return sp.expand(result)
