"""Tests for transformer_challenges.costs: the source's GPT-3 numbers, published figures, errors."""
import math

import pytest
import sympy as sp

from transformer_challenges import costs
from transformer_challenges.costs import GPT3_175B, ModelConfig

GB = 10**9


# --------------------------------------------------------------------------- the source's numbers
def test_source_training_flops():
    # source: 6 x 174600e6 x 300e9 = 3.1428e23 FLOPs
    assert costs.training_flops(174_600 * 10**6, 300 * 10**9) == 314_280_000_000_000_000_000_000
    assert costs.training_flops(174_600e6, 300e9, recompute=True) == 8 * 174_600 * 10**6 * 300 * 10**9


def test_source_param_count_is_174600m():
    # 174,600M is GPT-3 175B's count with embeddings (Brown et al. 2020, Table D.1)
    assert costs.param_count(GPT3_175B) == 174_604_259_328
    assert round(costs.param_count(GPT3_175B) / 10**8) == 1746


def test_source_training_time():
    # source: 8 x 300e9 x 175e9 / (1024 x 312e12 x 0.45) ~ 2,921,340 s ~ 34 days
    t = costs.training_time_seconds(175 * GB, 300 * GB, 1024, 312e12, 0.45)
    assert int(t) == 2_921_340  # 2,921,340.81 s: the source truncates
    assert round(t / 86_400) == 34
    t6 = costs.training_time_seconds(175 * GB, 300 * GB, 1024, 312e12, 0.45, recompute=False)
    assert t6 == pytest.approx(0.75 * t)


def test_source_parameter_bytes():
    assert costs.parameter_bytes(175 * GB) == 350 * GB
    assert costs.parameter_bytes(175 * GB, 16) == 2_800 * GB  # mixed-precision Adam (ZeRO)


@pytest.mark.parametrize("b, expected", [(1, 275_414_777_856), (64, 17_626_545_782_784),
                                         (128, 35_253_091_565_568)])
def test_source_activation_bytes(b, expected):
    assert costs.activation_bytes(GPT3_175B, b) == expected


def test_source_activation_ratios():
    # source: 0.79x, 50x, 101x the 350 GB of fp16 parameters
    ratios = [costs.activation_bytes(GPT3_175B, b) / (350 * GB) for b in (1, 64, 128)]
    assert [round(r, 2) for r in ratios[:1]] == [0.79]
    assert [round(r) for r in ratios[1:]] == [50, 101]


def test_source_kv_cache():
    # source: 4 x 64 x l x h x (512 + 32) = 164,282,499,072 bytes
    assert costs.kv_cache_bytes(GPT3_175B, batch=64, seq_len=512 + 32) == 164_282_499_072


# --------------------------------------------------------------------------- published, not in source
@pytest.mark.parametrize("h, a, l, billions", [
    (2304, 24, 24, 1.7), (6144, 48, 40, 18.4), (12288, 96, 80, 145.6), (25600, 160, 128, 1008.0)])
def test_megatron_parameter_counts(h, a, l, billions):
    # Narayanan et al. 2021 (SC'21), Table 1: P = 12lh^2 (1 + 13/(12h) + (V+s)/(12lh)),
    # V = 51,200, s = 2048. Our count adds only the final LayerNorm (2h).
    cfg = ModelConfig(n_layers=l, d_model=h, n_heads=a, vocab_size=51_200, seq_len=2048)
    assert round(costs.param_count(cfg) / 10**9, 1) == billions


@pytest.mark.parametrize("name, millions", [
    ("GPT-3 Small", 125), ("GPT-3 Medium", 356), ("GPT-3 Large", 760), ("GPT-3 XL", 1_320),
    ("GPT-3 2.7B", 2_650), ("GPT-3 6.7B", 6_660), ("GPT-3 13B", 12_850), ("GPT-3 175B", 174_600)])
