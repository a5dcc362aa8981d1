"""Tests for transformer_challenges.memory: saved-tensor byte counts against costs' formulas."""
import pytest
import torch
import torch.nn.functional as F

from transformer_challenges import costs, memory


def _measure(b, s, h, a, **kw):
    torch.manual_seed(0)
    layer = memory.ReferenceLayer(h, a, **kw).to(torch.bfloat16)
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    return memory.layer_saved_bytes(layer, x)


@pytest.mark.parametrize("b, s, h, a", [(2, 32, 64, 4), (1, 64, 32, 2), (3, 16, 48, 6)])
def test_reference_layer_matches_korthikanti(b, s, h, a):
    # Korthikanti et al. 2022, Sec. 4.1: s*b*h*(34 + 5as/h) bytes per layer; the measurement adds
    # LayerNorm mean/rstd (2 LNs x 2 stats x sb values x 2 bytes in bf16) and the bool causal mask.
    rep = _measure(b, s, h, a, dropout=0.1)
    pred = costs.activation_bytes(costs.ModelConfig(1, h, a, 10, s), b)
    assert rep.total == pred + 8 * s * b + s * s
    assert rep.by_dtype()["bool"] == a * s * s * b + 2 * s * b * h + s * s  # three dropout masks + causal


def test_no_dropout_and_sdpa():
    b, s, h, a = 2, 32, 64, 4
    sbh = s * b * h
    naive = _measure(b, s, h, a, dropout=0.0).total
    cfg = costs.ModelConfig(1, h, a, 10, s)
    no_drop = sum(t.bytes for t in costs.activation_terms(cfg, b, dropout=False))
    assert naive == no_drop + 8 * s * b + s * s
    fused = _measure(b, s, h, a, dropout=0.0, attention="sdpa")
    assert fused.total == 32 * sbh + 4 * a * s * b + 8 * s * b  # log-sum-exp, no s^2 term
    assert fused.by_dtype()["float32"] == 4 * a * s * b
    assert not any(t.shape[-2:] == (s, s) for t in fused.tensors)


def test_checkpoint_keeps_only_the_input():
    b, s, h, a = 2, 16, 32, 2
    rep = _measure(b, s, h, a, dropout=0.1)
    torch.manual_seed(0)
    layer = memory.ReferenceLayer(h, a).to(torch.bfloat16)
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    ck = memory.layer_saved_bytes(layer, x, checkpoint=True)
    assert ck.total == 2 * s * b * h == costs.activation_bytes(costs.ModelConfig(1, h, a, 10, s), b, recompute="full")
    assert ck.total < rep.total


def test_views_counted_once_and_params_excluded():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    # x @ w saves x and w; x * x saves x twice (same storage) -> counted once
    rep = memory.saved_tensor_bytes(lambda: (x @ w) + x * x, exclude=(w,))
    assert rep.total == x.numel() * 4
    rep_all = memory.saved_tensor_bytes(lambda: (x @ w) + x * x)
    assert rep_all.total == (x.numel() + w.numel()) * 4
    v = x.view(2, 16)
    assert memory.saved_tensor_bytes(lambda: (v * v).sum() + (x * x).sum()).total == x.numel() * 4


def test_dropout_mask_bytes_on_cpu():
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    assert memory.saved_tensor_bytes(lambda: torch.native_dropout(x, 0.1, True)[0]).total == x.numel()
    assert memory.saved_tensor_bytes(lambda: F.dropout(x, 0.1, True)).total == 2 * x.numel()


def test_layer_gradients_match_between_attention_kinds():
    torch.manual_seed(0)
    naive = memory.ReferenceLayer(32, 4, dropout=0.0, attention="naive")
    fused = memory.ReferenceLayer(32, 4, dropout=0.0, attention="sdpa")
    fused.load_state_dict(naive.state_dict())
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(naive(x), fused(x), atol=1e-5, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="n_heads"):
        memory.ReferenceLayer(30, 4)
    with pytest.raises(ValueError, match="attention"):
        memory.ReferenceLayer(32, 4, attention="flash")
    with pytest.raises(ValueError, match="dropout"):
        memory.ReferenceLayer(32, 4, dropout=1.0)
    with pytest.raises(ValueError, match="expected input"):
        memory.ReferenceLayer(32, 4)(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="callable"):
        memory.saved_tensor_bytes(torch.randn(3))


def test_every_tensor_mode_counts_views_and_repeats():
    """distinct_storages=False counts each saved tensor at its own size, every time it is saved."""
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    # x @ w saves x and w; x * x saves x twice: 3 x-sized entries + w, w excluded -> 3 entries
    rep = memory.saved_tensor_bytes(lambda: (x @ w) + x * x, exclude=(w,), distinct_storages=False)
    assert rep.total == 3 * x.numel() * 4 and len(rep.tensors) == 3
    rep_all = memory.saved_tensor_bytes(lambda: (x @ w) + x * x, distinct_storages=False)
    assert rep_all.total == (3 * x.numel() + w.numel()) * 4
    # a view is counted at its own size, not at its storage's size
    big = torch.randn(16, 8, requires_grad=True)
    half = big[:8]
    assert memory.saved_tensor_bytes(lambda: half * half, distinct_storages=False).total == 2 * half.numel() * 4
    assert memory.saved_tensor_bytes(lambda: half * half).total == big.numel() * 4
    with pytest.raises(ValueError, match="distinct_storages"):
        memory.saved_tensor_bytes(lambda: x * x, distinct_storages="yes")


def test_wrappers_are_the_one_counter():
    """attention.saved_activation_bytes and ssm.saved_tensor_bytes agree with memory.saved_tensor_bytes."""
    from transformer_challenges import attention as A, ssm
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    direct = memory.saved_tensor_bytes(lambda: A.naive_attention(*leaves), exclude=tuple(leaves)).total
    assert A.saved_activation_bytes(A.naive_attention, q, k, v) == direct == 2 * 32 * 32 * 4
    every = memory.saved_tensor_bytes(lambda: A.naive_attention(*leaves), distinct_storages=False).total
    assert ssm.saved_tensor_bytes(A.naive_attention, *leaves) == every > direct


def test_counting_does_not_keep_the_forward_graph_alive():
    """A pack hook that returns the live tensor ties a saved output to its own grad_fn: a reference
    cycle that even gc.collect() cannot free when no backward pass follows (the counter's case)."""
    import gc
    import weakref

    x = torch.randn(16, 16, requires_grad=True)
    outputs = []

    def fn():
        y = torch.softmax(x @ x, dim=-1)          # softmax saves its own output
        outputs.append(weakref.ref(y))
        return y.sum()

    for distinct in (True, False):
        outputs.clear()
        memory.saved_tensor_bytes(fn, distinct_storages=distinct)
        gc.collect()
        assert outputs[0]() is None, "the counted forward pass is still alive after counting"
