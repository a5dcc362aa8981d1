"""tc.device / tc.scale / tc.pick / tc.seed_everything / tc.progress."""
import random

import numpy as np
import pytest
import torch

import transformer_challenges as tc


def test_device_matches_cuda_availability():
    assert tc.device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("value, expected", [("fast", "fast"), ("full", "full"), (" FULL ", "full")])
def test_scale_reads_env(monkeypatch, value, expected):
    monkeypatch.setenv("TC_SCALE", value)
    assert tc.scale() == expected


def test_scale_default_depends_on_device(monkeypatch):
    monkeypatch.delenv("TC_SCALE", raising=False)
    assert tc.scale() == ("full" if torch.cuda.is_available() else "fast")


def test_scale_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("TC_SCALE", "huge")
    with pytest.raises(ValueError, match=r"TC_SCALE='huge'.*one of \('fast', 'full'\)"):
        tc.scale()


def test_pick_uses_scale(monkeypatch):
    sizes = {"fast": 1, "full": 2}
    monkeypatch.setenv("TC_SCALE", "full")
    assert tc.pick(sizes) == 2
    assert tc.pick(sizes, "fast") == 1
    with pytest.raises(ValueError, match="no entry for"):
        tc.pick({"fast": 1})
    with pytest.raises(ValueError, match="unknown"):
        tc.pick(sizes, "medium")


def test_seed_everything_makes_runs_repeatable():
    def draw():
        tc.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(3)

    a, b = draw(), draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    g1, g2 = tc.seed_everything(5), tc.seed_everything(5)
    assert torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))
    tc.seed_everything(6)
    assert not torch.equal(torch.rand(3), b[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        tc.seed_everything(bad)


def test_progress_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TC_PROGRESS", "0")
    bar = tc.progress(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]


def test_describe_names_device_and_scale(monkeypatch):
    monkeypatch.setenv("TC_SCALE", "fast")
    line = tc.describe()
    assert line.startswith(f"device={tc.device().type}") and "scale=fast" in line


def test_perturbation_knob_is_parsed(monkeypatch):
    from transformer_challenges.runtime import perturbation
    for raw, expected in [("", None), ("0", None), ("1", 1), (" 7 ", 7)]:
        monkeypatch.setenv("TC_PERTURB", raw)
        assert perturbation() == expected
    monkeypatch.setenv("TC_PERTURB", "yes")
    with pytest.raises(ValueError, match="TC_PERTURB='yes'.*TC_PERTURB=1"):
        perturbation()


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e-6), (torch.float64, 2e-15)])
def test_perturb_is_a_few_ulps_and_leaves_the_global_rng_alone(dtype, scale):
    from transformer_challenges.runtime import perturb_
    torch.manual_seed(0)
    params = [torch.randn(1000, dtype=dtype), torch.arange(5)]
    before = [p.clone() for p in params]
    state = torch.get_rng_state()
    assert perturb_(params, torch.Generator().manual_seed(1)) == 1   # integer tensors untouched
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(params[1], before[1])
    rel = ((params[0] - before[0]) / before[0]).abs()
    assert rel.max() > 0.1 * scale and rel.median() < 5 * scale


def _train_once(seed_noise: str | None, monkeypatch) -> torch.Tensor:
    import transformer_challenges.runtime as rt
    if seed_noise is None:
        monkeypatch.delenv("TC_PERTURB", raising=False)
    else:
        monkeypatch.setenv("TC_PERTURB", seed_noise)
    rt.install_perturbation()
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)   # lr 0: only the perturbation moves weights
    layer(torch.randn(4, 8)).sum().backward()
    opt.step()
    return layer.weight.detach().clone()


def test_optimisers_perturb_their_parameters_once_when_the_knob_is_set(monkeypatch):
    plain = _train_once(None, monkeypatch)
    one, one_again, two = (_train_once(k, monkeypatch) for k in ("1", "1", "2"))
    assert torch.equal(plain, _train_once(None, monkeypatch))
    assert not torch.equal(one, plain) and torch.allclose(one, plain, rtol=1e-5, atol=0)
    assert not torch.equal(one, two)
    # the noise stream runs on (a second model is not perturbed like the first) ...
    assert not torch.equal(one, one_again)


def test_smoke_overrides_the_full_sizes_only_when_asked(monkeypatch):
    sizes = {"fast": {"steps": 10, "d": 8}, "full": {"steps": 1000, "d": 256}, "smoke": {"steps": 3}}
    monkeypatch.setenv("TC_SCALE", "full")
    monkeypatch.delenv("TC_SMOKE", raising=False)
    assert tc.pick(sizes) == {"steps": 1000, "d": 256}
    monkeypatch.setenv("TC_SMOKE", "1")
    assert tc.smoke() and tc.pick(sizes) == {"steps": 3, "d": 256}   # shapes stay full
    assert "smoke" in tc.describe()
    assert tc.pick(sizes, "fast") == {"steps": 10, "d": 8}           # fast mode ignores it
    with pytest.raises(ValueError, match="does not have"):
        tc.pick({**sizes, "smoke": {"stpes": 3}})
    with pytest.raises(ValueError, match="unknown entries"):
        tc.pick({**sizes, "medium": {}})
    monkeypatch.setenv("TC_SMOKE", "yes")
    with pytest.raises(ValueError, match="TC_SMOKE"):
        tc.smoke()
