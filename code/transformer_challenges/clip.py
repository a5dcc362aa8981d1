"""CLIP-style contrastive image-text learning at toy scale, for the "beyond language" chapter.

Used by ``chapters/09-beyond-language/vit-and-clip.md``.

``digit_captions`` writes a caption for each digit image from its label and its measured stroke
weight; ``WordTokenizer`` turns captions into padded id tensors; ``TextEncoder`` is a small
non-causal Transformer with masked mean pooling; ``image_encoder`` is a ``vision.TinyViT`` whose
head outputs an embedding instead of class logits. ``clip_loss`` is the symmetric InfoNCE loss of
Radford et al. (2021); ``train_clip`` trains both encoders with it; ``retrieval_accuracy`` reports
image->text and text->image top-k accuracy.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import Block, check_heads
from .vision import TinyViT, minibatch_train

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STYLES = ("thin", "bold")
TEMPLATES = (
    "a {style} {word}",
    "the digit {num} , {style} strokes",
    "a handwritten {word} in {style} strokes",
    "{num} written {style}",
    "a {word} drawn with {style} lines",
)
# Held-out wordings: every word occurs in TEMPLATES, no caption written with them does (a caption
# of TEMPLATES never equals one of these), so they test the text encoder on sentences it never saw.
HELD_OUT_TEMPLATES = (
    "a {style} {num}",
    "the {style} digit {word}",
    "{word} , {style} strokes",
    "a {word} in {style} lines",
)


def _check_positive_int(**kwargs) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def stroke_style(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0 ("thin") or 1 ("bold") per image: total ink above the median of images with the same label."""
    if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}.")
    ink = images.flatten(1).sum(1)
    style = torch.zeros_like(labels)
    for c in labels.unique():
        sel = labels == c
        style[sel] = (ink[sel] > ink[sel].median()).long()
    return style


def digit_captions(labels: torch.Tensor, styles: torch.Tensor, seed: int = 0,
                   templates: Sequence[str] = TEMPLATES) -> list[str]:
    """One caption per image, e.g. "a bold seven" or "the digit 7 , thin strokes" (seeded template).

    ``templates`` are format strings with the fields ``{style}``, ``{word}`` and/or ``{num}``; the
    default is ``TEMPLATES`` (the training wordings), ``HELD_OUT_TEMPLATES`` gives unseen ones.
    """
    if labels.shape != styles.shape or labels.dim() != 1:
        raise ValueError(f"labels and styles must be 1-d and the same shape, got {tuple(labels.shape)} "
                         f"and {tuple(styles.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels must be digits 0..9.")
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError("templates must be a non-empty list of format strings; wrap a single one in a list.")
    rng = random.Random(seed)
    out = []
    for y, s in zip(labels.tolist(), styles.tolist()):
        template = rng.choice(templates)
        out.append(template.format(style=STYLES[s], word=NUMBER_WORDS[y], num=str(y)))
    return out


