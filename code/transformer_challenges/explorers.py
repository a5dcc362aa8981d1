"""Explorers: calculators that run in the reader's browser on the static site, with no kernel.

Used by the pages that teach a formula (compute and memory, KV cache, efficient attention, RoPE,
ALiBi, scaling laws, interpretability). An explorer is a small spec: controls (numbers, choices,
switches), outputs and plots. Its numbers come from this library in one of two ways, never from
JavaScript typed by hand:

- **generated expressions**: an output is a SymPy expression built by calling the library's own
  formula functions with SymPy symbols (``costs.activation_bytes(ModelConfig.symbolic(), b)``);
  SymPy's JavaScript printer (``sympy.printing.jscode``) turns it into the code the page runs;
- **precomputed frames**: where a value is not a closed form (a sum over frequencies, a trained
  model's attention), the library evaluates it at execution time on a grid of the controls, and
  the page looks the frame up.

In a notebook an explorer displays as HTML (``_repr_html_``): a ``<div class="tc-explorer">``
holding the spec as JSON, which ``_ext/explorers/tc-explorers.js`` turns into a form and a Plotly
figure (Plotly's own bundle, served from the site). Its plain-text form lists the controls and the
outputs at their defaults, computed in Python, so nbval compares the same numbers the page shows.
``tests/test_site.py`` sets random inputs in the browser and compares the displayed values with
the library's.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import sympy as sp
from sympy.printing.jscode import jscode

FORMATS = ("bytes", "count", "sci", "fixed", "percent", "days")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name {name!r} must be a Python/JavaScript identifier, e.g. 'n_layers'.")
    return name


@dataclass(frozen=True)
class Control:
    """One input: ``kind`` is "number" (with min/max/step), "choice" (options: label -> value) or
    "switch" (value 0 or 1)."""

    name: str
    label: str
    value: float
    kind: str = "number"
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: Mapping[str, float] | None = None
    unit: str = ""

    def __post_init__(self):
        _check_name(self.name)
        if self.kind not in ("number", "choice", "switch"):
            raise ValueError(f"control {self.name}: kind={self.kind!r}; use number, choice or switch.")
        if self.kind == "number":
            if self.min is None or self.max is None or not self.min <= self.value <= self.max:
                raise ValueError(f"control {self.name}: a number needs min <= value <= max, got "
                                 f"min={self.min}, value={self.value}, max={self.max}.")
        if self.kind == "choice" and (not self.options or self.value not in self.options.values()):
            raise ValueError(f"control {self.name}: a choice needs options (label -> value) "
                             f"containing its value {self.value!r}.")
        if self.kind == "switch" and self.value not in (0, 1):
            raise ValueError(f"control {self.name}: a switch is 0 or 1, got {self.value!r}.")

    def spec(self) -> dict[str, Any]:
        out = {"name": self.name, "label": self.label, "kind": self.kind, "value": self.value,
               "unit": self.unit}
        if self.kind == "number":
            out.update(min=self.min, max=self.max, step=self.step or 1)
        if self.kind == "choice":
            out["options"] = [[k, v] for k, v in self.options.items()]
        return out


def format_value(value: float, fmt: str, digits: int = 3) -> str:
    """How the page shows a value; the browser's ``tcFormat`` does the same (tc-explorers.js)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; use one of {FORMATS}.")
    if not math.isfinite(value):
        return "—"
    if fmt == "bytes":
        return f"{value / 1e9:.{digits}f} GB"
    if fmt == "count":
        return f"{round(value):,}"
    if fmt == "sci":
        mant, exp = f"{value:.{digits}e}".split("e")
        return f"{mant}e{int(exp)}"
    if fmt == "percent":
        return f"{100 * value:.{digits}f}%"
    if fmt == "days":
        return f"{value / 86400:.{digits}f} days"
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class Output:
    """One displayed value: a SymPy expression of the controls' symbols (generated from a library
    formula), shown with ``fmt`` ("bytes", "count", "sci", "fixed", "percent", "days")."""

    name: str
    label: str
    expr: Any = None
    fmt: str = "fixed"
    digits: int = 3
    frame: str | None = None      # or: the value of frame series ``frame`` ...
    at: str | None = None         # ... at the point of frame series ``along`` nearest control ``at``
    along: str | None = None

    def __post_init__(self):
        _check_name(self.name)
        if (self.expr is None) == (self.frame is None):
            raise ValueError(f"output {self.name}: give either expr (a SymPy expression) or frame "
                             "(a precomputed series, with at= and along=).")
        if self.frame is not None and not (self.at and self.along):
            raise ValueError(f"output {self.name}: a frame output needs at= (a control) and along= "
                             "(the frame series holding that control's grid).")
        if self.fmt not in FORMATS:
            raise ValueError(f"output {self.name}: format {self.fmt!r} is unknown; use one of {FORMATS}.")