def test_gpt3_family_parameter_counts(name, millions):
    # Brown et al. 2020, Table D.1 ("Params (M)"); the table rounds to 3-4 significant digits
    n = costs.param_count(costs.GPT3_FAMILY[name])
    assert n / 10**6 == pytest.approx(millions, rel=0.005)


@pytest.mark.parametrize("n_params, tokens, flops", [(400e6, 8.0e9, 1.92e19), (1e9, 20.2e9, 1.21e20),
                                                     (10e9, 205.1e9, 1.23e22)])
def test_chinchilla_compute(n_params, tokens, flops):
    # Hoffmann et al. 2022, Table 3 (compute-optimal tokens), FLOPs = 6 N D (3 significant digits)
    assert costs.training_flops(int(n_params), int(tokens)) == pytest.approx(flops, rel=0.005)


def test_gpt3_small_compute_table_d1():
    # Brown et al. 2020, Table D.1: GPT-3 Small, 125M params x 300B tokens -> 2.25E+20 FLOPs
    assert costs.training_flops(125 * 10**6, 300 * GB) == 225 * 10**18


def test_pagedattention_opt13b_kv_per_token():
    # Kwon et al. 2023 (vLLM), Section 3: OPT-13B needs 800 KB of KV cache per token
    # (2 x 5120 x 40 x 2 bytes), and up to 1.6 GB for one 2048-token request.
    opt13b = ModelConfig(n_layers=40, d_model=5120, n_heads=40, vocab_size=50_272, seq_len=2048)
    assert costs.kv_cache_bytes(opt13b, 1, 1) == 800 * 1024
    assert costs.kv_cache_bytes(opt13b, 1, 2048) / 2**30 == pytest.approx(1.6, abs=0.05)


def test_llama2_70b_gqa_kv_per_token():
    # Touvron et al. 2023 (Llama 2): 70B has 80 layers, d_model 8192, 64 heads, 8 KV heads (GQA).
    # KV per token = 2 x 80 x 8 x 128 x 2 B = 320 KiB, 8x less than without GQA.
    llama = ModelConfig(n_layers=80, d_model=8192, n_heads=64, vocab_size=32_000, seq_len=4096,
                        d_ff=28_672, n_kv_heads=8)
    assert costs.kv_cache_bytes(llama, 1, 1) == 320 * 1024
    mha = ModelConfig(80, 8192, 64, 32_000, 4096, d_ff=28_672)
    assert costs.kv_cache_bytes(mha, 1, 1) == 8 * costs.kv_cache_bytes(llama, 1, 1)


def test_korthikanti_selective_recompute_savings():
    # Korthikanti et al. 2022, Section 4.2: 5as/h = 80 for GPT-3 (a=96, s=2048, h=12288) and
    # selective recomputation cuts activation memory by 70% for GPT-3 and 65% for MT-NLG
    # (a=128, h=20480, s=2048).
    mtnlg = ModelConfig(n_layers=105, d_model=20480, n_heads=128, vocab_size=51_200, seq_len=2048)
    for cfg, saving in [(GPT3_175B, 0.70), (mtnlg, 0.65)]:
        full = costs.activation_bytes(cfg, 1, tensor_parallel=8, sequence_parallel=True)
        sel = costs.activation_bytes(cfg, 1, recompute="selective", tensor_parallel=8,
                                     sequence_parallel=True)
        assert round(1 - sel / full, 2) == saving


def test_korthikanti_table2_symbolic():
    # Korthikanti et al. 2022, Table 2 (activation memory per layer), checked symbolically
    cfg = ModelConfig.symbolic()
    s, b, h, a, l = sp.symbols("s b h a l", positive=True, integer=True)
    t = sp.Symbol("t", positive=True, integer=True)
    cases = {
        ("none", 1, False): s * b * h * (34 + 5 * a * s / h),
        ("none", t, False): s * b * h * (10 + 24 / t + 5 * a * s / (h * t)),
        ("none", t, True): s * b * h / t * (34 + 5 * a * s / h),
        ("selective", t, False): s * b * h * (10 + 24 / t),
        ("selective", t, True): s * b * h * 34 / t,
        ("full", 1, False): 2 * s * b * h,
    }
    for (mode, tp, sp_flag), per_layer in cases.items():
        got = costs.activation_bytes(cfg, b, recompute=mode, tensor_parallel=tp, sequence_parallel=sp_flag)
        assert sp.simplify(got - l * per_layer) == 0, (mode, tp, sp_flag)


