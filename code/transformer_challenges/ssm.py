"""A minimal selective state-space model (the Mamba "S6" scan, Gu & Dao 2023), for the outlook chapter.

Used by ``chapters/10-outlook/ssm.md`` and re-checked in ``chapters/10-outlook/conclusion.md``.

The selective scan, per channel ``d`` and state index ``n`` (diagonal ``A``)::

    Abar_t = exp(delta_t * A)                  (zero-order hold for A)
    h_t    = Abar_t * h_{t-1} + delta_t * B_t * u_t   (Euler step for B, as in Mamba)
    y_t    = sum_n C_t[n] * h_t[n] + D * u_t

``delta``, ``B`` and ``C`` depend on the input (that is what "selective" means). The recurrence
``h_t = a_t h_{t-1} + b_t`` is a first-order linear recurrence, so it can be computed either step by
step (``selective_scan_recurrent``) or with an associative scan in ``ceil(log2 L)`` parallel steps
(``selective_scan_parallel``, Hillis-Steele doubling). Both give the same ``y``.

Shapes: ``u`` and ``delta`` are ``(batch, L, d)``, ``A`` is ``(d, n)``, ``B`` and ``C`` are
``(batch, L, n)``, ``D`` is ``(d,)``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

MODES = ("parallel", "recurrent")


def _check_scan_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: torch.Tensor | None) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, L, d), got shape {tuple(u.shape)}; add a batch dimension.")
    b, L, d = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}.")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d, n) = ({d}, n), got {tuple(A.shape)}; one row per channel.")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (b, L, n):
            raise ValueError(f"{name} must be (batch, L, n) = {(b, L, n)}, got {tuple(t.shape)}.")
    if D is not None and D.shape != (d,):
        raise ValueError(f"D must be (d,) = ({d},), got {tuple(D.shape)}; or pass D=None.")


def selective_scan_recurrent(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor | None = None,
                             return_state: bool = False):
    """Selective scan, one time step after another: O(L) sequential steps, an O(d n) state."""
    _check_scan_inputs(u, delta, A, B, C, D)
    b, L, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)                       # (b, d, n)
        dBu = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]   # (b, d, n)
        h = dA * h + dBu
        y = (h * C[:, t, None, :]).sum(-1)                             # (b, d)
        if D is not None:
            y = y + D * u[:, t]
        ys.append(y)
    y = torch.stack(ys, dim=1)
    return (y, h) if return_state else y


def associative_scan(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Solve h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) along ``dim`` in ceil(log2 L) parallel steps.

    Hillis-Steele doubling with the associative operator (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2):
    after the step with offset k, position t holds the composition of positions t-2k+1..t.
    Work is O(L log L); every step is one vectorised multiply-add over the whole sequence.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if not -a.dim() <= dim < a.dim():
        raise ValueError(f"dim={dim} is out of range for a {a.dim()}-d tensor; pass the time axis.")
    L = a.shape[dim]
    offset = 1
    while offset < L:
        a_prev = a.narrow(dim, 0, L - offset)
        b_prev = b.narrow(dim, 0, L - offset)
        a_cur = a.narrow(dim, offset, L - offset)
        b_cur = b.narrow(dim, offset, L - offset)
        b = torch.cat([b.narrow(dim, 0, offset), a_cur * b_prev + b_cur], dim=dim)
        a = torch.cat([a.narrow(dim, 0, offset), a_cur * a_prev], dim=dim)
        offset *= 2
    return b


def selective_scan_parallel(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            C: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Selective scan with an associative (parallel) scan over time; materialises (batch, L, d, n)."""
    _check_scan_inputs(u, delta, A, B, C, D)
    dA = torch.exp(delta[..., None] * A)                               # (b, L, d, n)
    dBu = (delta * u)[..., None] * B[:, :, None, :]                    # (b, L, d, n)
    h = associative_scan(dA, dBu, dim=1)
    y = (h * C[:, :, None, :]).sum(-1)
    if D is not None:
        y = y + D * u
    return y


