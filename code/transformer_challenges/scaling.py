"""Scaling laws with their published constants, compute-optimal allocation, power-law fits.

Used by the chapter "Data and scaling laws" (``chapters/07-data``, label ``ch-data``).

* Kaplan et al. (2020), arXiv:2001.08361: the single-variable laws L(N) = (N_c/N)^alpha_N,
  L(D) = (D_c/D)^alpha_D (their eqs. 1.1-1.2) and the combined form
  L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (their eq. 1.5, constants of their Table 2).
* Hoffmann et al. (2022), arXiv:2203.15556, "Chinchilla" Approach 3: L(N, D) = E + A/N^alpha + B/D^beta
  with E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28 (their eq. 10).
* Besiroglu et al. (2024), arXiv:2404.10102 (Epoch AI), re-fit of the same form on data
  reconstructed from Hoffmann's plots: E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658
  (their Table 1).

Formula functions accept plain numbers, NumPy arrays and SymPy symbols, so one function both
evaluates a law and derives with it. N counts parameters, D training tokens, C training FLOPs,
and the budget rule is C = 6 N D.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import sympy as sp

__all__ = [
    "KAPLAN_N", "KAPLAN_D", "KAPLAN_ND", "ChinchillaLaw", "HOFFMANN2022", "BESIROGLU2024", "LAWS",
    "training_flops", "kaplan_loss_n", "kaplan_loss_d", "kaplan_loss_nd", "source_loss_nd",
    "compute_optimal_symbolic", "compute_optimal", "kaplan_nd_optimal_exponent",
    "isoflop_curve", "power_law", "fit_power_law", "bootstrap_power_law", "PowerLawFit",
]

# Kaplan et al. 2020, eqs. (1.1)-(1.2): separate fits, N = non-embedding parameters, D = tokens.
KAPLAN_N = dict(alpha_N=0.076, N_c=8.8e13)
KAPLAN_D = dict(alpha_D=0.095, D_c=5.4e13)
# Kaplan et al. 2020, Table 2: joint fit of eq. (1.5).
KAPLAN_ND = dict(alpha_N=0.076, alpha_D=0.103, N_c=6.4e13, D_c=1.8e13)


def _is_symbolic(*values: Any) -> bool:
    return any(isinstance(v, sp.Basic) for v in values)


def _check_positive(**values: Any) -> None:
    """Raise ValueError for a numeric argument that is not > 0 (symbols and arrays pass through)."""
    for name, value in values.items():
        if isinstance(value, sp.Basic):
            if value.is_positive is False:
                raise ValueError(f"{name}={value} is not positive; pass a positive number or a "
                                 "symbol declared positive=True.")
            continue
        arr = np.asarray(value, dtype=float)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}; "
                             "pass parameter/token/FLOP counts as positive numbers.")


def training_flops(n_params: Any, n_tokens: Any) -> Any:
    """Training compute by the budget rule C = 6 N D (forward 2ND + backward 4ND FLOPs)."""
    _check_positive(n_params=n_params, n_tokens=n_tokens)
    return 6 * n_params * n_tokens


def kaplan_loss_n(n_params: Any, alpha_N: float = KAPLAN_N["alpha_N"],
                  N_c: float = KAPLAN_N["N_c"]) -> Any:
    """Kaplan eq. (1.1): loss of a model of N non-embedding parameters trained to convergence."""
    _check_positive(n_params=n_params)
    return (N_c / n_params) ** alpha_N


def kaplan_loss_d(n_tokens: Any, alpha_D: float = KAPLAN_D["alpha_D"],
                  D_c: float = KAPLAN_D["D_c"]) -> Any:
    """Kaplan eq. (1.2): loss of a large model trained on D tokens with early stopping."""
    _check_positive(n_tokens=n_tokens)
    return (D_c / n_tokens) ** alpha_D


def kaplan_loss_nd(n_params: Any, n_tokens: Any, alpha_N: float = KAPLAN_ND["alpha_N"],
                   alpha_D: float = KAPLAN_ND["alpha_D"], N_c: float = KAPLAN_ND["N_c"],
                   D_c: float = KAPLAN_ND["D_c"]) -> Any:
    """Kaplan eq. (1.5), the published combined form: [(N_c/N)^(a_N/a_D) + D_c/D]^a_D."""
    _check_positive(n_params=n_params, n_tokens=n_tokens)
    return ((N_c / n_params) ** (alpha_N / alpha_D) + D_c / n_tokens) ** alpha_D


def source_loss_nd(n_params: Any, n_tokens: Any, L_inf: Any = 0.0,
                   alpha_N: float = KAPLAN_N["alpha_N"], N_c: float = KAPLAN_N["N_c"],
                   alpha_D: float = KAPLAN_D["alpha_D"], D_c: float = KAPLAN_D["D_c"]) -> Any:
    """The source text's additive form (N_c/N)^a_N + (D_c/D)^a_D + L_inf (defaults: Kaplan's
    single-variable constants, which the source does not give; it is *not* Kaplan's eq. 1.5)."""
    _check_positive(n_params=n_params, n_tokens=n_tokens)
    return (N_c / n_params) ** alpha_N + (D_c / n_tokens) ** alpha_D + L_inf