@dataclass
class Explorer:
    """A static-site calculator: controls, generated outputs, optional presets and plots.

    ``plots`` are dicts understood by tc-explorers.js: ``{"type": "stack", "outputs": [...],
    "lines": [[bytes, label], ...]}`` (one stacked bar against reference lines) or
    ``{"type": "frames", ...}`` (curves looked up in ``frames`` by the controls' values).
    ``frames`` maps a key built from the values of ``frame_keys`` ("4|128") to named series.
    """

    id: str
    title: str
    controls: Sequence[Control]
    outputs: Sequence[Output] = ()
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    plots: Sequence[Mapping[str, Any]] = ()
    frames: Mapping[str, Mapping[str, Sequence[float]]] | None = None
    frame_keys: Sequence[str] = ()
    note: str = ""
    # (condition, message): SymPy relations of the controls that the library's functions require
    # (e.g. tensor parallelism divides the heads); the page blanks its outputs and shows the message.
    constraints: Sequence[tuple[Any, str]] = ()

    def __post_init__(self):
        names = [c.name for c in self.controls]
        if len(set(names)) != len(names):
            raise ValueError(f"explorer {self.id}: control names repeat: {names}.")
        for out in self.outputs:
            if out.expr is None:
                if out.at not in names:
                    raise ValueError(f"explorer {self.id}: output {out.name} is read at {out.at!r}, "
                                     "which is not a control.")
                continue
            free = {s for s in sp.sympify(out.expr).free_symbols}
            unknown = {s.name for s in free} - set(names)
            if unknown:
                raise ValueError(f"explorer {self.id}: output {out.name} uses {sorted(unknown)}, "
                                 "which are not controls; add controls of those names.")
        for preset, values in self.presets.items():
            extra = set(values) - set(names)
            if extra:
                raise ValueError(f"explorer {self.id}: preset {preset!r} sets unknown controls {sorted(extra)}.")
        for key in self.frame_keys:
            if key not in names:
                raise ValueError(f"explorer {self.id}: frame key {key!r} is not a control.")

    # ------------------------------------------------------------------ evaluation in Python
    def defaults(self) -> dict[str, float]:
        return {c.name: c.value for c in self.controls}

    def evaluate(self, values: Mapping[str, float] | None = None) -> dict[str, float]:
        """The outputs at ``values`` (default: the controls' defaults), from the same expressions
        the page runs. (The browser test compares the page with the library functions themselves.)"""
        vals = {**self.defaults(), **(values or {})}
        for cond, message in self.constraints:
            if not bool(cond.subs({s: vals[s.name] for s in cond.free_symbols})):
                raise ValueError(message)
        out = {}
        for o in self.outputs:
            if o.expr is None:
                frame = self.frames["|".join(_key(vals[k]) for k in self.frame_keys)]
                grid = frame[o.along]
                i = min(range(len(grid)), key=lambda j: abs(grid[j] - vals[o.at]))
                out[o.name] = float(frame[o.frame][i])
                continue
            expr = sp.sympify(o.expr)
            out[o.name] = float(expr.subs({s: vals[s.name] for s in expr.free_symbols}))
        return out

    # ------------------------------------------------------------------ the page
    def spec(self) -> dict[str, Any]:
        def js(expr):
            expr = sp.sympify(expr)
            # every control symbol becomes the plain JS variable of its name
            expr = expr.subs({s: sp.Symbol(s.name) for s in expr.free_symbols})
            return jscode(expr)

        return {
            "id": self.id, "title": self.title, "note": self.note,
            "controls": [c.spec() for c in self.controls],
            "outputs": [{"name": o.name, "label": o.label, "fmt": o.fmt, "digits": o.digits,
                         **({"js": js(o.expr)} if o.expr is not None else
                            {"frame": o.frame, "at": o.at, "along": o.along})}
                        for o in self.outputs],
            "presets": {k: dict(v) for k, v in self.presets.items()},
            "plots": [self._plot_spec(p, js) for p in self.plots],
            "frames": self.frames, "frame_keys": list(self.frame_keys),
            "constraints": [[js(cond), message] for cond, message in self.constraints],
        }

    @staticmethod
    def _plot_spec(plot: Mapping[str, Any], js: Callable[[Any], str]) -> dict[str, Any]:
        out = dict(plot)
        if out.get("type") == "curve":
            out["y"] = js(out["y"])
        return out

    def _repr_html_(self) -> str:
        payload = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        payload = payload.replace("</", "<\\/")  # a JSON string may not close the script element
        return (f'<div class="tc-explorer" id="tc-explorer-{html.escape(self.id)}" '
                f'data-explorer="{html.escape(self.id)}">'
                f'<script type="application/json" class="tc-explorer-spec">{payload}</script>'
                # What a kernel's front end (Jupyter, Colab) shows: the page's script replaces it.
                f'<pre class="tc-explorer-fallback">{html.escape(repr(self))}</pre></div>')

    def __repr__(self) -> str:
        lines = [f"Explorer '{self.title}' (interactive on the book's static site; here at its defaults)"]
        defaults = self.defaults()
        lines.append("  inputs:  " + ", ".join(f"{c.label}={defaults[c.name]:g}" for c in self.controls))
        for name, value in self.evaluate().items():
            out = next(o for o in self.outputs if o.name == name)
            lines.append(f"  {out.label}: {format_value(value, out.fmt, out.digits)}")
        return "\n".join(lines)


