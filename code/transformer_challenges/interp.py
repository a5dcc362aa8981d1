"""Looking inside a TinyGPT: capture and patch activations, sensitivity curves, linear probes.

Used by the interpretability chapter (``ch-interpretability``). The mechanism is plain PyTorch
forward hooks on the modules of ``model.TinyGPT``; nothing is copied from an interpretability
framework. Names of the hook points:

- ``resid.i``: the residual stream *entering* block ``i`` (``resid.0`` is the embedding);
  ``resid.L`` (``L`` = number of layers) is the output of the last block, before the final LN.
- ``heads.l``: the per-head outputs of block ``l``'s attention, the input of ``attn.proj``,
  reshaped to ``(B, n, h, head_dim)`` (the heads sit side by side in that input).
- ``attn.l``: block ``l``'s attention probabilities ``(B, h, n, n)``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .model import TinyGPT

Metric = Callable[[torch.Tensor], torch.Tensor]
ABLATIONS = ("zero", "mean")
SENSITIVITY_MODES = ("mask", "replace", "noise")


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, TinyGPT):
        raise ValueError(f"expected a model.TinyGPT, got {type(model).__name__}; the hooks use its "
                         "blocks[i].attn.proj modules.")


def _check_resid(model: TinyGPT, index: int) -> None:
    n = len(model.blocks)
    if not isinstance(index, int) or not 0 <= index <= n:
        raise ValueError(f"residual index {index!r} is out of range; use 0 (embedding) to {n} "
                         f"(after the last of {n} blocks).")


def _check_head(model: TinyGPT, layer: int, head: int) -> None:
    n_layers, n_heads = len(model.blocks), model.cfg.n_heads
    if not (isinstance(layer, int) and 0 <= layer < n_layers and isinstance(head, int)
            and 0 <= head < n_heads):
        raise ValueError(f"head (layer={layer!r}, head={head!r}) does not exist; layers are 0.."
                         f"{n_layers - 1}, heads 0..{n_heads - 1}.")


@contextmanager
def hooked(model: TinyGPT, resid: Mapping[int, Callable] | None = None,
           heads: Mapping[int, Callable] | None = None, store_attention: bool = False) -> Iterator[None]:
    """Temporarily attach hooks: ``resid[i](x) -> x`` edits ``resid.i``; ``heads[l](z) -> z`` edits
    the per-head tensor ``(B, n, h, head_dim)`` of layer ``l``; ``store_attention`` keeps weights."""
    _check_model(model)
    handles = []
    n_layers = len(model.blocks)
    for i, fn in (resid or {}).items():
        _check_resid(model, i)
        if i < n_layers:  # the input of block i
            handles.append(model.blocks[i].register_forward_pre_hook(
                lambda mod, args, fn=fn: (fn(args[0]),) + tuple(args[1:])))
        else:  # the output of the last block
            handles.append(model.blocks[i - 1].register_forward_hook(lambda mod, args, out, fn=fn: fn(out)))
    for layer, fn in (heads or {}).items():
        _check_head(model, layer, 0)
        h, hd = model.cfg.n_heads, model.blocks[layer].attn.head_dim

        def pre(mod, args, fn=fn, h=h, hd=hd):
            z = args[0]
            b, n, _ = z.shape
            return (fn(z.reshape(b, n, h, hd)).reshape(b, n, h * hd),)
        handles.append(model.blocks[layer].attn.proj.register_forward_pre_hook(pre))
    old = [b.attn.store_weights for b in model.blocks]
    if store_attention:
        for b in model.blocks:
            b.attn.store_weights = True
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for b, flag in zip(model.blocks, old):
            b.attn.store_weights = flag


@torch.no_grad()
def run_with_cache(model: TinyGPT, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``idx``; return the logits and a dict of every hook point (see module doc)."""
    _check_model(model)
    cache: dict[str, torch.Tensor] = {}
    n_layers = len(model.blocks)

    def keep_resid(i):
        def fn(x):
            cache[f"resid.{i}"] = x.detach().clone()
            return x
        return fn

    def keep_heads(layer):
        def fn(z):
            cache[f"heads.{layer}"] = z.detach().clone()
            return z
        return fn

    with hooked(model, resid={i: keep_resid(i) for i in range(n_layers + 1)},
                heads={l: keep_heads(l) for l in range(n_layers)}, store_attention=True):
        logits, _ = model(idx)
        for l, block in enumerate(model.blocks):
            cache[f"attn.{l}"] = block.attn.last_weights.clone()
    return logits, cache


