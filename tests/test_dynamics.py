"""Unit tests for transformer_challenges.dynamics (chapter "Training dynamics")."""
import math

import pytest
import sympy as sp
import torch

from transformer_challenges import dynamics as dy
from transformer_challenges.model import Block, GPTConfig, TinyGPT


def tiny(norm="post", n_layers=3, d_model=16, **kw):
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(vocab_size=11, seq_len=8, d_model=d_model, n_heads=2,
                             n_layers=n_layers, norm=norm, **kw))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (4, 8), generator=g)
    return x, torch.roll(x, -1, dims=1)


# --- DeepNorm constants: Wang et al. 2022 (DeepNet), Figure 2 -------------------------------
def test_deepnorm_decoder_only_formula():
    # decoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4)
    alpha, beta = dy.deepnorm_constants(8)
    assert alpha == pytest.approx(2.0)            # (16)^(1/4)
    alpha, beta = dy.deepnorm_constants(32)
    assert beta == pytest.approx(0.25)            # (256)^(-1/4)
    assert alpha == pytest.approx(64 ** 0.25)


def test_deepnorm_encoder_decoder_formula():
    # encoder: 0.81 (N^4 M)^(1/16), 0.87 (N^4 M)^(-1/16); decoder: (3M)^(1/4), (12M)^(-1/4)
    (a_e, b_e), (a_d, b_d) = dy.deepnorm_constants(1, "encoder-decoder", n_decoder_layers=27)
    assert a_d == pytest.approx(3.0) and b_d == pytest.approx(324 ** -0.25)
    assert a_e == pytest.approx(0.81 * 27 ** (1 / 16)) and b_e == pytest.approx(0.87 * 27 ** (-1 / 16))


def test_deepnorm_symbolic_matches_numeric():
    n = sp.Symbol("N", positive=True)
    alpha, beta = dy.deepnorm_constants(n)
    assert sp.simplify(alpha ** 4 - 2 * n) == 0
    assert sp.simplify(beta ** -4 - 8 * n) == 0
    a12, b12 = dy.deepnorm_constants(12)
    assert float(alpha.subs(n, 12)) == pytest.approx(a12)
    assert float(beta.subs(n, 12)) == pytest.approx(b12)


@pytest.mark.parametrize("kwargs", [dict(n_layers=0), dict(n_layers=2.5), dict(n_layers=3, arch="gpt"),
                                    dict(n_layers=3, arch="encoder-decoder"),
                                    dict(n_layers=3, n_decoder_layers=3),
                                    dict(n_layers=3, arch="encoder-decoder", n_decoder_layers=-1)])
def test_deepnorm_constants_errors(kwargs):
    with pytest.raises(ValueError):
        dy.deepnorm_constants(**kwargs)


# --- initialisation ------------------------------------------------------------------------------
def test_xavier_init_std_per_slice():
    torch.manual_seed(0)
    m = tiny(d_model=64, n_layers=2, d_ff=64)
    dy.xavier_init_(m, gain=0.5, qk_gain=1.0)
    b = m.blocks[0]
    d = 64
    # square d x d maps: xavier std = gain * sqrt(2 / (d + d)) = gain / sqrt(d)
    assert b.attn.qkv.weight[:d].std().item() == pytest.approx(1 / 8, rel=0.05)
    assert b.attn.qkv.weight[2 * d:].std().item() == pytest.approx(0.5 / 8, rel=0.05)
    assert b.ffn.down.weight.std().item() == pytest.approx(0.5 / 8, rel=0.05)
    assert b.attn.proj.bias.abs().max().item() == 0.0


def test_deepnorm_gpt_sets_alpha_and_beta():
    cfg = GPTConfig(vocab_size=11, seq_len=8, d_model=64, n_heads=2, n_layers=8, norm="post", d_ff=64)
    torch.manual_seed(0)
    m = dy.deepnorm_gpt(cfg)
    alpha, beta = dy.deepnorm_constants(8)
    assert all(b.residual_scale == pytest.approx(alpha) for b in m.blocks)
    stds = torch.tensor([b.ffn.up.weight.std().item() for b in m.blocks])
    assert stds.mean().item() == pytest.approx(beta / 8, rel=0.05)
    with pytest.raises(ValueError, match="norm='post'"):
        dy.deepnorm_gpt(GPTConfig(vocab_size=11, seq_len=8, n_layers=2, norm="pre"))


def test_init_errors():
    m = tiny()
    with pytest.raises(ValueError):
        dy.xavier_init_(m, gain=0.0)
    with pytest.raises(ValueError):
        dy.deepnorm_init_(m, beta=-1.0)
    with pytest.raises(ValueError, match="no model.Block"):
        dy.xavier_init_(torch.nn.Linear(3, 3))