class WordTokenizer:
    """Whitespace tokenizer with id 0 reserved for padding and 1 for unknown words."""

    PAD, UNK = 0, 1

    def __init__(self, words: Sequence[str]):
        self.itos = ["<pad>", "<unk>"] + sorted(set(words))
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "WordTokenizer":
        """Build the vocabulary from a list of texts."""
        return cls([w for t in texts for w in t.split()])

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and unknown included."""
        return len(self.itos)

    def encode(self, texts: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """(N, T) ids padded with 0; T is the longest text (or ``max_len``, longer texts are cut)."""
        if isinstance(texts, str):
            raise ValueError("encode takes a list of texts; wrap a single text in a list.")
        ids = [[self.stoi.get(w, self.UNK) for w in t.split()] for t in texts]
        T = max((len(i) for i in ids), default=1) if max_len is None else max_len
        out = torch.full((len(ids), max(T, 1)), self.PAD, dtype=torch.long)
        for r, row in enumerate(ids):
            row = row[:T]
            out[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor) -> str:
        """Words of a 1-d id tensor, padding dropped."""
        return " ".join(self.itos[i] for i in ids.tolist() if i != self.PAD)


class TextEncoder(nn.Module):
    """Token + learned position embeddings -> non-causal Blocks -> LN -> masked mean -> linear."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2, max_len: int = 16):
        super().__init__()
        _check_positive_int(vocab_size=vocab_size, embed_dim=embed_dim, n_layers=n_layers, max_len=max_len)
        check_heads(d_model, n_heads)
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model, padding_idx=WordTokenizer.PAD)
        self.pos_emb = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, causal=False) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, embed_dim). Padding positions are left out of the mean."""
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must be (N, T) with T <= max_len={self.max_len}, got {tuple(ids.shape)}; "
                             "raise max_len or cut the texts.")
        x = self.tok_emb(ids) + self.pos_emb[:ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        keep = (ids != WordTokenizer.PAD).unsqueeze(-1).to(x.dtype)
        pooled = (self.ln_f(x) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.proj(pooled)


def image_encoder(embed_dim: int = 32, **vit_kwargs) -> TinyViT:
    """A ``vision.TinyViT`` whose head outputs a ``embed_dim`` embedding instead of class logits."""
    _check_positive_int(embed_dim=embed_dim)
    if "n_classes" in vit_kwargs:
        raise ValueError("n_classes is set by embed_dim for an image encoder; leave it out.")
    return TinyViT(n_classes=embed_dim, **vit_kwargs)


class CLIPModel(nn.Module):
    """An image encoder, a text encoder and a learnable temperature (logit scale, init 1/0.07)."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, init_temperature: float = 0.07,
                 max_scale: float = 100.0):
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}; CLIP uses 0.07.")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_scale = max_scale

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(log_scale), clipped at ``max_scale`` as in CLIP."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings."""
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings."""
        return F.normalize(self.text_encoder(ids), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The symmetric contrastive loss of a batch of matching (image, text) pairs."""
        return clip_loss(self.encode_images(images), self.encode_texts(ids), self.logit_scale)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
              ) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the image->text and text->image cross-entropies over the batch.

    Row i of each input is a matching pair; logits = scale * normalize(I) @ normalize(T)^T and the
    target of row i is column i (Radford et al. 2021, Fig. 3).
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must both be (N, D) with the same shape, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}.")
    if torch.as_tensor(logit_scale).item() <= 0:
        raise ValueError(f"logit_scale must be > 0, got {float(logit_scale)}; CLIP starts at 1/0.07.")
    logits = logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_clip(model: CLIPModel, images: torch.Tensor, ids: torch.Tensor, steps: int, batch_size: int,
               lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Train both encoders and the temperature with AdamW on seeded mini-batches; return the losses."""
    _check_positive_int(steps=steps, batch_size=batch_size)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}; try 2e-3.")
    if images.shape[0] != ids.shape[0] or images.shape[0] < 2:
        raise ValueError(f"need the same number (at least 2) of images and texts, got {images.shape[0]} "
                         f"and {ids.shape[0]}.")

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return model(images[idx], ids[idx])

    # the shared loop of vision.minibatch_train; batches drawn without replacement (a repeated
    # pair in a batch would be its own false negative)
    return minibatch_train(model, batch_loss, images.shape[0], steps, batch_size, lr=lr, seed=seed,
                           weight_decay=0.0, replacement=False)


@torch.no_grad()
def retrieval_accuracy(image_emb: torch.Tensor, text_emb: torch.Tensor, image_keys: torch.Tensor | None = None,
                       text_keys: torch.Tensor | None = None, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k retrieval accuracy both ways: ``{"i2t@1": ..., "t2i@1": ..., ...}``.

    A query is a hit at k when one of its k most similar candidates has the query's key. Keys
    default to the row index (exact-pair retrieval); pass the caption's meaning (e.g. digit and
    style) when several pairs share it, so that an equally correct caption is not counted wrong.
    """
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D), got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}.")
    image_keys = torch.arange(image_emb.shape[0]) if image_keys is None else image_keys
    text_keys = torch.arange(text_emb.shape[0]) if text_keys is None else text_keys
    if image_keys.shape != (image_emb.shape[0],) or text_keys.shape != (text_emb.shape[0],):
        raise ValueError("need one key per image and one per text.")
    for k in ks:
        if not isinstance(k, int) or k <= 0 or k > min(image_emb.shape[0], text_emb.shape[0]):
            raise ValueError(f"k={k!r} must be a positive integer no larger than the number of candidates.")
    sim = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T   # (N images, M texts)
    out = {}
    for k in ks:
        top_t = sim.topk(k, dim=1).indices                                    # texts for each image
        out[f"i2t@{k}"] = (text_keys[top_t] == image_keys[:, None]).any(1).float().mean().item()
        top_i = sim.topk(k, dim=0).indices.T                                  # images for each text
        out[f"t2i@{k}"] = (image_keys[top_i] == text_keys[:, None]).any(1).float().mean().item()
    return out