def _key(value: float) -> str:
    """A control value as the page writes it in a frame key: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _round(values, digits: int = 6) -> list[float]:
    """Frame values rounded to ``digits`` significant digits: float64 sums agree across machines
    far below that, so the stored page does not depend on the CPU."""
    return [float(f"{float(v):.{digits}g}") for v in values]


# ------------------------------------------------------------------------------ the explorers
def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, positive=True)


GPU_LINES = [[16e9, "16 GB (T4)"], [40e9, "40 GB (A100)"], [80e9, "80 GB (A100/H100)"]]
# Dense 16-bit peak throughput per GPU (vendor data sheets): A100 312 TFLOP/s (the source's
# GPU), H100 SXM 989 TFLOP/s, V100 125 TFLOP/s.
PEAK_FLOPS = {"A100 (312 TFLOP/s)": 312e12, "H100 SXM (989 TFLOP/s)": 989e12, "V100 (125 TFLOP/s)": 125e12}


def training_memory() -> Explorer:
    """Training memory and time of a GPT-style model per GPU (compute-and-memory page).

    Every output is a ``costs`` formula called with SymPy symbols: ``param_count``,
    ``parameter_bytes``, ``activation_bytes`` (for each recomputation mode and sequence
    parallelism on/off, joined in a Piecewise), ``training_flops`` and ``training_time_seconds``.
    """
    from . import costs

    l, h, a, V, s_, b, t = (sp.Symbol(n, positive=True, integer=True)
                            for n in ("n_layers", "d_model", "n_heads", "vocab", "seq_len", "batch", "tp"))
    rc, spar, bpp = sp.Symbol("recompute"), sp.Symbol("sp"), _sym("bytes_per_param")
    gpus, util, tokens, peak = (_sym(n) for n in ("n_gpus", "utilization", "tokens_B", "peak"))
    cfg = costs.ModelConfig(l, h, a, V, s_)
    n = costs.param_count(cfg)
    act = {(mode, par): costs.activation_bytes(cfg, b, recompute=mode, tensor_parallel=t,
                                               sequence_parallel=par)
           for mode in costs.RECOMPUTE_MODES for par in (False, True)}
    pieces = []
    for i, mode in enumerate(costs.RECOMPUTE_MODES):
        pieces.append((sp.Piecewise((act[mode, True], sp.Eq(spar, 1)), (act[mode, False], True)),
                       sp.Eq(rc, i)))
    activations = sp.Piecewise(*pieces[:-1], (pieces[-1][0], True))
    state = costs.parameter_bytes(n, bpp) / t
    d = tokens * 10**9
    flops = sp.Piecewise((costs.training_flops(n, d, recompute=True), sp.Eq(rc, 2)),
                         (costs.training_flops(n, d, recompute=False), True))
    seconds = sp.Piecewise(
        (costs.training_time_seconds(n, d, gpus, peak, util, recompute=True), sp.Eq(rc, 2)),
        (costs.training_time_seconds(n, d, gpus, peak, util, recompute=False), True))
    modes = {m: i for i, m in enumerate(costs.RECOMPUTE_MODES)}
    controls = [
        Control("n_layers", "layers", 96, min=1, max=256),
        Control("d_model", "hidden size", 12288, min=64, max=65536, step=64),
        Control("n_heads", "attention heads", 96, min=1, max=512),
        Control("vocab", "vocabulary", 50257, min=2, max=300000),
        Control("seq_len", "sequence length", 2048, min=16, max=131072, step=16, unit="tokens"),
        Control("batch", "micro-batch", 1, min=1, max=512, unit="sequences"),
        Control("tp", "tensor parallel", 8, kind="choice", options={"1": 1, "2": 2, "4": 4, "8": 8, "16": 16}),
        Control("sp", "sequence parallelism", 1, kind="switch"),
        Control("recompute", "recomputation", 1, kind="choice", options=modes),
        Control("bytes_per_param", "bytes per parameter", 16, min=2, max=20, unit="weights+grads+optimizer"),
        Control("n_gpus", "GPUs", 1024, min=1, max=100000),
        Control("peak", "GPU peak", 312e12, kind="choice", options=PEAK_FLOPS),
        Control("utilization", "utilisation", 0.45, min=0.01, max=1, step=0.01),
        Control("tokens_B", "training tokens", 300, min=1, max=100000, unit="billions"),
    ]
    gpt = lambda c: dict(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,  # noqa: E731
                         vocab=c.vocab_size, seq_len=c.seq_len)
    from .kvcache import REAL_CONFIGS

    def llama(name):
        c = REAL_CONFIGS[name]
        return dict(n_layers=c["n_layers"], d_model=c["d_model"], n_heads=c["n_heads"],
                    vocab=c["vocab_size"], seq_len=c["context"])

    presets = {"GPT-3 175B": {**gpt(costs.GPT3_175B), "tokens_B": 300},
               "LLaMA-2 7B (GPT-style shape)": {**llama("LLaMA-2 7B"), "tokens_B": 2000},
               "LLaMA-2 70B (GPT-style shape)": {**llama("LLaMA-2 70B"), "tokens_B": 2000}}
    outputs = [
        Output("params", "parameters", n, "count"),
        Output("state", "weights + gradients + optimizer / GPU", state, "bytes", 2),
        Output("activations", "activations / GPU", activations, "bytes", 2),
        Output("total", "total / GPU", state + activations, "bytes", 2),
        Output("flops", "training FLOPs", flops, "sci", 3),
        Output("days", "training time", seconds, "days", 1),
    ]
    divides = [(sp.Eq(sp.Mod(d_, n_), 0), msg) for d_, n_, msg in (
        (h, a, "the hidden size must be a multiple of the number of heads"),
        (a, t, "tensor parallelism splits whole heads: choose a tensor-parallel size that divides the heads"))]
    return Explorer(
        "training-memory", "Training memory per GPU, and training time", controls, outputs, presets,
        constraints=divides,
        plots=[{"type": "stack", "outputs": ["state", "activations"], "scale": 1e9, "ylabel": "GB per GPU",
                "xlabel": "per GPU", "lines": GPU_LINES}],
        note="Formulas of costs.py: param_count, parameter_bytes / tp (no ZeRO), activation_bytes "
             "(Korthikanti et al. 2022), 6ND or, with full recomputation, 8ND FLOPs. LLaMA presets "
             "keep LLaMA's depth, width, heads and vocabulary in a GPT-style layer (GELU MLP of 4h, "
             "no GQA).")


KV_DTYPES = {"16-bit (fp16/bf16)": 16, "int8 + fp16 scale, zero per token": 8,
             "int4 + fp16 scale, zero per token": 4}


def kv_cache() -> Explorer:
    """KV-cache bytes per token and per batch, and how many requests fit beside the weights
    (kv-cache page). Formulas: ``kvcache.kv_bytes_per_token`` with the bytes per value of
    ``kvcache.quantized_bytes_per_value`` (codes plus the fp16 scale and zero of each token's
    head vector), ``costs.parameter_bytes`` of the preset's GPT-style parameter count."""
    from . import costs, kvcache

    l, kv, hd, bits, b, ctx, wgb, mem = (sp.Symbol(n, positive=True) for n in (
        "n_layers", "n_kv_heads", "head_dim", "bits", "batch", "context", "weights_GB", "gpu_GB"))
    bpv = sp.Piecewise((2, sp.Eq(bits, 16)),
                       (kvcache.quantized_bytes_per_value(8, hd), sp.Eq(bits, 8)),
                       (kvcache.quantized_bytes_per_value(4, hd), True))
    per_token = kvcache.kv_bytes_per_token(l, kv, hd, bpv)
    per_request = per_token * ctx
    fit = sp.floor((mem * 10**9 - wgb * 10**9) / per_request)
    presets = {}
    for label, name, kv_heads in (("MHA: LLaMA-2 7B", "LLaMA-2 7B", None),
                                  ("GQA: LLaMA-2 70B (8 KV heads)", "LLaMA-2 70B", None),
                                  ("MQA: LLaMA-2 7B shape, 1 KV head", "LLaMA-2 7B", 1)):
        c = kvcache.REAL_CONFIGS[name]
        weights = costs.parameter_bytes(costs.param_count(kvcache.model_config(name)))
        presets[label] = dict(n_layers=c["n_layers"], n_kv_heads=kv_heads or c["n_kv_heads"],
                              head_dim=kvcache.head_dim_of(name), context=c["context"],
                              weights_GB=round(weights / 1e9, 1))
    first = presets["MHA: LLaMA-2 7B"]
    controls = [
        Control("n_layers", "layers", first["n_layers"], min=1, max=256),
        Control("n_kv_heads", "KV heads", first["n_kv_heads"], min=1, max=256),
        Control("head_dim", "head size", first["head_dim"], min=8, max=512, step=8),
        Control("bits", "cache values", 16, kind="choice", options=KV_DTYPES),
        Control("batch", "batch", 1, min=1, max=1024, unit="requests"),
        Control("context", "context", first["context"], min=1, max=1048576, unit="tokens"),
        Control("weights_GB", "weights", first["weights_GB"], min=0, max=2000, step=0.1, unit="GB"),
        Control("gpu_GB", "GPU memory", 80, min=1, max=1000, unit="GB"),
    ]
    outputs = [
        Output("per_token", "KV cache per token", per_token, "fixed", 0),
        Output("per_request", "per request (context tokens)", per_request, "bytes", 3),
        Output("total", "batch x context", per_request * b, "bytes", 3),
        Output("fit", "requests that fit beside the weights", sp.Max(fit, 0), "count"),
    ]
    return Explorer("kv-cache", "KV-cache size, and requests that fit on one GPU", controls, outputs,
                    presets, constraints=[(sp.Ge(mem, wgb), "the weights alone do not fit on this GPU")],
                    note="bytes per token = 2 (K and V) x layers x KV heads x head size x bytes "
                    "per value (kvcache.kv_bytes_per_token); int8/int4 add 4 bytes of fp16 scale and "
                    "zero per token and head (kvcache.quantized_bytes_per_value). Weights: 16-bit, GPT-style "
                    "parameter count of the preset (costs.param_count).")