def _positions(positions, n: int):
    if positions is None:
        return slice(None)
    pos = list(positions) if isinstance(positions, (list, tuple, range)) else [positions]
    bad = [p for p in pos if not isinstance(p, int) or not -n <= p < n]
    if bad:
        raise ValueError(f"positions {bad} are outside a sequence of length {n}; use 0..{n - 1}.")
    return pos


@torch.no_grad()
def run_with_patches(model: TinyGPT, idx: torch.Tensor,
                     resid: Mapping[tuple[int, object], torch.Tensor] | None = None,
                     heads: Mapping[tuple[int, int, object], torch.Tensor] | None = None) -> torch.Tensor:
    """Run ``model`` on ``idx`` with activations overwritten; return the logits.

    ``resid[(i, positions)] = value`` writes ``value[:, positions]`` into ``resid.i``;
    ``heads[(layer, head, positions)] = value`` writes ``value[:, positions]`` (shape
    ``(B, n, head_dim)``) into that head's output. ``positions`` is an int, a tuple or range of
    ints, or None (all); it is part of a dictionary key, so a list must be passed as a tuple.
    """
    _check_model(model)
    n = idx.shape[1]
    resid_fns: dict[int, list] = {}
    for (i, positions), value in (resid or {}).items():
        _check_resid(model, i)
        resid_fns.setdefault(i, []).append((_positions(positions, n), value))
    head_fns: dict[int, list] = {}
    for (layer, head, positions), value in (heads or {}).items():
        _check_head(model, layer, head)
        head_fns.setdefault(layer, []).append((head, _positions(positions, n), value))

    def make_resid(edits):
        def fn(x):
            x = x.clone()
            for pos, value in edits:
                x[:, pos] = value.to(x.dtype)[:, pos] if value.dim() == 3 else value.to(x.dtype)
            return x
        return fn

    def make_heads(edits):
        def fn(z):
            z = z.clone()
            for head, pos, value in edits:
                z[:, pos, head] = value.to(z.dtype)[:, pos] if value.dim() == 3 else value.to(z.dtype)
            return z
        return fn

    with hooked(model, resid={i: make_resid(e) for i, e in resid_fns.items()},
                heads={l: make_heads(e) for l, e in head_fns.items()}):
        return model(idx)[0]


@torch.no_grad()
def ablate_heads(model: TinyGPT, idx: torch.Tensor, heads: Sequence[tuple[int, int]],
                 mode: str = "zero", reference: torch.Tensor | None = None) -> torch.Tensor:
    """Logits with the listed ``(layer, head)`` outputs replaced by zero or by their mean.

    ``mode="mean"`` uses the per-position mean of each head's output over the batch ``reference``
    (default: ``idx`` itself), the usual "mean ablation".
    """
    if mode not in ABLATIONS:
        raise ValueError(f"mode={mode!r} is not an ablation; use one of {ABLATIONS}.")
    _check_model(model)
    cache = None
    if mode == "mean":
        _, cache = run_with_cache(model, idx if reference is None else reference)
    patches = {}
    for layer, head in heads:
        _check_head(model, layer, head)
        if mode == "zero":
            value = torch.zeros(1, idx.shape[1], model.blocks[layer].attn.head_dim)
        else:
            value = cache[f"heads.{layer}"][:, :idx.shape[1], head].mean(0, keepdim=True)
        patches[(layer, head, None)] = value.to(idx.device)
    return run_with_patches(model, idx, heads=patches)


