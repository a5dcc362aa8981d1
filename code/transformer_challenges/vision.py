"""A tiny Vision Transformer on scikit-learn's 8x8 digits (used by the position chapter, for
learned 2D position embeddings, and by the "beyond language" chapter).

``load_digits`` returns a seeded train/test split of the 1,797 digit images that scikit-learn
ships (no download). ``PatchEmbedding`` cuts an image into non-overlapping patches and projects
each to ``d_model`` (a strided convolution, as in Dosovitskiy et al. 2021). ``TinyViT`` prepends
a learnable [CLS] token, adds position information (``"learned"``, ``"sinusoidal2d"`` or
``"none"``), runs non-causal ``model.Block`` layers and classifies from the [CLS] output.
``train_classifier`` and ``accuracy`` are the matching small training loop and metric;
``minibatch_train`` is the loop itself, shared with ``clip.train_clip``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import Block, check_heads

VIT_POSITIONS = ("learned", "sinusoidal2d", "none")


def _check_positive_int(**kwargs) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def load_digits(seed: int = 0, test_fraction: float = 0.25
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``; images (N, 1, 8, 8) in [0, 1]."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}; try 0.25.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0   # pixel values 0..16
    labels = torch.tensor(bunch.target, dtype=torch.long)
    n = labels.numel()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, min(n - 1, round(n * test_fraction)))
    test, train = perm[:n_test], perm[n_test:]
    return images[train], labels[train], images[test], labels[test]


class PatchEmbedding(nn.Module):
    """Split (B, C, H, W) images into non-overlapping p x p patches -> (B, n_patches, d_model)."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int):
        super().__init__()
        _check_positive_int(image_size=image_size, patch_size=patch_size, in_channels=in_channels,
                            d_model=d_model)
        if image_size % patch_size:
            divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
            raise ValueError(
                f"image_size={image_size} is not divisible by patch_size={patch_size}; "
                f"use a patch size in {divisors}."
            )
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.grid = image_size // patch_size           # patches per row (and per column)
        self.n_patches = self.grid ** 2
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, n_patches, d_model) patch embeddings in row-major order."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (batch, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got {tuple(images.shape)}.")
        return self.proj(images).flatten(2).transpose(1, 2)   # row-major patch order


class TinyViT(nn.Module):
    """Vision Transformer: patches + [CLS] + position -> non-causal Blocks -> LN -> linear head.

    ``position="learned"``: ``self.pos_emb`` is an ``nn.Parameter`` of shape (n_patches, d_model);
    ``"sinusoidal2d"``: a fixed table, half the dimensions encode the row, half the column
    (``positional.sinusoidal_2d``); ``"none"``: no position information at all. The [CLS] token
    gets no position embedding (it is the same token at every call).
    """

    def __init__(self, image_size: int = 8, patch_size: int = 2, in_channels: int = 1,
                 n_classes: int = 10, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 position: str = "learned", d_ff: int | None = None):
        super().__init__()
        _check_positive_int(n_classes=n_classes, n_layers=n_layers)
        check_heads(d_model, n_heads)
        if position not in VIT_POSITIONS:
            raise ValueError(f"position={position!r} is not supported; use one of {VIT_POSITIONS}.")
        self.patch = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.position = position
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        if position == "learned":
            self.pos_emb = nn.Parameter(torch.randn(self.patch.n_patches, d_model) * 0.02)
        elif position == "sinusoidal2d":
            from .positional import sinusoidal_2d
            self.register_buffer("pos_table", sinusoidal_2d(self.patch.grid, self.patch.grid, d_model),
                                 persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, causal=False) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + n_patches, d_model): the [CLS] token followed by position-tagged patch embeddings."""
        x = self.patch(images)
        if self.position == "learned":
            x = x + self.pos_emb
        elif self.position == "sinusoidal2d":
            x = x + self.pos_table
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, n_classes) read from the [CLS] position."""
        x = self.tokens(images)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, 0]))


def minibatch_train(model: nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor], n_examples: int,
                    steps: int, batch_size: int, lr: float = 3e-3, seed: int = 0,
                    weight_decay: float = 0.0, replacement: bool = True) -> list[float]:
    """The one small training loop of this package: AdamW on seeded random mini-batches.

    Each step draws ``min(batch_size, n_examples)`` example indices from a generator seeded with
    ``seed`` (with replacement, ``torch.randint``, or without, the head of a ``torch.randperm``),
    calls ``batch_loss(indices)`` for a scalar loss and takes one AdamW step. Returns the per-step
    losses. ``train_classifier`` and ``clip.train_clip`` are this loop with their own losses.
    """
    _check_positive_int(steps=steps, batch_size=batch_size, n_examples=n_examples)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}; try 3e-3.")
    if not callable(batch_loss):
        raise ValueError("batch_loss must be a function of a 1-d index tensor that returns a scalar loss.")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    b = min(batch_size, n_examples)
    for _ in range(steps):
        if replacement:
            idx = torch.randint(0, n_examples, (b,), generator=gen)
        else:
            idx = torch.randperm(n_examples, generator=gen)[:b]
        loss = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                     batch_size: int, lr: float = 3e-3, seed: int = 0,
                     weight_decay: float = 0.0) -> list[float]:
    """Train with AdamW on seeded random mini-batches; return the per-step cross-entropy losses.

    ``minibatch_train`` checks ``steps``, ``batch_size`` and ``lr``; the data are checked here."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples, got {x.shape[0]} "
                         f"and {y.shape[0]}.")
    device = next(model.parameters()).device

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))

    return minibatch_train(model, batch_loss, x.shape[0], steps, batch_size, lr=lr, seed=seed,
                           weight_decay=weight_decay, replacement=True)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of examples whose arg-max logit equals the label (model in eval mode)."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples, got {x.shape[0]} "
                         f"and {y.shape[0]}.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i:i + batch_size].to(device)).argmax(dim=-1).cpu()
        correct += (pred == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / x.shape[0]