def compute_optimal() -> Explorer:
    """Compute-optimal model and data size for a FLOP budget under a fitted Chinchilla law
    (scaling-laws page): ``scaling.compute_optimal`` and ``ChinchillaLaw.loss`` with the law's
    constants, and the iso-FLOP curve L(N, C/(6N)) generated from the same ``loss``."""
    from . import scaling

    logc, law_i, n = sp.Symbol("log10_C"), sp.Symbol("law"), sp.Symbol("N", positive=True)
    c = 10 ** logc
    laws = list(scaling.LAWS.values())

    def by_law(f):
        return sp.Piecewise(*[(f(law), sp.Eq(law_i, i)) for i, law in enumerate(laws[:-1])],
                            (f(laws[-1]), True))

    n_opt = by_law(lambda law: law.optimal(c)[0])
    d_opt = by_law(lambda law: law.optimal(c)[1])
    loss = by_law(lambda law: law.loss(*law.optimal(c)))
    iso = by_law(lambda law: law.loss(n, c / (6 * n)))
    controls = [Control("log10_C", "compute budget, log10", 23.76, min=18, max=27, step=0.01, unit="FLOPs"),
                Control("law", "fit", 0, kind="choice",
                        options={law.name: i for i, law in enumerate(laws)})]
    outputs = [Output("N_opt", "N* (parameters)", n_opt, "sci", 3),
               Output("D_opt", "D* (tokens)", d_opt, "sci", 3),
               Output("ratio", "tokens per parameter", d_opt / n_opt, "fixed", 1),
               Output("loss", "predicted loss at (N*, D*)", loss, "fixed", 4)]
    curve = {"type": "curve", "x": "N", "from": 6, "to": 13, "points": 200, "xlog": True,
             "y": sp.sympify(iso), "label": "L(N, C / 6N)", "xlabel": "parameters N",
             "ylabel": "predicted loss (nats/token)", "mark": "N_opt"}
    return Explorer("compute-optimal", "Compute-optimal N and D for a FLOP budget", controls, outputs,
                    plots=[curve], note="C = 6ND; N*, D* in closed form (scaling.compute_optimal); the "
                    "curve is the law's loss along the budget, its minimum at N*.")