class SelectiveSSM(nn.Module):
    """One selective SSM layer (Mamba's S6 core, without the convolution and the gate).

    Input-dependent step ``delta = softplus(W_dt x)``, ``B = W_B x``, ``C = W_C x``; ``A`` is
    diagonal, negative and input-independent (S4D-real initialisation ``A[:, n] = -(n + 1)``).
    ``mode`` picks the recurrent or the parallel scan; ``step`` runs one decoding step with a
    fixed-size state.
    """

    def __init__(self, d_model: int, d_state: int = 16, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 < dt_min < dt_max:
            raise ValueError(f"need 0 < dt_min < dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
        dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        if not isinstance(dt_rank, int) or dt_rank <= 0:
            raise ValueError(f"dt_rank must be a positive integer, got {dt_rank!r}; None picks ceil(d_model/16).")
        self.d_model, self.d_state, self.dt_rank = d_model, d_state, dt_rank
        self.x_proj = nn.Linear(d_model, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_model, bias=True)
        # Mamba's initialisation: softplus(bias) is log-uniform in [dt_min, dt_max].
        dt = torch.exp(torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_model, 1))
        self.D = nn.Parameter(torch.ones(d_model))

    @property
    def A(self) -> torch.Tensor:
        """The (d_model, d_state) diagonal state matrix, always negative (a stable, decaying state)."""
        return -torch.exp(self.A_log)

    def scan_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the input-dependent ``delta`` (b, L, d), ``B`` and ``C`` (b, L, n)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, x: torch.Tensor, mode: str = "parallel") -> torch.Tensor:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not supported; use one of {MODES}.")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected input (batch, L, {self.d_model}), got {tuple(x.shape)}.")
        delta, B, C = self.scan_inputs(x)
        scan = selective_scan_parallel if mode == "parallel" else selective_scan_recurrent
        return scan(x, delta, self.A, B, C, self.D)

    def step(self, x_t: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step: ``x_t`` (b, d_model) and state ``h`` (b, d_model, d_state) -> (y_t, h)."""
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t must be (batch, {self.d_model}), got {tuple(x_t.shape)}.")
        if h is None:
            h = x_t.new_zeros(x_t.shape[0], self.d_model, self.d_state)
        elif h.shape != (x_t.shape[0], self.d_model, self.d_state):
            raise ValueError(f"h must be (batch, {self.d_model}, {self.d_state}), got {tuple(h.shape)}; "
                             "pass the state returned by the previous step, or None to start.")
        delta, B, C = self.scan_inputs(x_t[:, None])
        delta, B, C = delta[:, 0], B[:, 0], C[:, 0]
        h = torch.exp(delta[..., None] * self.A) * h + (delta * x_t)[..., None] * B[:, None, :]
        return (h * C[:, None, :]).sum(-1) + self.D * x_t, h


def scan_flops(seq_len: Any, d_inner: Any, d_state: Any, batch: Any = 1) -> Any:
    """FLOPs of ``selective_scan_recurrent`` with D: batch * L * d * (7 n + 2), an exp counted as one.

    Per step and channel: exp(delta A) 2n (multiply, exp), delta*u*B n + 1, A h + B u 2n,
    C h n multiplies and n - 1 adds, D u 2. Accepts ints or SymPy symbols.
    """
    for name, value in (("seq_len", seq_len), ("d_inner", d_inner), ("d_state", d_state), ("batch", batch)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}.")
    return batch * seq_len * d_inner * (7 * d_state + 2)


def attention_core_flops(seq_len: Any, d_model: Any, batch: Any = 1) -> Any:
    """Matmul FLOPs of softmax attention's QK^T and AV for all heads: 4 * batch * L^2 * d_model.

    (The naive causal kernel computes the full L x L product and masks it; the projections are
    not included.) Accepts ints or SymPy symbols.
    """
    for name, value in (("seq_len", seq_len), ("d_model", d_model), ("batch", batch)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}.")
    return 4 * batch * seq_len**2 * d_model


class _ElementwiseCounter(TorchDispatchMode):
    """Count arithmetic of elementwise ops (one per output element) and sums (one per input element
    beyond the first of each output)."""

    POINTWISE = {"mul", "add", "sub", "div", "exp"}

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")
        if name in self.POINTWISE and isinstance(out, torch.Tensor):
            self.flops += out.numel()
        elif name == "sum" and isinstance(out, torch.Tensor):
            self.flops += args[0].numel() - out.numel()
        return out


def count_elementwise_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn(*args, **kwargs)`` and count its elementwise FLOPs (mul/add/sub/div/exp and sums).

    ``torch.utils.flop_counter.FlopCounterMode`` counts only matrix products, so a scan made of
    elementwise operations reads as 0 FLOPs there; this counter fills that gap.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}; pass the function to run.")
    with torch.no_grad(), _ElementwiseCounter() as counter:
        fn(*args, **kwargs)
    return counter.flops


def saved_tensor_bytes(fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``fn(*args, **kwargs)``.

    Measured with ``torch.autograd.graph.saved_tensors_hooks``: the activation memory a training
    step must hold. Each saved tensor is counted at its full size (views of one buffer are counted
    again), which is an upper bound on what is resident; inputs and parameters are not excluded.
    A thin wrapper of ``memory.saved_tensor_bytes`` with ``distinct_storages=False``.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}; pass the function to run.")
    from .memory import saved_tensor_bytes as count_saved  # the library's one counter

    return count_saved(lambda: fn(*args, **kwargs), distinct_storages=False).total
