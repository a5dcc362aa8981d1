"""The induction-head task: a 2-layer TinyGPT learns to continue repeated random token sequences.

Used by the interpretability chapter (``ch-interpretability``). A sequence is a BOS token
followed by a random permutation prefix of ``period`` distinct symbols, repeated cyclically; the
period varies from sequence to sequence, so absolute positions cannot solve the task and the
model must *look up* where the current token appeared before and copy its successor: the
induction mechanism (in the textbook form a previous-token head in layer 0 and an induction
head in layer 1; the chapter's models use layer-0 heads that look two and three positions back).

Command line (reproduces the chapter's main result over several training seeds and prints it)::

    python -m transformer_challenges.induction [--seeds 0 1 2 | --seed N] [--size tiny|fast|full] [--steps N]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from . import interp
from .model import GPTConfig, TinyGPT
from .runtime import progress, seed_everything


@dataclass(frozen=True)
class InductionConfig:
    """Task and model sizes. Sequences hold ``2 * max_period + 1`` tokens (BOS included)."""

    n_symbols: int = 16
    min_period: int = 4
    max_period: int = 12
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    position: str = "learned"

    def __post_init__(self):
        for name in ("n_symbols", "min_period", "max_period", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 2 <= self.min_period <= self.max_period <= self.n_symbols:
            raise ValueError(
                f"need 2 <= min_period <= max_period <= n_symbols, got {self.min_period}, "
                f"{self.max_period}, {self.n_symbols}; a period uses distinct symbols."
            )

    @property
    def bos(self) -> int:
        """Id of the beginning-of-sequence token (the last id)."""
        return self.n_symbols

    @property
    def n_tokens(self) -> int:
        """Length of one full sequence, BOS included (the model sees n_tokens - 1 inputs)."""
        return 2 * self.max_period + 1


SIZES = {
    "tiny": InductionConfig(steps=300),
    "fast": InductionConfig(),
    "full": InductionConfig(n_symbols=64, min_period=8, max_period=32, d_model=128, n_heads=4,
                            steps=3000, batch_size=128, lr=1e-3),
}

#: Training seeds the chapter and the command line report over by default.
SEEDS = (0, 1, 2)
#: A head is called *necessary* when mean-ablating it leaves a repeated-part accuracy below this
#: (the model reaches about 0.4-0.5 with heuristics alone, before the induction circuit forms).
NECESSARY_BELOW = 0.3
#: A head *carries* a corruption when patching it recovers more than this fraction of the margin.
CARRIES_ABOVE = 0.9


def repeated_sequences(cfg: InductionConfig, batch_size: int, generator: torch.Generator,
                       period: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``tokens`` (B, n_tokens) and ``periods`` (B,): BOS + a random prefix repeated.

    ``tokens[b, k] = prefix_b[(k - 1) % period_b]`` for ``k >= 1``; the prefix holds distinct
    symbols. ``period`` fixes the period of every row (default: uniform in [min, max]).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if period is not None and not cfg.min_period <= period <= cfg.max_period:
        raise ValueError(f"period={period} is outside [{cfg.min_period}, {cfg.max_period}]; "
                         "pick one inside the range the model was trained on.")
    if period is None:
        periods = torch.randint(cfg.min_period, cfg.max_period + 1, (batch_size,), generator=generator)
    else:
        periods = torch.full((batch_size,), period)
    prefix = torch.argsort(torch.rand(batch_size, cfg.n_symbols, generator=generator), dim=1)
    k = torch.arange(cfg.n_tokens - 1)
    body = torch.gather(prefix, 1, k[None] % periods[:, None])
    tokens = torch.cat([torch.full((batch_size, 1), cfg.bos), body], dim=1)
    return tokens, periods


def repeat_mask(periods: torch.Tensor, n_inputs: int) -> torch.Tensor:
    """Boolean (B, n_inputs): True where the *next* token is a copy (input position t >= period)."""
    return torch.arange(n_inputs)[None] >= periods[:, None]


def build_model(cfg: InductionConfig) -> TinyGPT:
    """A TinyGPT (Pre-LN, SDPA attention) sized for the task."""
    return TinyGPT(GPTConfig(vocab_size=cfg.n_symbols + 1, seq_len=cfg.n_tokens - 1,
                             d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
                             norm="pre", attn_impl="sdpa", position=cfg.position))


def train_induction(cfg: InductionConfig, seed: int = 0, eval_every: int = 50,
                    device: torch.device | str = "cpu") -> tuple[TinyGPT, dict[str, list]]:
    """Train on the predictable (repeated) positions only; return the model and a history of
    ``step``, ``loss``, ``acc_repeat`` and ``acc_first`` measured on a fixed held-out batch."""
    if eval_every <= 0:
        raise ValueError(f"eval_every must be positive, got {eval_every}.")
    seed_everything(seed)
    model = build_model(cfg).to(device)
    gen = torch.Generator().manual_seed(seed)
    eval_gen = torch.Generator().manual_seed(10_000 + seed)
    eval_tokens, eval_periods = repeated_sequences(cfg, 256, eval_gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    history: dict[str, list] = {"step": [], "loss": [], "acc_repeat": [], "acc_first": []}
    for step in progress(range(cfg.steps), desc="induction", leave=False):
        tokens, periods = repeated_sequences(cfg, cfg.batch_size, gen)
        tokens = tokens.to(device)
        keep = repeat_mask(periods, tokens.shape[1] - 1).to(device)
        logits, _ = model(tokens[:, :-1])
        loss = F.cross_entropy(logits[keep], tokens[:, 1:][keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == cfg.steps:
            acc = accuracy_by_part(model, eval_tokens.to(device), eval_periods)
            history["step"].append(step + 1)
            history["loss"].append(loss.item())
            history["acc_repeat"].append(acc["repeat"])
            history["acc_first"].append(acc["first"])
    model.eval()
    return model, history


@torch.no_grad()
def accuracy_by_part(model: TinyGPT, tokens: torch.Tensor, periods: torch.Tensor,
                     logits: torch.Tensor | None = None) -> dict[str, float]:
    """Next-token accuracy on the first occurrence (unpredictable) and on the repeats."""
    if logits is None:
        logits = model(tokens[:, :-1])[0]
    correct = (logits.argmax(-1) == tokens[:, 1:]).float()
    rep = repeat_mask(periods, tokens.shape[1] - 1).to(correct.device)
    return {"first": correct[~rep].mean().item(), "repeat": correct[rep].mean().item()}


@torch.no_grad()
def first_occurrence_bets(logits: torch.Tensor, tokens: torch.Tensor,
                          periods: torch.Tensor) -> dict[str, float]:
    """Where the probability goes when the next token is a first occurrence (input positions
    ``1 <= t < period``, where the answer is a symbol not seen yet): the mean probability on the
    symbols already seen in the sequence (``"seen"``) and on the first symbol after BOS
    (``"first_symbol"``, the bet that the period ends here). ``logits`` is (B, n, V) for the
    inputs ``tokens[:, :-1]``."""
    if tokens.dim() != 2 or logits.dim() != 3 or logits.shape[:2] != (tokens.shape[0], tokens.shape[1] - 1):
        raise ValueError(f"need tokens (B, n + 1) and logits (B, n, V) for tokens[:, :-1], got "
                         f"{tuple(tokens.shape)} and {tuple(logits.shape)}.")
    if periods.shape != (tokens.shape[0],):
        raise ValueError(f"need one period per row, got periods of shape {tuple(periods.shape)}.")
    x = tokens[:, :-1].to(logits.device)
    n, vocab = x.shape[1], logits.shape[-1]
    probs = logits.float().softmax(-1)
    seen = F.one_hot(x, vocab)
    seen[:, 0] = 0                                           # position 0 holds BOS, not a symbol
    seen = seen.cumsum(1) > 0                                # symbols at input positions <= t
    t = torch.arange(n, device=logits.device)
    first = (t[None] >= 1) & (t[None] < periods.to(logits.device)[:, None])
    p_seen = (probs * seen).sum(-1)[first].mean()
    p_first = probs.gather(-1, x[:, 1:2].expand(-1, n)[..., None])[..., 0][first].mean()
    return {"seen": p_seen.item(), "first_symbol": p_first.item()}


def induction_scores(attn: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """Mean attention from each repeated position t (t >= period) to t - period + 1, the token
    after the previous occurrence of the current token, per head: ``(B, h, n, n) -> (h,)``."""
    if attn.dim() != 4:
        raise ValueError(f"attention must be (batch, heads, n, n), got {tuple(attn.shape)}.")
    b, h, n, _ = attn.shape
    t = torch.arange(n)
    total = torch.zeros(h)
    count = 0
    for i in range(b):
        p = int(periods[i])
        q = t[t >= p]
        total += attn[i][:, q, q - p + 1].sum(-1).cpu()
        count += len(q)
    return total / count


CORRUPTIONS = ("key", "value")


def patching_pair(cfg: InductionConfig, batch_size: int, generator: torch.Generator,
                  period: int, target: int, corrupt: str = "key") -> dict[str, torch.Tensor]:
    """Clean and corrupted inputs for activation patching at input position ``target``.

    ``target`` lies in the second copy, so its token A occurred once before, at
    ``target - period``, followed by the answer B at ``target - period + 1``. ``corrupt="key"``
    replaces that earlier A by a symbol absent from the sequence (nothing left to match);
    ``corrupt="value"`` replaces the earlier B (induction now copies the wrong token).
    Returns ``clean``, ``corrupt`` (B, n_inputs), ``answer`` (B,) and ``position`` (the
    corrupted position).
    """
    if corrupt not in CORRUPTIONS:
        raise ValueError(f"corrupt={corrupt!r} is unknown; use one of {CORRUPTIONS}.")
    if period * 2 > cfg.n_symbols:
        raise ValueError(f"period={period} leaves too few unused symbols for the corruption; use "
                         f"period <= {cfg.n_symbols // 2}.")
    n_inputs = cfg.n_tokens - 1
    if not period + 1 <= target <= min(2 * period, n_inputs - 1):
        raise ValueError(f"target={target} must lie in the second copy, [{period + 1}, "
                         f"{min(2 * period, n_inputs - 1)}], so the current token occurs exactly once before.")
    tokens, _ = repeated_sequences(cfg, batch_size, generator, period=period)
    clean = tokens[:, :-1]
    answer = tokens[:, target + 1]
    bad = clean.clone()
    src = target - period + (0 if corrupt == "key" else 1)
    used = torch.zeros(batch_size, cfg.n_symbols, dtype=torch.bool)
    used.scatter_(1, clean[:, 1:period + 1], True)
    pick = torch.multinomial((~used).float(), 1, generator=generator).squeeze(1)
    bad[:, src] = pick
    return {"clean": clean, "corrupt": bad, "answer": answer, "position": torch.tensor(src)}


def analyse(model: TinyGPT, cfg: InductionConfig, seed: int = 0) -> dict:
    """The chapter's main result: accuracy by part, head patching for both corruptions, and the
    repeated-part accuracy with each head mean-ablated."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    tokens, periods = repeated_sequences(cfg, 256, gen)
    acc = accuracy_by_part(model, tokens, periods)
    period = max(cfg.min_period, min(8, cfg.n_symbols // 2, cfg.max_period))
    target = 2 * period - 1
    symbols = list(range(cfg.n_symbols))
    patching = {}
    for kind in CORRUPTIONS:
        pair = patching_pair(cfg, 128, gen, period=period, target=target, corrupt=kind)

        def metric(logits, answer=pair["answer"]):
            return interp.logit_margin(logits, target, answer, symbols).mean()

        patching[kind] = interp.head_patching_scan(model, pair["clean"], pair["corrupt"], metric)
    ablation = torch.zeros(cfg.n_layers, cfg.n_heads)
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            logits = interp.ablate_heads(model, tokens[:, :-1], [(l, h)], mode="mean")
            ablation[l, h] = accuracy_by_part(model, tokens, periods, logits)["repeat"]
    last = cfg.n_layers - 1
    both = torch.minimum(patching["key"][last], patching["value"][last])
    return {"acc": acc, "patching": patching, "ablation_repeat_acc": ablation,
            "induction_head": (last, int(both.argmax())),
            "key_head": (0, int(patching["key"][0].argmax())),
            "value_head": (0, int(patching["value"][0].argmax()))}


def verdicts(res: dict) -> dict[str, float | bool]:
    """Label-free verdicts of one :func:`analyse` result (heads named by role, not by index):
    does the induction head carry both corruptions, is it necessary, is another head needed?"""
    last, ih = res["induction_head"]
    abl, key, value = res["ablation_repeat_acc"], res["patching"]["key"], res["patching"]["value"]
    others = [h for h in range(abl.shape[1]) if h != ih]
    other_abl = min(float(abl[last, h]) for h in others) if others else float("nan")
    return {
        "repeat_acc": res["acc"]["repeat"],
        "induction_key": float(key[last, ih]), "induction_value": float(value[last, ih]),
        "carries_both": bool(min(key[last, ih], value[last, ih]) > CARRIES_ABOVE),
        "ablated_induction": float(abl[last, ih]),
        "necessary": bool(abl[last, ih] < NECESSARY_BELOW),
        "ablated_other_last": other_abl,
        "key_value_split": res["key_head"] != res["value_head"],
        "ablated_key_head": float(abl[res["key_head"]]),
        "ablated_value_head": float(abl[res["value_head"]]),
    }


def format_report(cfg: InductionConfig, seeds: list[int], results: list[dict]) -> str:
    """The command line's printout: every seed's table and, for several seeds, the verdicts
    counted over seeds ("k of n seeds") with mean ± std of the numbers behind them."""
    from . import stats

    if len(seeds) != len(results) or not seeds:
        raise ValueError(f"need one analyse() result per seed, got {len(results)} for seeds {seeds}.")
    lines = ["config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items())
             + f" seeds={','.join(map(str, seeds))}"]
    for seed, res in zip(seeds, results):
        lines.append(f"seed {seed}: accuracy first occurrence {res['acc']['first']:.3f}, repeated part "
                     f"{res['acc']['repeat']:.3f} (chance {1 / cfg.n_symbols:.3f})")
        lines.append("head   recovered(key)  recovered(value)  repeat-acc when mean-ablated")
        for l in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                lines.append(f"L{l}H{h}   {res['patching']['key'][l, h]:>13.3f}  "
                             f"{res['patching']['value'][l, h]:>16.3f}  {res['ablation_repeat_acc'][l, h]:>28.3f}")
        names = [("induction head", "induction_head"), ("key-side layer-0 head", "key_head"),
                 ("value-side layer-0 head", "value_head")]
        lines.append("; ".join(f"{name}: L{res[key][0]}H{res[key][1]}" for name, key in names))
    v = [verdicts(r) for r in results]
    n = len(seeds)
    if n == 1:
        lines.append("one seed: these verdicts come from a single training run; "
                     "run with --seeds 0 1 2 to see whether they hold across seeds")
    sp = lambda key: stats.spread([x[key] for x in v]).format(3)  # noqa: E731
    lines += [
        f"across {n} seed(s):",
        f"  repeated-part accuracy {sp('repeat_acc')}",
        f"  induction head recovers > {CARRIES_ABOVE} under both corruptions: "
        f"{stats.k_of_n([x['carries_both'] for x in v])}",
        f"  induction head mean-ablated: repeat accuracy {sp('ablated_induction')}; necessary "
        f"(< {NECESSARY_BELOW}): {stats.k_of_n([x['necessary'] for x in v])}",
        f"  other layer-{cfg.n_layers - 1} head mean-ablated: repeat accuracy {sp('ablated_other_last')}",
        f"  key side and value side carried by different layer-0 heads: "
        f"{stats.k_of_n([x['key_value_split'] for x in v])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: train every seed of ``--seeds`` (or the one ``--seed``), print
    each seed's result and the verdicts counted over seeds."""
    parser = argparse.ArgumentParser(prog="python -m transformer_challenges.induction",
                                     description="Train a 2-layer TinyGPT on repeated random "
                                     "sequences and locate its induction head.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                       help="training seeds to report over (default: 0 1 2)")
    which.add_argument("--seed", type=int, default=None, help="a single seed (one training run)")
    parser.add_argument("--size", choices=sorted(SIZES), default="fast")
    parser.add_argument("--steps", type=int, default=None, help="override the number of steps")
    args = parser.parse_args(argv)
    os.environ.setdefault("TC_PROGRESS", "0")  # a progress bar would clutter the printed result
    seeds = [args.seed] if args.seed is not None else args.seeds
    if any(seed < 0 for seed in seeds):
        parser.error(f"--seed/--seeds must be >= 0, got {seeds}")
    cfg = SIZES[args.size]
    if args.steps is not None:
        if args.steps <= 0:
            parser.error(f"--steps must be positive, got {args.steps}")
        cfg = replace(cfg, steps=args.steps)
    results = [analyse(train_induction(cfg, seed=seed)[0], cfg, seed=seed) for seed in seeds]
    print(format_report(cfg, seeds, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