@dataclass(frozen=True)
class ChinchillaLaw:
    """The parametric law L(N, D) = E + A / N^alpha + B / D^beta with named, cited constants."""

    E: Any
    A: Any
    B: Any
    alpha: Any
    beta: Any
    name: str = "custom"

    def __post_init__(self):
        _check_positive(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta)

    def loss(self, n_params: Any, n_tokens: Any) -> Any:
        """Predicted loss (nats per token) of N parameters trained on D tokens."""
        _check_positive(n_params=n_params, n_tokens=n_tokens)
        return self.E + self.A / n_params ** self.alpha + self.B / n_tokens ** self.beta

    def exponents(self) -> tuple[Any, Any]:
        """(a, b) with N* ~ C^a, D* ~ C^b: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def optimal(self, compute: Any) -> tuple[Any, Any]:
        """Compute-optimal (N*, D*) for a budget of C = 6 N D FLOPs (closed form)."""
        return compute_optimal(self, compute)

    def symbolic(self) -> "ChinchillaLaw":
        """The same law with exact SymPy rationals instead of floats (for clean algebra)."""
        r = lambda v: sp.nsimplify(v, rational=True) if not isinstance(v, sp.Basic) else v  # noqa: E731
        return ChinchillaLaw(r(self.E), r(self.A), r(self.B), r(self.alpha), r(self.beta), self.name)


# Hoffmann et al. 2022, eq. (10) (Approach 3), as printed in the body of the paper.
HOFFMANN2022 = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                             name="Hoffmann et al. 2022")
# Besiroglu et al. 2024, Table 1 (standard errors: E 0.03, A 124.58, B 1293.23, alpha 0.02, beta 0.02).
BESIROGLU2024 = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                              name="Besiroglu et al. 2024")
LAWS = {"hoffmann2022": HOFFMANN2022, "besiroglu2024": BESIROGLU2024}


@lru_cache(maxsize=1)
def compute_optimal_symbolic() -> dict[str, sp.Expr]:
    """Derive N*(C), D*(C) with SymPy: minimise E + A/N^alpha + B/D^beta subject to C = 6 N D.

    Substitutes D = C/(6N), solves dL/dN = 0 and returns the expressions for ``N_opt``,
    ``D_opt``, ``ratio`` (= D*/N*, tokens per parameter), the exponents ``a`` and ``b`` and the
    ``symbols`` used (all declared positive). Cached: treat the returned dict as read-only.
    """
    N, C, E, A, B, alpha, beta = sp.symbols("N C E A B alpha beta", positive=True)
    D = C / (6 * N)
    loss_on_budget = E + A / N ** alpha + B / D ** beta
    solutions = sp.solve(sp.Eq(sp.diff(loss_on_budget, N), 0), N)
    if len(solutions) != 1:  # pragma: no cover - guards a SymPy behaviour change
        raise RuntimeError(f"expected one stationary point, SymPy returned {solutions}")
    n_opt = sp.simplify(solutions[0])
    d_opt = sp.simplify(C / (6 * n_opt))
    a = sp.simplify(sp.expand_log(sp.log(n_opt), force=True).diff(C) * C)
    b = sp.simplify(sp.expand_log(sp.log(d_opt), force=True).diff(C) * C)
    return dict(N_opt=n_opt, D_opt=d_opt, ratio=sp.simplify(d_opt / n_opt), a=a, b=b,
                symbols=dict(N=N, C=C, E=E, A=A, B=B, alpha=alpha, beta=beta))


def compute_optimal(law: ChinchillaLaw, compute: Any) -> tuple[Any, Any]:
    """Closed-form (N*, D*) for ``law`` at C FLOPs: N* = G (C/6)^a, D* = (C/6)/N*,
    G = (alpha A / (beta B))^(1/(alpha+beta)). Works for numbers, arrays and SymPy symbols."""
    if not isinstance(law, ChinchillaLaw):
        raise ValueError(f"law must be a ChinchillaLaw (e.g. scaling.HOFFMANN2022), got {type(law).__name__}.")
    _check_positive(compute=compute)
    s = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / s)
    n_opt = g * (compute / 6) ** (law.beta / s)
    return n_opt, (compute / 6) / n_opt


def kaplan_nd_optimal_exponent(alpha_N: Any = KAPLAN_ND["alpha_N"],
                               alpha_D: Any = KAPLAN_ND["alpha_D"]) -> Any:
    """Exponent a in N* ~ C^a when Kaplan's converged L(N, D) (eq. 1.5) is minimised under C = 6ND:
    a = alpha_D / (alpha_N + alpha_D). (Kaplan's own 0.73 comes from early-stopped training.)"""
    _check_positive(alpha_N=alpha_N, alpha_D=alpha_D)
    return alpha_D / (alpha_N + alpha_D)


def isoflop_curve(loss_fn: Callable[[Any, Any], Any], compute: float,
                  n_params: np.ndarray) -> np.ndarray:
    """Loss along the iso-FLOP line: for each N, D = C / (6N), return loss_fn(N, D)."""
    _check_positive(compute=compute, n_params=n_params)
    n = np.asarray(n_params, dtype=float)
    return np.asarray(loss_fn(n, compute / (6 * n)), dtype=float)


# ----------------------------------------------------------------------------- power-law fits
def power_law(x: Any, E: Any, A: Any, alpha: Any) -> Any:
    """Saturating power law y = E + A * x^(-alpha) (E = irreducible loss)."""
    return E + A * np.power(x, -alpha) if not _is_symbolic(x, E, A, alpha) else E + A * x ** (-alpha)


@dataclass
class PowerLawFit:
    """Result of ``fit_power_law``: parameters, their standard errors and covariance."""

    E: float
    A: float
    alpha: float
    stderr: dict
    cov: np.ndarray

    def predict(self, x: Any) -> np.ndarray:
        """Evaluate the fitted law at ``x``."""
        return power_law(np.asarray(x, dtype=float), self.E, self.A, self.alpha)

    def predict_interval(self, x: Any, n_samples: int = 2000, seed: int = 0,
                         level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Interval of the prediction at ``x``: Gaussian draws of (E, ln A, alpha) from the fit's
        covariance (delta method, so A stays positive), then the central ``level`` quantiles."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}; e.g. 0.9 for a 90% interval.")
        rng = np.random.default_rng(seed)
        J = np.diag([1.0, 1.0 / self.A, 1.0])
        draws = rng.multivariate_normal([self.E, np.log(self.A), self.alpha], J @ self.cov @ J.T,
                                        size=n_samples)
        x = np.atleast_1d(np.asarray(x, dtype=float))
        ys = np.stack([power_law(x, e, np.exp(log_a), a) for e, log_a, a in draws])
        lo, hi = np.quantile(ys, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return lo, hi


def _as_xy(x: Any, y: Any, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}.")
    if len(x) < min_points:
        raise ValueError(f"need at least {min_points} points to fit 3 parameters with an error "
                         f"estimate, got {len(x)}; add more model sizes.")
    _check_positive(x=x)
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains non-finite values; drop diverged runs before fitting.")
    return x, y


def fit_power_law(x: Any, y: Any, sigma: Any = None) -> PowerLawFit:
    """Least-squares fit of y = E + A x^(-alpha) with ``scipy.optimize.curve_fit``.

    Fits in log-x space for conditioning (x is rescaled by its geometric mean, and A is mapped
    back). ``sigma`` are optional per-point standard deviations (absolute).
    """
    from scipy.optimize import curve_fit

    x, y = _as_xy(x, y, min_points=4)
    x0 = float(np.exp(np.mean(np.log(x))))
    u = x / x0
    span = float(y.max() - y.min()) or 1.0
    p0 = [max(float(y.min()) - 0.5 * span, 1e-6), span, 0.5]
    bounds = ([0.0, 0.0, 1e-3], [np.inf, np.inf, 5.0])
    popt, pcov = curve_fit(lambda u_, E, A, a: E + A * u_ ** (-a), u, y, p0=p0, bounds=bounds,
                           sigma=sigma, absolute_sigma=sigma is not None, maxfev=20000)
    E, A_u, alpha = popt
    # y = E + A_u (x/x0)^-alpha = E + (A_u x0^alpha) x^-alpha: map A and its covariance (delta method)
    A = A_u * x0 ** alpha
    J = np.array([[1, 0, 0], [0, x0 ** alpha, A_u * x0 ** alpha * np.log(x0)], [0, 0, 1]])
    cov = J @ pcov @ J.T
    stderr = dict(zip(("E", "A", "alpha"), np.sqrt(np.clip(np.diag(cov), 0, None))))
    return PowerLawFit(float(E), float(A), float(alpha), stderr, cov)


def bootstrap_power_law(x: Any, y: Any, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Refit on ``n_boot`` resamples of the points (with replacement); return (n_boot, 3) [E, A, alpha].

    Resamples that contain fewer than 4 distinct x values are redrawn.
    """
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}; 200 is a good default.")
    x, y = _as_xy(x, y, min_points=5)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_boot:
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < 4:
            continue
        try:
            f = fit_power_law(x[idx], y[idx])
        except RuntimeError:  # curve_fit did not converge on this resample
            continue
        out.append([f.E, f.A, f.alpha])
    return np.array(out)