ROPE_D = (32, 64, 128, 256)
ROPE_BASES = (100, 1000, 10000, 100000, 500000, 1000000)
ROPE_RANGES = (256, 4096)
ROPE_POINTS = 257


def rope_decay(n_random: int = 256, seed: int = 0) -> Explorer:
    """RoPE's long-range decay (rope page): Su's Abel-summation curve (1/(d/2))·Σ_j |S_j(m)| from
    ``positional.rope_decay_curve``, and the mean score <R_m q, R_0 k>/d of ``n_random`` random
    query-key pairs with q = k (``positional.apply_rope`` in float64), on a grid of head sizes,
    bases and ranges: precomputed frames, 257 distances each."""
    import torch

    from . import positional

    frames = {}
    gen = torch.Generator().manual_seed(seed)
    for d in ROPE_D:
        q = torch.randn(n_random, d, generator=gen, dtype=torch.float64)
        for top in ROPE_RANGES:
            m = torch.linspace(0, top, ROPE_POINTS, dtype=torch.float64).round()
            for base in ROPE_BASES:
                curve = positional.rope_decay_curve(d, top, float(base))[m.long()]
                rq = positional.apply_rope(q[:, None, :].expand(-1, len(m), -1), m, float(base))
                r0 = q  # R_0 is the identity
                score = (rq * r0[:, None, :]).sum(-1).mean(0) / d
                frames[f"{d}|{base}|{top}"] = {"m": _round(m.tolist()), "bound": _round(curve.tolist()),
                                               "score": _round(score.tolist())}
    controls = [
        Control("d", "head size d", 128, kind="choice", options={str(d): d for d in ROPE_D}),
        Control("base", "base", 10000, kind="choice", options={f"{b:,}": b for b in ROPE_BASES}),
        Control("max_distance", "distances up to", 256, kind="choice",
                options={f"{r:,}": r for r in ROPE_RANGES}, unit="tokens"),
        Control("m", "read at distance m", 64, min=0, max=max(ROPE_RANGES)),
    ]
    outputs = [Output("bound_m", "Abel curve at m", frame="bound", at="m", along="m", fmt="fixed", digits=4),
               Output("score_m", "random q = k: score / d at m", frame="score", at="m", along="m",
                      fmt="fixed", digits=4)]
    plot = {"type": "frames", "x": "m", "xlabel": "relative distance m (tokens)", "ylabel": "value",
            "series": [{"y": "bound", "label": "(1/(d/2)) Σ|S_j(m)| (Abel bound factor)"},
                       {"y": "score", "label": f"mean <R_m q, q>/d, {n_random} random q"}]}
    return Explorer("rope-decay", "RoPE: the decay with distance", controls, outputs, plots=[plot],
                    frames=frames, frame_keys=("d", "base", "max_distance"),
                    note="Precomputed by positional.rope_decay_curve and positional.apply_rope (float64) "
                         "on a grid; m snaps to the nearest of 257 distances in the chosen range.")


