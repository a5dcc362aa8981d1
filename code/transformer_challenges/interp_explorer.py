"""Attention-map explorer: a trained model's attention patterns on the static site.

Used by the interpretability page (chapters/06-interpretability/looking-inside). The page's
explorer shows one head's attention probabilities on one of a few stored input sequences as a heat
map, with the numbers that summarise the map: the mean attention to the previous token, to the
*induction target* (the token just after the latest earlier occurrence of the current token) and
to BOS, the most-attended distance back, and the most-attended key relative to the induction
target. The maps are precomputed frames (``explorers.Explorer`` with ``frame_keys`` layer, head,
sequence), rounded to a few decimals to keep the page small, and the numbers are computed from the
rounded map itself (:func:`frame_scores`), so the browser test can recompute what the page shows
from what it draws.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from . import interp
from .explorers import Control, Explorer, Output
from .induction import InductionConfig, repeated_sequences

#: The summaries of one map, in the order the page lists them.
SCORES = ("prev", "induction", "bos", "offset", "induction_offset")


def induction_targets(tokens: Sequence[int]) -> list[int | None]:
    """For each query position t, the position just after the latest earlier occurrence of
    ``tokens[t]`` (where an induction head looks), or None when ``tokens[t]`` has not occurred."""
    tokens = [int(t) for t in tokens]
    if not tokens:
        raise ValueError("induction_targets() needs a non-empty token sequence.")
    last: dict[int, int] = {}
    out: list[int | None] = []
    for t, tok in enumerate(tokens):
        out.append(last[tok] + 1 if tok in last else None)
        last[tok] = t
    return out


def _check_map(attn, tokens) -> list[list]:
    rows = [list(r) for r in attn]
    n = len(rows)
    if n < 2 or len(tokens) != n or any(not t + 1 <= len(r) <= n for t, r in enumerate(rows)):
        raise ValueError(f"need a map of at least 2 rows (queries), row t holding keys 0..t (or up to n-1), "
                         f"and one token per row; got {n} rows of lengths {[len(r) for r in rows]} and "
                         f"{len(tokens)} tokens.")
    if any(rows[t][k] is None for t in range(n) for k in range(t + 1)):
        raise ValueError("the map has None on or below the diagonal; only masked (future) keys may be None.")
    return rows


def by_distance(attn: Sequence[Sequence[float | None]]) -> list[float]:
    """Mean attention at each distance d = query - key (0 .. n-1) of one causal map whose rows are
    queries (row t: keys 0..t, or a full row of n with None or 0 above the diagonal), over the
    queries after the first (a query with no key d back counts as 0)."""
    rows = _check_map(attn, [0] * len(attn))
    n = len(rows)
    return [sum(rows[t][t - d] for t in range(max(d, 1), n)) / (n - 1) for d in range(n)]


def by_target_offset(attn: Sequence[Sequence[float | None]], tokens: Sequence[int]) -> dict[int, float]:
    """Mean attention at each key position r tokens after the induction target (r < 0: before it),
    over the queries whose token occurred before; empty when no token repeats."""
    rows = _check_map(attn, tokens)
    n = len(rows)
    pairs = [(t, j) for t, j in enumerate(induction_targets(tokens)) if j is not None]
    if not pairs:
        return {}
    return {r: sum(rows[t][j + r] for t, j in pairs if 0 <= j + r <= t) / len(pairs)
            for r in range(-n + 1, n)}


def map_scores(attn: Sequence[Sequence[float | None]], tokens: Sequence[int]) -> dict[str, float]:
    """The summaries of one causal attention map (rows are queries; row t holds keys 0..t, or all n
    keys with None or 0 above the diagonal) on input ``tokens``, means over the queries after the
    first: attention to the previous token (``prev``), to the induction target (``induction``, over
    the queries whose token occurred before) and to position 0 (``bos``); the most-attended distance back (``offset``, from
    :func:`by_distance`) and the most-attended key relative to the induction target
    (``induction_offset``, from :func:`by_target_offset`). Ties go to the smaller value; the two
    induction entries are NaN when no token repeats."""
    rows = _check_map(attn, tokens)
    dist = by_distance(rows)
    rel = by_target_offset(rows, tokens)
    nan = float("nan")
    return {"prev": dist[1], "induction": rel[0] if rel else nan,
            "bos": sum(r[0] for r in rows[1:]) / (len(rows) - 1),
            "offset": float(max(range(len(dist)), key=lambda d: (dist[d], -d))),
            "induction_offset": float(max(rel, key=lambda r: (rel[r], -r))) if rel else nan}


def frame_scores(frame: Mapping[str, Any]) -> dict[str, float]:
    """:func:`map_scores` of a stored frame of :func:`attention_map` (its ``attn`` and ``ids``): what
    the page shows next to the map it draws."""
    missing = {"attn", "ids"} - set(frame)
    if missing:
        raise ValueError(f"a frame of attention_map() holds 'attn' and 'ids'; {sorted(missing)} missing.")
    return map_scores(frame["attn"], frame["ids"])


def example_sequences(cfg: InductionConfig, period: int = 8) -> dict[str, torch.Tensor]:
    """The stored inputs of the explorer, each a 1-D tensor of ``cfg.n_tokens - 1`` inputs (BOS
    first): the induction task with ``period`` (seed 7: the page's figure), at the shortest and
    longest period, a sequence whose second part is a new order of the symbols (the first copy does
    not repeat), and symbols drawn uniformly (repeats only by chance)."""
    if not cfg.min_period <= period <= cfg.max_period:
        raise ValueError(f"period={period} is outside [{cfg.min_period}, {cfg.max_period}]; pick one in range.")
    n = cfg.n_tokens - 1
    bos = torch.tensor([cfg.bos])
    seqs = {f"period {period} (the figure's sequence)":
            repeated_sequences(cfg, 1, torch.Generator().manual_seed(7), period=period)[0][0, :-1]}
    for k, p in enumerate(dict.fromkeys(q for q in (cfg.min_period, cfg.max_period) if q != period)):
        gen = torch.Generator().manual_seed(20 + k)
        seqs[f"period {p}"] = repeated_sequences(cfg, 1, gen, period=p)[0][0, :-1]
    g = torch.Generator().manual_seed(30)
    first = torch.randperm(cfg.n_symbols, generator=g)[:period]
    rest = torch.randperm(cfg.n_symbols, generator=g)
    rest = rest[rest != first[-1]]                     # no token repeats the one before it
    rest = rest.repeat(n // len(rest) + 1)[: n - 1 - period]
    seqs[f"{period} symbols, then a new order (no copy)"] = torch.cat([bos, first, rest])
    seqs["uniform random symbols (repeats by chance)"] = torch.cat(
        [bos, torch.randint(cfg.n_symbols, (n - 1,), generator=g)])
    return seqs


def _rounded(x: float, digits: int) -> float | int:
    v = round(float(x), digits)
    return 0 if v == 0 else v          # "0" instead of "0.0" in the page's JSON


OUTPUT_LABELS = {"prev": "mean attention to the previous token",
                 "induction": "mean attention to the induction target",
                 "bos": "mean attention to BOS",
                 "offset": "most-attended distance back (query - key)",
                 "induction_offset": "most-attended key, relative to the induction target"}


def attention_map(model: torch.nn.Module, sequences: Mapping[str, torch.Tensor], bos: int,
                  digits: int = 3, layer: int = 0, head: int = 0,
                  source: str = "the trained model") -> Explorer:
    """The "attention-map" explorer: ``model``'s attention probabilities for every layer, head and
    stored sequence (``interp.run_with_cache``), rounded to ``digits`` decimals and keyed
    "layer|head|sequence", with the :func:`frame_scores` of each rounded map as outputs. ``layer``
    and ``head`` are the defaults shown; ``source`` names the model in the explorer's note."""
    if not sequences:
        raise ValueError("attention_map() needs at least one stored sequence, e.g. example_sequences(cfg).")
    if not 1 <= digits <= 6:
        raise ValueError(f"digits={digits}: use 1..6 decimals (3 keeps a 24-token map near 2 kB).")
    seq_len = model.cfg.seq_len
    frames: dict[str, dict[str, Any]] = {}
    n_layers = n_heads = 0
    for s, (name, x) in enumerate(sequences.items()):
        x = torch.as_tensor(x)
        if x.dim() != 1 or not 2 <= len(x) <= seq_len:
            raise ValueError(f"sequence {name!r}: need a 1-D tensor of 2..{seq_len} token ids, got shape "
                             f"{tuple(x.shape)}.")
        ids = [int(t) for t in x]
        if all(j is None for j in induction_targets(ids)):
            raise ValueError(f"sequence {name!r} repeats no token, so it has no induction target; "
                             "store sequences in which some token occurs twice.")
        labels = [f"{i}: " + ("BOS" if t == bos else str(t)) for i, t in enumerate(ids)]
        with torch.no_grad():
            _, cache = interp.run_with_cache(model, x[None])
        n_layers = len([k for k in cache if k.startswith("attn.")])
        for l in range(n_layers):
            a = cache[f"attn.{l}"][0].double()
            n_heads = a.shape[0]
            for h in range(n_heads):
                # row t holds keys 0..t only: Plotly leaves the missing (future) cells blank
                attn = [[_rounded(a[h, t, k], digits) for k in range(t + 1)] for t in range(len(ids))]
                frame = {"tokens": labels, "ids": ids, "attn": attn, "one": [0]}
                # not rounded: the page shows exactly frame_scores(frame) of the map it draws
                frame.update({k: [v] for k, v in frame_scores(frame).items()})
                frames[f"{l}|{h}|{s}"] = frame
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"default layer={layer}, head={head} is outside the model's {n_layers} layers "
                         f"and {n_heads} heads.")
    controls = [
        Control("layer", "layer", layer, kind="choice", options={str(l): l for l in range(n_layers)}),
        Control("head", "head", head, kind="choice", options={str(h): h for h in range(n_heads)}),
        Control("seq", "input sequence", 0, kind="choice", options={name: i for i, name in enumerate(sequences)}),
    ]
    # A number per map is a one-point series: the grid "one" has a single point, so looking it up
    # at any control's value returns that number.
    outputs = [Output(k, OUTPUT_LABELS[k], frame=k, at="layer", along="one", fmt="fixed",
                      digits=0 if k.endswith("offset") else digits) for k in SCORES]
    plot = {"type": "heatmap", "z": "attn", "x": "tokens", "y": "tokens", "zmin": 0, "zmax": 1,
            "xlabel": "key (position: token)", "ylabel": "query (position: token)", "colorscale": "Viridis"}
    return Explorer("attention-map", "Attention patterns by layer, head and input", controls, outputs,
                    plots=[plot], frames=frames, frame_keys=("layer", "head", "seq"),
                    note=f"Attention probabilities of {source} (interp.run_with_cache), rounded to {digits} "
                         "decimals; blank cells are future keys. The induction target of a query is the key "
                         "just after the latest earlier occurrence of the query's token. The numbers are "
                         "means over the queries after the first (for the induction target: those whose token "
                         "occurred before), computed from the rounded map (interp_explorer.frame_scores).")


__all__ = ["SCORES", "OUTPUT_LABELS", "induction_targets", "by_distance", "by_target_offset", "map_scores",
           "frame_scores", "example_sequences", "attention_map"]
