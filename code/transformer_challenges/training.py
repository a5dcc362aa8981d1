"""A small, explicit training loop for the book's language models (Chapters 1, 5, 6, 7, 8)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .data import random_batch
from .runtime import progress

SCHEDULES = ("constant", "cosine", "linear")


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
          schedule: str = "constant", min_ratio: float = 0.1) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup_steps``, then constant, cosine or
    linear decay to ``min_ratio * base_lr`` at ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is unknown; use one of {SCHEDULES}.")
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got warmup_steps="
            f"{warmup_steps}, total_steps={total_steps}."
        )
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress_ = min(max(progress_, 0.0), 1.0)
    if schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * progress_))
    else:
        factor = 1 - progress_
    return base_lr * (min_ratio + (1 - min_ratio) * factor)


@torch.no_grad()
def evaluate_lm(model: nn.Module, tokens: torch.Tensor, seq_len: int, max_windows: int = 64,
                batch_size: int = 16) -> float:
    """Mean next-token loss over the first ``max_windows`` non-overlapping windows of ``tokens``."""
    if tokens.numel() < seq_len + 1:
        raise ValueError(f"need more than seq_len={seq_len} tokens to evaluate, got {tokens.numel()}.")
    n_windows = min(max_windows, (tokens.numel() - 1) // seq_len)
    starts = torch.arange(n_windows) * seq_len
    offsets = torch.arange(seq_len)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, n_windows, batch_size):
        s = starts[i:i + batch_size]
        x = tokens[s[:, None] + offsets].to(device)
        y = tokens[s[:, None] + offsets + 1].to(device)
        _, loss = model(x, y)
        total += loss.item() * len(s)
        count += len(s)
    model.train(was_training)
    return total / count


@dataclass
class TrainResult:
    """What ``train_lm`` records: step indices, training losses, learning rates, eval points."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    diverged: bool = False


def train_lm(model: nn.Module, tokens: torch.Tensor, steps: int, batch_size: int, seq_len: int,
             lr: float = 3e-3, warmup_steps: int = 0, schedule: str = "constant",
             weight_decay: float = 0.0, grad_clip: float | None = 1.0, aux_weight: float = 0.01,
             eval_tokens: torch.Tensor | None = None, eval_every: int = 0, seed: int = 0,
             desc: str = "train") -> TrainResult:
    """Train ``model`` (forward(idx, targets) -> (logits, loss)) with AdamW on random windows.

    Batches come from a generator seeded with ``seed``, so two calls with the same arguments see
    the same data. A non-finite loss stops training and sets ``diverged``. Models with an
    ``aux_loss()`` method (MoE) get ``aux_weight`` times it added to the loss.
    """
    if steps <= 0 or batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"steps, batch_size and seq_len must be positive, got {steps}, {batch_size}, {seq_len}.")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    result = TrainResult()
    model.train()
    for step in progress(range(steps), desc=desc, leave=False):
        current = lr_at(step, steps, lr, warmup_steps, schedule)
        for group in opt.param_groups:
            group["lr"] = current
        x, y = random_batch(tokens, batch_size, seq_len, gen)
        _, loss = model(x.to(device), y.to(device))
        total = loss + aux_weight * model.aux_loss() if hasattr(model, "aux_loss") else loss
        if not torch.isfinite(total):
            result.diverged = True
            break
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        result.steps.append(step)
        result.loss.append(loss.item())
        result.lr.append(current)
        if eval_tokens is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            result.eval_steps.append(step + 1)
            result.eval_loss.append(evaluate_lm(model, eval_tokens, seq_len))
    return result