ALIBI_MAX_HEADS = 64
ALIBI_DISTANCES = 16


def alibi_explorer() -> Explorer:
    """ALiBi's head slopes and the bias each head adds (alibi page): ``positional.alibi_slopes``
    and ``positional.alibi_bias`` for 1..64 heads, precomputed (the slopes of a head count that is
    not a power of two interleave two geometric sequences, which no one closed form gives)."""
    from . import positional

    frames = {}
    for n in range(1, ALIBI_MAX_HEADS + 1):
        bias = positional.alibi_bias(n, ALIBI_DISTANCES)[:, -1, :].flip(-1)  # last query, by distance
        frames[str(n)] = {"head": list(range(1, n + 1)), "slope": _round(positional.alibi_slopes(n).tolist(), 12),
                          "distance": list(range(ALIBI_DISTANCES)), "bias": [_round(r) for r in bias.tolist()]}
    controls = [Control("n_heads", "attention heads", 8, min=1, max=ALIBI_MAX_HEADS),
                Control("head", "read head", 1, min=1, max=ALIBI_MAX_HEADS)]
    outputs = [Output("slope_h", "slope m of that head", frame="slope", at="head", along="head",
                      fmt="fixed", digits=6)]
    plot = {"type": "heatmap", "z": "bias", "x": "distance", "y": "head", "xlabel": "query - key distance",
            "ylabel": "head", "colorscale": "Viridis"}
    return Explorer("alibi", "ALiBi: slopes and biases per head", controls, outputs, plots=[plot],
                    frames=frames, frame_keys=("n_heads",),
                    note="Each row is one head's bias -m·(i - j) for keys 0..15 tokens back "
                         "(positional.alibi_bias); head is read at the nearest existing head.")


__all__ = ["Control", "Output", "Explorer", "format_value", "FORMATS", "training_memory", "kv_cache",
           "compute_optimal", "rope_decay", "alibi_explorer"]