def test_activation_terms_sum_and_no_dropout():
    cfg = ModelConfig.symbolic()
    s, b, h, a = sp.symbols("s b h a", positive=True, integer=True)
    total = sum(t.bytes for t in costs.activation_terms(cfg, b))
    assert sp.simplify(total - s * b * h * (34 + 5 * a * s / h)) == 0
    no_drop = sum(t.bytes for t in costs.activation_terms(cfg, b, dropout=False))
    assert sp.simplify(no_drop - s * b * h * (32 + 2 * a * s / h)) == 0


# --------------------------------------------------------------------------- symbols and types
def test_symbolic_param_count_and_kv():
    cfg = ModelConfig.symbolic()
    l, h, V, s = sp.symbols("l h V s", positive=True, integer=True)
    b, n = sp.symbols("b n", positive=True, integer=True)
    assert sp.expand(costs.param_count(cfg) - (12 * l * h**2 + 13 * l * h + (V + s) * h + 2 * h)) == 0
    assert sp.simplify(costs.kv_cache_bytes(cfg, b, n) - 4 * b * l * h * n) == 0
    N, D = sp.symbols("N D", positive=True)
    assert costs.training_flops(N, D) == 6 * N * D
    assert costs.training_flops(N, D, recompute=True) == 8 * N * D


def test_int_results_are_ints():
    assert type(costs.param_count(GPT3_175B)) is int
    assert type(costs.activation_bytes(GPT3_175B, 1, recompute="selective", tensor_parallel=8)) is int
    assert type(costs.kv_cache_bytes(GPT3_175B, 1, 10)) is int
    assert costs.kv_cache_bytes(GPT3_175B, 1, 1, bytes_per_value=0.5) * 4 == costs.kv_cache_bytes(GPT3_175B, 1, 1)


def test_tensor_parallel_full_recompute():
    one = costs.activation_bytes(GPT3_175B, 1, recompute="full")
    assert one == 96 * 2 * 2048 * 12288
    assert costs.activation_bytes(GPT3_175B, 1, recompute="full", tensor_parallel=8,
                                  sequence_parallel=True) * 8 == one


def test_defaults():
    cfg = ModelConfig(2, 64, 4, 100, 32)
    assert cfg.d_ff == 256 and cfg.n_kv_heads == 4 and cfg.head_dim == 16 and cfg.kv_dim == 64
    assert costs.activation_bytes(cfg, 2) == costs.activation_bytes(cfg, 2, seq_len=32)
    assert costs.activation_bytes(cfg, 2, seq_len=64) > costs.activation_bytes(cfg, 2)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(n_layers=0), "n_layers"), (dict(d_model=-8), "d_model"), (dict(n_heads=5), "n_heads"),
    (dict(n_kv_heads=3), "n_kv_heads"), (dict(vocab_size=1.5), "vocab_size"),
    (dict(seq_len=True), "seq_len")])
def test_config_errors(kwargs, match):
    base = dict(n_layers=2, d_model=64, n_heads=4, vocab_size=100, seq_len=32)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ModelConfig(**base)


