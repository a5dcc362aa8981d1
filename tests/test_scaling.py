"""Unit tests for transformer_challenges.scaling: published constants, SymPy derivation, fits."""
import numpy as np
import pytest
import sympy as sp

from transformer_challenges import scaling as sc

CHINCHILLA = (70e9, 1.4e12)   # Hoffmann et al. 2022: 70B parameters, 1.4T tokens
GPT3 = (175e9, 300e9)         # Brown et al. 2020: 175B parameters, 300B tokens


def test_published_constants():
    # Kaplan et al. 2020, eqs. (1.1), (1.2) and Table 2.
    assert sc.KAPLAN_N == dict(alpha_N=0.076, N_c=8.8e13)
    assert sc.KAPLAN_D == dict(alpha_D=0.095, D_c=5.4e13)
    assert sc.KAPLAN_ND == dict(alpha_N=0.076, alpha_D=0.103, N_c=6.4e13, D_c=1.8e13)
    # Hoffmann et al. 2022, eq. (10); Besiroglu et al. 2024, Table 1.
    h, b = sc.HOFFMANN2022, sc.BESIROGLU2024
    assert (h.E, h.A, h.B, h.alpha, h.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert (b.E, b.A, b.B, b.alpha, b.beta) == (1.8172, 482.01, 2085.43, 0.3478, 0.3658)


def test_kaplan_single_variable_laws_are_power_laws():
    assert sc.kaplan_loss_n(8.8e13) == pytest.approx(1.0)
    assert sc.kaplan_loss_d(5.4e13) == pytest.approx(1.0)
    # a 10x larger model lowers the loss by the factor 10^-0.076
    assert sc.kaplan_loss_n(1e10) / sc.kaplan_loss_n(1e9) == pytest.approx(10 ** -0.076)
    # eq. 1.5 reduces to eq.-1.1 form when D -> infinity, and to (D_c/D)^alpha_D when N -> infinity
    assert sc.kaplan_loss_nd(1e9, 1e30) == pytest.approx((6.4e13 / 1e9) ** 0.076, rel=1e-9)
    assert sc.kaplan_loss_nd(1e40, 1e10) == pytest.approx((1.8e13 / 1e10) ** 0.103, rel=1e-6)


def test_source_form_differs_from_kaplan_combined_form():
    # The source's additive form with Kaplan's constants roughly doubles the predicted loss.
    k, s = sc.kaplan_loss_nd(1e9, 1e10), sc.source_loss_nd(1e9, 1e10)
    assert 2.3 < k < 2.5 and s > 1.8 * k


def test_training_flops_reproduces_hoffmann_table3():
    # Hoffmann et al. 2022, Table 3 (Approach 1): parameters, FLOPs, tokens; each row obeys C = 6ND.
    rows = [(400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
            (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (1e12, 1.27e26, 21.2e12)]
    for n, c, d in rows:
        assert sc.training_flops(n, d) == pytest.approx(c, rel=0.05)
        assert 19 <= d / n <= 23  # the "~20 tokens per parameter" rule


def test_symbolic_derivation_matches_closed_form():
    r = sc.compute_optimal_symbolic()
    s = r["symbols"]
    assert sp.simplify(r["a"] - s["beta"] / (s["alpha"] + s["beta"])) == 0
    assert sp.simplify(r["b"] - s["alpha"] / (s["alpha"] + s["beta"])) == 0
    assert sp.simplify(6 * r["N_opt"] * r["D_opt"] - s["C"]) == 0
    law = sc.BESIROGLU2024
    sub = {s["E"]: law.E, s["A"]: law.A, s["B"]: law.B, s["alpha"]: law.alpha, s["beta"]: law.beta,
           s["C"]: 1e23}
    n_num, d_num = sc.compute_optimal(law, 1e23)
    assert float(r["N_opt"].subs(sub)) == pytest.approx(n_num, rel=1e-9)
    assert float(r["D_opt"].subs(sub)) == pytest.approx(d_num, rel=1e-9)


def test_closed_form_is_the_numerical_minimum():
    from scipy.optimize import minimize_scalar
    for law in sc.LAWS.values():
        c = 1e22
        n_star, _ = law.optimal(c)
        res = minimize_scalar(lambda logn: law.loss(np.exp(logn), c / (6 * np.exp(logn))),
                              bounds=(np.log(1e6), np.log(1e13)), method="bounded",
                              options=dict(xatol=1e-10))
        assert np.exp(res.x) == pytest.approx(n_star, rel=1e-3)


def test_exponents_and_tokens_per_parameter():
    # Hoffmann Table 2 reports a = 0.46 for Approach 3; the rounded eq.-10 constants give 0.452.
    a, b = sc.HOFFMANN2022.exponents()
    assert a == pytest.approx(0.28 / 0.62) and a + b == pytest.approx(1.0)
    assert round(a, 2) == 0.45
    # Besiroglu et al. 2024: a = 0.5126 (their reported value), i.e. N and D scale equally.
    assert sc.BESIROGLU2024.exponents()[0] == pytest.approx(0.5126, abs=1e-4)
    c = sc.training_flops(*CHINCHILLA)
    n_b, d_b = sc.BESIROGLU2024.optimal(c)
    assert 15 < d_b / n_b < 25          # ~20 tokens per parameter, Chinchilla's own choice
    assert 50e9 < n_b < 90e9            # close to Chinchilla's 70B
    n_h, d_h = sc.HOFFMANN2022.optimal(c)
    assert d_h / n_h > 60               # the rounded printed fit is far from 20 (Besiroglu's point)


def test_gpt3_is_undertrained():
    c = sc.training_flops(*GPT3)
    assert c == pytest.approx(3.15e23)
    for law in sc.LAWS.values():
        n_opt, d_opt = law.optimal(c)
        assert n_opt < GPT3[0] / 2 and d_opt > 2 * GPT3[1]
        assert law.loss(n_opt, d_opt) < law.loss(*GPT3)


def test_kaplan_nd_exponent():
    assert sc.kaplan_nd_optimal_exponent() == pytest.approx(0.103 / 0.179)


def test_symbolic_inputs():
    N, D = sp.symbols("N D", positive=True)
    expr = sc.HOFFMANN2022.loss(N, D)
    assert expr.subs({N: 1e9, D: 2e10}) == pytest.approx(sc.HOFFMANN2022.loss(1e9, 2e10))
    assert isinstance(sc.kaplan_loss_nd(N, D), sp.Expr)
    assert isinstance(sc.training_flops(N, D), sp.Expr)


def test_isoflop_curve_has_minimum_at_optimum():
    law = sc.HOFFMANN2022
    ns = np.logspace(8, 12, 401)
    losses = sc.isoflop_curve(law.loss, 1e22, ns)
    assert ns[np.argmin(losses)] == pytest.approx(law.optimal(1e22)[0], rel=0.03)


def test_fit_power_law_recovers_parameters():
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
    y = 1.5 + 30 * x ** -0.4
    f = sc.fit_power_law(x, y)
    assert (f.E, f.A, f.alpha) == pytest.approx((1.5, 30, 0.4), rel=1e-4)
    noisy = y + np.random.default_rng(0).normal(0, 0.005, len(x))
    f = sc.fit_power_law(x, noisy)
    assert abs(f.alpha - 0.4) < 3 * f.stderr["alpha"] + 1e-3
    lo, hi = f.predict_interval([3e6])
    assert lo[0] < 1.5 + 30 * 3e6 ** -0.4 + 0.02 and hi[0] > lo[0]
    boot = sc.bootstrap_power_law(x, noisy, n_boot=20)
    assert boot.shape == (20, 3) and abs(np.median(boot[:, 2]) - 0.4) < 0.1


@pytest.mark.parametrize("call", [
    lambda: sc.training_flops(-1, 10),
    lambda: sc.kaplan_loss_n(0),
    lambda: sc.kaplan_loss_d(float("nan")),
    lambda: sc.ChinchillaLaw(E=1, A=1, B=1, alpha=-0.3, beta=0.3),
    lambda: sc.compute_optimal("hoffmann", 1e20),
    lambda: sc.compute_optimal(sc.HOFFMANN2022, 0),
    lambda: sc.fit_power_law([1, 2, 3], [3, 2, 1]),
    lambda: sc.fit_power_law([1, 2, 3, 4], [3, 2, 1]),
    lambda: sc.fit_power_law([1, 2, 3, 4], [3, 2, 1, float("inf")]),
    lambda: sc.bootstrap_power_law([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], n_boot=3),
    lambda: sc.fit_power_law([1, 2, 3, 4], [4, 3, 2, 1.5]).predict_interval([5], level=1.5),
    lambda: sc.kaplan_nd_optimal_exponent(alpha_N=0),
])
def test_value_errors(call):
    with pytest.raises(ValueError):
        call()
