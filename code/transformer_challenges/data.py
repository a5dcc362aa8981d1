"""Data the book makes itself, so every chapter runs offline.

``toy_corpus`` writes English-like sentences from a small seeded grammar (nouns, verbs,
adjectives, prepositional phrases, subject-verb agreement). It is the "shipped text" of the
book: Chapter 1 trains a character-level GPT on it, later chapters reuse it for probes and
scaling studies. ``CharTokenizer`` and ``random_batch`` turn it into training batches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

_DET = ["the", "a", "every", "one", "that"]
_ADJ = ["small", "tall", "quick", "quiet", "bright", "heavy", "green", "clever", "lazy", "brave"]
_NOUN_SG = ["fox", "dog", "river", "teacher", "robot", "garden", "bird", "child", "engine", "lamp",
            "sailor", "window"]
_NOUN_PL = ["foxes", "dogs", "rivers", "teachers", "robots", "gardens", "birds", "children",
            "engines", "lamps", "sailors", "windows"]
_VERB_SG = ["sees", "follows", "paints", "finds", "likes", "watches", "carries", "hears"]
_VERB_PL = ["see", "follow", "paint", "find", "like", "watch", "carry", "hear"]
_VERB_INTR_SG = ["sleeps", "sings", "waits", "runs", "shines", "laughs"]
_VERB_INTR_PL = ["sleep", "sing", "wait", "run", "shine", "laugh"]
_PREP = ["near", "under", "behind", "beside", "over"]
_ADV = ["slowly", "today", "again", "at night", "in silence"]


def _noun_phrase(rng: random.Random, plural: bool) -> str:
    det = "the" if plural and rng.random() < 0.5 else ("some" if plural else rng.choice(_DET))
    words = [det]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN_PL if plural else _NOUN_SG))
    if rng.random() < 0.25:
        words += [rng.choice(_PREP), "the", rng.choice(_NOUN_SG)]
    return " ".join(words)


def _sentence(rng: random.Random) -> str:
    plural = rng.random() < 0.4
    subject = _noun_phrase(rng, plural)
    if rng.random() < 0.6:
        verb = rng.choice(_VERB_PL if plural else _VERB_SG)
        obj = _noun_phrase(rng, rng.random() < 0.4)
        core = f"{subject} {verb} {obj}"
    else:
        verb = rng.choice(_VERB_INTR_PL if plural else _VERB_INTR_SG)
        core = f"{subject} {verb}"
    if rng.random() < 0.3:
        core += " " + rng.choice(_ADV)
    return core + "."


def toy_corpus(n_sentences: int = 2000, seed: int = 0) -> str:
    """Return ``n_sentences`` grammar-generated sentences, one per line (deterministic in ``seed``)."""
    if not isinstance(n_sentences, int) or n_sentences <= 0:
        raise ValueError(f"n_sentences must be a positive int, got {n_sentences!r}; try 2000.")
    rng = random.Random(seed)
    return "\n".join(_sentence(rng) for _ in range(n_sentences)) + "\n"


@dataclass
class CharTokenizer:
    """Character-level tokenizer: one id per distinct character of the text it was built from."""

    chars: list[str]

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Build the vocabulary from the characters of ``text`` (sorted, so it is deterministic)."""
        if not text:
            raise ValueError("cannot build a tokenizer from empty text; pass the training corpus.")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Map text to a 1-D ``torch.long`` tensor of ids."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(
                f"characters {unknown!r} are not in the vocabulary; build the tokenizer from a "
                "text that contains them."
            )
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        """Map a sequence of ids back to text."""
        return "".join(self.chars[int(i)] for i in ids)


def random_batch(tokens: torch.Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` windows of ``seq_len`` tokens; return inputs and next-token targets."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}; flatten it first.")
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}.")
    if tokens.numel() < seq_len + 1:
        raise ValueError(
            f"need at least seq_len + 1 = {seq_len + 1} tokens, got {tokens.numel()}; "
            "use a shorter seq_len or more text."
        )
    starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len)
    x = tokens[starts[:, None] + offsets]
    y = tokens[starts[:, None] + offsets + 1]
    return x, y
