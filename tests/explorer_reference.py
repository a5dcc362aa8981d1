"""What each static-site explorer must show, computed by the library's functions themselves.

tests/test_site.py sets random inputs on every explorer of the built site and compares what the
page displays with ``REFERENCES[explorer_id].values(inputs)``. The explorers' own expressions
(transformer_challenges.explorers) are generated from the same functions; computing the reference
here from the functions, not from those expressions, is what makes the test able to fail.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch

from transformer_challenges import attncost, costs, explorers as ex, interp_explorer, kvcache, positional, scaling

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Reference:
    draw: Callable[[random.Random], dict]      # random inputs a reader could set
    values: Callable[[dict], dict]             # output name -> the library's value


def _training_draw(rng: random.Random) -> dict:
    a = rng.choice([8, 16, 32, 64, 96, 128])   # divisible by every tensor-parallel size offered
    return dict(n_layers=rng.randint(1, 160), d_model=a * rng.choice([64, 80, 128]), n_heads=a,
                vocab=rng.randint(1000, 260000), seq_len=16 * rng.randint(8, 2048),
                batch=rng.randint(1, 64), tp=rng.choice([1, 2, 4, 8]), sp=rng.randint(0, 1),
                recompute=rng.randint(0, 2), bytes_per_param=rng.randint(2, 20),
                n_gpus=rng.randint(1, 20000), peak=rng.choice(list(ex.PEAK_FLOPS.values())),
                utilization=rng.randint(5, 100) / 100, tokens_B=rng.randint(1, 20000))


def _training_values(v: dict) -> dict:
    cfg = costs.ModelConfig(v["n_layers"], v["d_model"], v["n_heads"], v["vocab"], v["seq_len"])
    n = costs.param_count(cfg)
    mode = costs.RECOMPUTE_MODES[v["recompute"]]
    act = costs.activation_bytes(cfg, v["batch"], recompute=mode, tensor_parallel=v["tp"],
                                 sequence_parallel=bool(v["sp"]))
    state = costs.parameter_bytes(n, v["bytes_per_param"]) / v["tp"]
    tokens = v["tokens_B"] * 10**9
    return dict(params=n, state=state, activations=act, total=state + act,
                flops=costs.training_flops(n, tokens, recompute=mode == "full"),
                days=costs.training_time_seconds(n, tokens, v["n_gpus"], v["peak"], v["utilization"],
                                                 recompute=mode == "full"))


def _kv_draw(rng: random.Random) -> dict:
    return dict(n_layers=rng.randint(1, 128), n_kv_heads=rng.randint(1, 64), head_dim=8 * rng.randint(1, 32),
                bits=rng.choice([16, 8, 4]), batch=rng.randint(1, 256), context=rng.randint(1, 200000),
                weights_GB=rng.randint(0, 150) / 10, gpu_GB=rng.choice([16, 24, 40, 80, 141]))


def _kv_values(v: dict) -> dict:
    bpv = 2 if v["bits"] == 16 else kvcache.quantized_bytes_per_value(v["bits"], v["head_dim"])
    per_token = kvcache.kv_bytes_per_token(v["n_layers"], v["n_kv_heads"], v["head_dim"], bpv)
    per_request = per_token * v["context"]
    free = (v["gpu_GB"] - v["weights_GB"]) * 1e9
    return dict(per_token=per_token, per_request=per_request, total=per_request * v["batch"],
                fit=max(math.floor(free / per_request), 0))


def _optimal_draw(rng: random.Random) -> dict:
    return dict(log10_C=rng.randint(1800, 2700) / 100, law=rng.randrange(len(scaling.LAWS)))


def _optimal_values(v: dict) -> dict:
    law = list(scaling.LAWS.values())[v["law"]]
    n, d = scaling.compute_optimal(law, 10 ** v["log10_C"])
    return dict(N_opt=n, D_opt=d, ratio=d / n, loss=law.loss(n, d))


def _rope_draw(rng: random.Random) -> dict:
    top = rng.choice(ex.ROPE_RANGES)
    return dict(d=rng.choice(ex.ROPE_D), base=rng.choice(ex.ROPE_BASES), max_distance=top,
                m=rng.randint(0, top))


def _rope_values(v: dict) -> dict:
    grid = torch.linspace(0, v["max_distance"], ex.ROPE_POINTS, dtype=torch.float64).round()
    i = int((grid - v["m"]).abs().argmin())
    curve = positional.rope_decay_curve(v["d"], v["max_distance"], float(v["base"]))
    return dict(bound_m=float(curve[int(grid[i])]))   # the random-vector score is a sample: not recomputed


def _alibi_draw(rng: random.Random) -> dict:
    n = rng.randint(1, ex.ALIBI_MAX_HEADS)
    return dict(n_heads=n, head=rng.randint(1, n))


def _alibi_values(v: dict) -> dict:
    return dict(slope_h=float(positional.alibi_slopes(v["n_heads"])[v["head"] - 1]))


def _cost_draw(rng: random.Random) -> dict:
    return dict(n=rng.randint(1, 2**20), d=rng.choice([16, 32, 64, 128, 256]), window=rng.randint(1, 1024),
                block=rng.choice([16, 32, 64, 128]), rank=rng.randint(1, 1024),
                features=rng.randint(1, 1024), heads=rng.randint(1, 64))


def _cost_values(v: dict) -> dict:
    params = dict(window=v["window"], block_size=v["block"], rank=v["rank"], features=v["features"])
    out = {}
    for variant in attncost.VARIANTS:
        out[f"flops_{variant}"] = attncost.attention_flops(variant, v["n"], v["d"], heads=v["heads"], **params)
        out[f"bytes_{variant}"] = attncost.attention_bytes(variant, v["n"], v["d"], heads=v["heads"], **params)
        if variant != "exact":
            out[f"cross_{variant}"] = float(attncost.crossover_n(variant, v["d"], **params))
    return out


def _stored_attention_maps() -> dict:
    """The attention-map explorer's frames as stored on the looking-inside page (a trained model's
    maps: recomputing them means retraining; the test checks the page's lookup and display)."""
    import json
    import re

    nb = json.loads((ROOT / "chapters/06-interpretability/looking-inside.ipynb").read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            html = "".join(output.get("data", {}).get("text/html", ""))
            if 'data-explorer="attention-map"' in html:
                payload = re.search(r'class="tc-explorer-spec">(.*?)</script>', html, re.S)[1]
                return json.loads(payload.replace("<\\/", "</"))["frames"]
    raise LookupError("no attention-map explorer stored on the looking-inside page")


def _map_draw(rng: random.Random) -> dict:
    return dict(layer=rng.randint(0, 1), head=rng.randint(0, 1), seq=rng.randint(0, 4))


def _map_values(v: dict) -> dict:
    frame = _stored_attention_maps()[f"{v['layer']}|{v['head']}|{v['seq']}"]
    return interp_explorer.frame_scores(frame)


REFERENCES: dict[str, Reference] = {
    "attention-cost": Reference(_cost_draw, _cost_values),
    "attention-map": Reference(_map_draw, _map_values),
    "training-memory": Reference(_training_draw, _training_values),
    "kv-cache": Reference(_kv_draw, _kv_values),
    "compute-optimal": Reference(_optimal_draw, _optimal_values),
    "rope-decay": Reference(_rope_draw, _rope_values),
    "alibi": Reference(_alibi_draw, _alibi_values),
}


def parse_display(text: str, fmt: str, digits: int) -> tuple[float, float]:
    """(value, half a unit of the last displayed digit) of a value the page displays."""
    t = text.strip().replace(",", "")
    if fmt == "bytes":
        return float(t.removesuffix(" GB")) * 1e9, 0.5 * 10**-digits * 1e9
    if fmt == "days":
        return float(t.removesuffix(" days")) * 86400, 0.5 * 10**-digits * 86400
    if fmt == "percent":
        return float(t.removesuffix("%")) / 100, 0.5 * 10**-digits / 100
    if fmt == "count":
        return float(t), 0.5
    if fmt == "sci":
        mant, exp = t.split("e")
        return float(mant) * 10 ** int(exp), 0.5 * 10 ** (int(exp) - digits)
    return float(t), 0.5 * 10**-digits


def agrees(shown: str, fmt: str, digits: int, expected: float) -> bool:
    """Whether ``shown`` is ``expected`` to the displayed precision."""
    value, half = parse_display(shown, fmt, digits)
    return abs(value - expected) <= half * (1 + 1e-9) + 1e-12 * abs(expected)