def logit_margin(logits: torch.Tensor, position: int, answer: torch.Tensor,
                 candidates: Sequence[int] | None = None) -> torch.Tensor:
    """Per-example logit difference between ``answer`` and the mean logit of ``candidates``
    (default: every token) at ``position``; shape (B,)."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, seq, vocab), got shape {tuple(logits.shape)}.")
    row = logits[:, position]
    pool = row if candidates is None else row[:, list(candidates)]
    return row.gather(1, answer.view(-1, 1)).squeeze(1) - pool.mean(dim=1)


def fraction_recovered(patched: float, clean: float, corrupt: float) -> float:
    """(patched - corrupt) / (clean - corrupt): 0 = as corrupted, 1 = fully restored."""
    if abs(clean - corrupt) < 1e-8:
        raise ValueError(f"clean ({clean}) and corrupted ({corrupt}) metrics are equal; the "
                         "corruption does not change the behaviour, choose a stronger one.")
    return (patched - corrupt) / (clean - corrupt)


@torch.no_grad()
def resid_patching_scan(model: TinyGPT, clean: torch.Tensor, corrupt: torch.Tensor,
                        metric: Metric) -> torch.Tensor:
    """Fraction recovered when ``resid.i`` at one position is copied from the clean run into the
    corrupted run, for every (i, position): a ``(n_layers + 1, n)`` tensor."""
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} inputs "
                         "must have the same shape; patching needs aligned positions.")
    clean_logits, cache = run_with_cache(model, clean)
    m_clean, m_corrupt = float(metric(clean_logits)), float(metric(model(corrupt)[0]))
    n_resid, n = len(model.blocks) + 1, clean.shape[1]
    out = torch.zeros(n_resid, n)
    for i in range(n_resid):
        for p in range(n):
            patched = run_with_patches(model, corrupt, resid={(i, p): cache[f"resid.{i}"]})
            out[i, p] = fraction_recovered(float(metric(patched)), m_clean, m_corrupt)
    return out


@torch.no_grad()
def head_patching_scan(model: TinyGPT, clean: torch.Tensor, corrupt: torch.Tensor,
                       metric: Metric, positions=None) -> torch.Tensor:
    """Fraction recovered when one head's output (at ``positions``, default all) is copied from the
    clean run into the corrupted run: a ``(n_layers, n_heads)`` tensor."""
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} inputs "
                         "must have the same shape; patching needs aligned positions.")
    if isinstance(positions, list):  # a dictionary key below: lists are not hashable
        positions = tuple(positions)
    clean_logits, cache = run_with_cache(model, clean)
    m_clean, m_corrupt = float(metric(clean_logits)), float(metric(model(corrupt)[0]))
    out = torch.zeros(len(model.blocks), model.cfg.n_heads)
    for layer in range(len(model.blocks)):
        for head in range(model.cfg.n_heads):
            value = cache[f"heads.{layer}"][:, :, head]
            patched = run_with_patches(model, corrupt, heads={(layer, head, positions): value})
            out[layer, head] = fraction_recovered(float(metric(patched)), m_clean, m_corrupt)
    return out


@torch.no_grad()
def token_sensitivity(model: TinyGPT, idx: torch.Tensor, metric: Metric, mode: str = "mask",
                      mask_token: int | None = None, noise_scale: float = 1.0, n_draws: int = 4,
                      generator: torch.Generator | None = None,
                      vocab: Sequence[int] | None = None) -> torch.Tensor:
    """Change of ``metric`` (original minus perturbed) when each input position is perturbed.

    ``mode="mask"`` puts ``mask_token`` at the position; ``"replace"`` puts a random token from
    ``vocab`` (mean over ``n_draws`` draws); ``"noise"`` adds Gaussian noise of ``noise_scale``
    times the embedding's RMS to ``resid.0`` at that position. Returns a ``(n,)`` tensor.
    """
    if mode not in SENSITIVITY_MODES:
        raise ValueError(f"mode={mode!r} is unknown; use one of {SENSITIVITY_MODES}.")
    if mode == "mask" and mask_token is None:
        raise ValueError("mode='mask' needs mask_token (e.g. the id of a space or a BOS token).")
    if n_draws <= 0:
        raise ValueError(f"n_draws must be positive, got {n_draws}.")
    _check_model(model)
    base = float(metric(model(idx)[0]))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    pool = torch.as_tensor(list(vocab) if vocab is not None else range(model.cfg.vocab_size))
    n = idx.shape[1]
    out = torch.zeros(n)
    for p in range(n):
        if mode == "mask":
            x = idx.clone()
            x[:, p] = mask_token
            out[p] = base - float(metric(model(x)[0]))
            continue
        values = []
        for _ in range(n_draws):
            if mode == "replace":
                x = idx.clone()
                x[:, p] = pool[torch.randint(len(pool), (idx.shape[0],), generator=gen)].to(idx.device)
                values.append(float(metric(model(x)[0])))
            else:
                emb = model.embed(idx)
                rms = emb[:, p].pow(2).mean().sqrt()
                noise = torch.randn(emb[:, p].shape, generator=gen).to(emb.device) * noise_scale * rms
                patched = emb.clone()
                patched[:, p] += noise
                values.append(float(metric(run_with_patches(model, idx, resid={(0, p): patched}))))
        out[p] = base - sum(values) / len(values)
    return out


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                   test_y: torch.Tensor, max_iter: int = 500, C: float = 1.0) -> float:
    """Held-out accuracy of a logistic-regression probe (scikit-learn, standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if train_x.dim() != 2 or test_x.dim() != 2:
        raise ValueError(f"features must be 2-D (samples, dim), got {tuple(train_x.shape)} and "
                         f"{tuple(test_x.shape)}; flatten batch and positions first.")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(f"features and labels differ in length: {len(train_x)} vs {len(train_y)}, "
                         f"{len(test_x)} vs {len(test_y)}.")
    if len(torch.unique(train_y)) < 2:
        raise ValueError("the training labels hold a single class; a probe needs at least two.")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    clf.fit(train_x.double().cpu().numpy(), train_y.cpu().numpy())
    return float(clf.score(test_x.double().cpu().numpy(), test_y.cpu().numpy()))


def probe_layers(train_cache: Mapping[str, torch.Tensor], test_cache: Mapping[str, torch.Tensor],
                 train_labels: torch.Tensor, test_labels: torch.Tensor,
                 keep_train: torch.Tensor | None = None, keep_test: torch.Tensor | None = None,
                 **kwargs) -> list[float]:
    """Probe accuracy on every ``resid.i`` of two caches; labels are ``(B, n)`` like the tokens.

    ``keep_*`` are optional boolean ``(B, n)`` masks of the positions to use.
    """
    n_resid = sum(1 for k in train_cache if k.startswith("resid."))
    if n_resid == 0:
        raise ValueError("the cache has no resid.* entries; build it with run_with_cache.")
    keep_train = torch.ones_like(train_labels, dtype=torch.bool) if keep_train is None else keep_train
    keep_test = torch.ones_like(test_labels, dtype=torch.bool) if keep_test is None else keep_test
    accs = []
    for i in range(n_resid):
        xtr, xte = train_cache[f"resid.{i}"], test_cache[f"resid.{i}"]
        accs.append(probe_accuracy(xtr[keep_train], train_labels[keep_train],
                                   xte[keep_test], test_labels[keep_test], **kwargs))
    return accs


def prev_token_scores(attn: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position t >= 1 to t - 1, per head: ``(B, h, n, n) -> (h,)``."""
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be (batch, heads, n, n), got {tuple(attn.shape)}.")
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