# --- gradient and residual measurements ---------------------------------------------------------
def test_layer_grad_norms_match_autograd():
    m = tiny("pre")
    x, y = batch()
    got = dy.layer_grad_norms(m, x, y)
    _, loss = m(x, y)
    loss.backward()
    want = [b.ffn.down.weight.grad.norm().item() for b in m.blocks]
    assert got == pytest.approx(want, rel=1e-5)
    assert len(got) == 3 and all(g > 0 for g in got)
    with pytest.raises(ValueError, match="not a parameter"):
        dy.layer_grad_norms(m, x, y, param="ffn.nope")
    with pytest.raises(ValueError, match="targets"):
        dy.layer_grad_norms(m, x, None)


def test_residual_norms_post_ln_is_normalised():
    # after a LayerNorm with unit gain and zero bias, ||x||^2 / d = 1 exactly (up to LN's eps)
    m = tiny("post")
    norms = dy.residual_norms(m, batch()[0])
    assert len(norms) == 4
    assert norms[1:] == pytest.approx([1.0] * 3, abs=1e-3)
    with pytest.raises(ValueError):
        dy.residual_norms(torch.nn.Linear(3, 3), batch()[0])


def test_pre_ln_residual_stream_grows_under_xavier():
    # Xiong et al. 2020, Lemma 3: with Xavier init, E||x_l||^2 grows linearly with the layer index
    m = tiny("pre", n_layers=6, d_model=64, d_ff=64)
    dy.xavier_init_(m)
    norms = dy.residual_norms(m, batch()[0])
    assert all(b > a for a, b in zip(norms, norms[1:]))
    assert norms[-1] > 2.0


def test_power_law_exponent():
    xs = [6, 12, 24]
    assert dy.power_law_exponent(xs, [3 * x ** -0.5 for x in xs]) == pytest.approx(-0.5)
    assert dy.power_law_exponent(xs, [7.0, 7.0, 7.0]) == pytest.approx(0.0)
    for bad in ([1], [1, 2, 3]), ([1, 2], [0, 1]), ([2, 2], [1, 3]):
        with pytest.raises(ValueError):
            dy.power_law_exponent(*bad)


# --- Jacobian algebra -----------------------------------------------------------------------------
def test_residual_jacobian_identity_path():
    pre = dy.residual_jacobian(3, "pre")
    post = dy.residual_jacobian(3, "post")
    # Pre-LN: expanding prod (1 + J_l N_l) leaves the bare identity 1 and 2^3 terms in all
    assert 1 in pre.args and len(pre.args) == 8
    # Post-LN: every one of the 2^3 terms carries N3 ... N2 ... N1
    assert len(post.args) == 8 and 1 not in post.args
    n1, n2, n3 = sp.symbols("N1:4", commutative=False)
    for term in post.args:
        assert {n1, n2, n3} <= term.free_symbols
    # setting every branch Jacobian to zero: Pre-LN -> identity, Post-LN -> N3 N2 N1
    zero = {s: 0 for s in pre.free_symbols if s.name.startswith("J")}
    assert pre.subs(zero) == 1
    assert post.subs(zero) == n3 * n2 * n1
    with pytest.raises(ValueError):
        dy.residual_jacobian(2, "middle")
    with pytest.raises(ValueError):
        dy.residual_jacobian(0, "pre")


def test_block_wiring_matches_formula():
    # the two wirings of model.Block are the formulas the chapter derives from
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    for norm in ("pre", "post"):
        b = Block(16, 2, norm=norm)
        h = x + b.attn(b.ln1(x)) if norm == "pre" else b.ln1(x + b.attn(x))
        h = h + b.ffn(b.ln2(h)) if norm == "pre" else b.ln2(h + b.ffn(h))
        assert torch.allclose(b(x), h, atol=1e-6)
    assert math.isfinite(dy.power_law_exponent([1, 2], [1, 2]))


def test_block_residual_scale_matches_docstring():
    # model.Block's docstring: residual_scale (alpha) multiplies the skip path in BOTH wirings,
    # before each of the two additions: pre  x <- a x + F(LN(x)),  post  x <- LN(a x + F(x))
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    a = 1.7
    for norm in ("pre", "post"):
        b = Block(16, 2, norm=norm, residual_scale=a)
        if norm == "pre":
            h = a * x + b.attn(b.ln1(x))
            h = a * h + b.ffn(b.ln2(h))
        else:
            h = b.ln1(a * x + b.attn(x))
            h = b.ln2(a * h + b.ffn(h))
        assert torch.allclose(b(x), h, atol=1e-6)
        plain = Block(16, 2, norm=norm)
        plain.load_state_dict(b.state_dict())
        assert not torch.allclose(plain(x), b(x), atol=1e-3)   # alpha really acts in this wiring
    with pytest.raises(ValueError, match="residual_scale"):
        Block(16, 2, residual_scale=0.0)