def test_function_errors():
    cfg = ModelConfig(2, 64, 4, 100, 32)
    with pytest.raises(ValueError, match="recompute"):
        costs.activation_bytes(cfg, 1, recompute="some")
    with pytest.raises(ValueError, match="tensor_parallel"):
        costs.activation_bytes(cfg, 1, tensor_parallel=3)
    with pytest.raises(ValueError, match="tensor_parallel"):
        costs.activation_bytes(cfg, 1, tensor_parallel=0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        costs.activation_bytes(ModelConfig(2, 64, 4, 100, 32, n_kv_heads=2), 1, tensor_parallel=4)
    with pytest.raises(ValueError, match="sequence_parallel"):
        costs.activation_bytes(cfg, 1, sequence_parallel="yes")
    with pytest.raises(ValueError, match="batch"):
        costs.activation_bytes(cfg, 0)
    with pytest.raises(ValueError, match="seq_len"):
        costs.kv_cache_bytes(cfg, 1, -1)
    with pytest.raises(ValueError, match="bytes_per_value"):
        costs.kv_cache_bytes(cfg, 1, 1, bytes_per_value=0)
    with pytest.raises(ValueError, match="ModelConfig"):
        costs.param_count({"n_layers": 2})
    with pytest.raises(ValueError, match="n_tokens"):
        costs.training_flops(10, 2.5)
    with pytest.raises(ValueError, match="recompute"):
        costs.training_flops(10, 2, recompute="full")
    with pytest.raises(ValueError, match="utilization"):
        costs.training_time_seconds(10, 10, 1, 1e12, 1.5)
    with pytest.raises(ValueError, match="peak_flops"):
        costs.training_time_seconds(10, 10, 1, -1.0, 0.5)
    with pytest.raises(ValueError, match="n_gpus"):
        costs.training_time_seconds(10, 10, 0, 1e12, 0.5)
    with pytest.raises(ValueError, match="positive"):
        ModelConfig(n_layers=sp.Symbol("l", negative=True), d_model=64, n_heads=4, vocab_size=10, seq_len=8)


def test_time_is_float_and_symbolic():
    t = costs.training_time_seconds(10**9, 10**9, 2, 1e12, 0.5)
    assert isinstance(t, float) and math.isclose(t, 8e18 / 1e12)
    N, D, G, P, U = sp.symbols("N D G P U", positive=True)
    assert sp.simplify(costs.training_time_seconds(N, D, G, P, U) - 8 * N * D / (G * P * U)) == 0


# --------------------------------------------------------------------------- will it fit?
def test_training_memory_parts_add_adam_fp32_activations_and_logits():
    cfg = costs.ModelConfig(6, 256, 8, 64, 256)
    parts = costs.training_memory_parts(cfg, 64)
    assert parts["weights+grads+optimizer"] == 16 * costs.param_count(cfg)
    assert parts["activations"] == 2 * costs.activation_bytes(cfg, 64)   # fp32 = 2 x the 16-bit formula
    assert parts["logits"] == 3 * 64 * 256 * 64 * 4
    half = costs.training_memory_parts(cfg, 64, bytes_per_value=2)
    assert half["activations"] == costs.activation_bytes(cfg, 64)
    with pytest.raises(ValueError, match="bytes_per_value"):
        costs.training_memory_parts(cfg, 64, bytes_per_value=3)


def test_gpu_fit_line_reports_the_total_and_refuses_what_does_not_fit():
    line = costs.gpu_fit_line({"a": 1_000_000_000, "b": 500_000_000})
    assert "~1.50 GB" in line and "a 1.00, b 0.50 GB" in line and "16 GB T4 (9% of it)" in line
    # the budget is 75 % of 16 GB = 12 GB: 11.9 GB fits, 12.1 GB does not
    assert "fits" in costs.gpu_fit_line({"x": 11_900_000_000})
    with pytest.raises(ValueError, match="exceeds 12.0 GB"):
        costs.gpu_fit_line({"x": 12_100_000_000})
    with pytest.raises(ValueError, match="non-negative integers"):
        costs.gpu_fit_line({"x": 1.5})
    with pytest.raises(ValueError, match="empty"):
        costs.gpu_fit_line({})
