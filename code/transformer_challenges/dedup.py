"""Exact and near-duplicate detection: shingles, MinHash signatures, LSH banding.

Used by the chapter "Data and scaling laws" (``chapters/07-data``, page on data quality).

A small own implementation of Broder's MinHash (1997) with the banding index used for
near-duplicate removal by Lee et al. (2022), rather than a dependency: it is ~100 lines, uses
only NumPy and ``hashlib`` (so signatures are identical across runs and machines, unlike
Python's salted ``hash``), and every step is visible in the chapter. The well-kept PyPI package
``datasketch`` implements the same algorithm for production-sized corpora.

* ``shingles(text, k)`` -> the set of k-grams (characters or words) of a normalised text.
* ``jaccard(a, b)`` -> exact |a & b| / |a | b|.
* ``MinHasher(num_perm)`` -> signatures whose per-slot agreement rate estimates Jaccard similarity.
* ``LSHIndex(bands, rows)`` -> candidate pairs: documents that agree on all rows of >= 1 band.
* ``exact_duplicate_groups`` and ``near_duplicate_pairs`` put these together.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from itertools import combinations
from typing import Iterable, Sequence

import numpy as np

__all__ = ["normalise", "shingles", "jaccard", "MinHasher", "LSHIndex", "lsh_probability",
           "exact_duplicate_groups", "near_duplicate_pairs"]

_PRIME = (1 << 31) - 1  # Mersenne prime modulus: a*x + b < 2^62 + 2^31, so uint64 never overflows


def normalise(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace: the text duplicates are compared on."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}; decode bytes first.")
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def shingles(text: str, k: int = 5, unit: str = "char") -> set[str]:
    """The set of k-shingles of the normalised text: k characters (``unit="char"``) or k words."""
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}; 5 characters or 3 words are common.")
    if unit not in ("char", "word"):
        raise ValueError(f"unit={unit!r} is unknown; use 'char' or 'word'.")
    t = normalise(text)
    items: Sequence[str] = t if unit == "char" else t.split(" ")
    if len(items) < k:
        return {" ".join(items) if unit == "word" else t} if t else set()
    sep = "" if unit == "char" else " "
    return {sep.join(items[i:i + k]) for i in range(len(items) - k + 1)}


def jaccard(a: Iterable, b: Iterable) -> float:
    """Exact Jaccard similarity |a & b| / |a | b| of two sets (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash31(item: str) -> int:
    """Deterministic hash of a shingle into [0, 2^31 - 1) (blake2b, not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest(), "little") % _PRIME


class MinHasher:
    """MinHash with ``num_perm`` universal hash functions h_i(x) = (a_i x + b_i) mod (2^31 - 1).

    For each h_i the signature keeps min over shingles; P[two signatures agree in slot i] equals
    the Jaccard similarity, so the agreement rate over ``num_perm`` slots estimates it with
    standard error sqrt(J (1 - J) / num_perm).
    """

    def __init__(self, num_perm: int = 128, seed: int = 0):
        if not isinstance(num_perm, int) or num_perm <= 0:
            raise ValueError(f"num_perm must be a positive int, got {num_perm!r}; try 128.")
        self.num_perm = num_perm
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)[:, None]
        self.b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)[:, None]

    def signature(self, items: Iterable[str]) -> np.ndarray:
        """MinHash signature (``num_perm`` uint64 values) of a set of shingles."""
        hashes = np.array(sorted({_hash31(s) for s in items}), dtype=np.uint64)
        if hashes.size == 0:
            raise ValueError("cannot sign an empty shingle set; the text is shorter than one "
                             "shingle (use a smaller k) or empty (drop it).")
        return ((self.a * hashes[None, :] + self.b) % np.uint64(_PRIME)).min(axis=1)

    @staticmethod
    def estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        """Estimated Jaccard similarity: the fraction of slots where two signatures agree."""
        if sig_a.shape != sig_b.shape:
            raise ValueError(f"signatures have shapes {sig_a.shape} and {sig_b.shape}; "
                             "sign both with the same MinHasher.")
        return float(np.mean(sig_a == sig_b))


def lsh_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P[a pair of Jaccard similarity s becomes an LSH candidate] = 1 - (1 - s^rows)^bands."""
    if bands <= 0 or rows <= 0:
        raise ValueError(f"bands and rows must be positive, got {bands}, {rows}.")
    s = np.asarray(similarity, dtype=float)
    if np.any((s < 0) | (s > 1)):
        raise ValueError("similarity must lie in [0, 1].")
    return 1 - (1 - s ** rows) ** bands


class LSHIndex:
    """Banding index: split signatures into ``bands`` bands of ``rows`` slots; documents whose
    signatures agree on every slot of at least one band share a bucket and become candidates."""

    def __init__(self, bands: int, rows: int):
        if not isinstance(bands, int) or not isinstance(rows, int) or bands <= 0 or rows <= 0:
            raise ValueError(f"bands and rows must be positive ints, got {bands!r}, {rows!r}; "
                             "bands * rows must equal the MinHasher's num_perm.")
        self.bands, self.rows = bands, rows
        self.buckets: list[dict[bytes, list]] = [defaultdict(list) for _ in range(bands)]

    def insert(self, key, sig: np.ndarray) -> None:
        """Add a document's signature under ``key``."""
        if sig.shape != (self.bands * self.rows,):
            raise ValueError(f"signature has {sig.shape[0]} slots but the index expects bands*rows = "
                             f"{self.bands * self.rows}; build MinHasher(num_perm=bands*rows).")
        for band in range(self.bands):
            self.buckets[band][sig[band * self.rows:(band + 1) * self.rows].tobytes()].append(key)

    def candidate_pairs(self) -> set[tuple]:
        """All pairs of keys that share a bucket in at least one band (sorted within each pair)."""
        pairs = set()
        for table in self.buckets:
            for keys in table.values():
                pairs.update(tuple(sorted(p)) for p in combinations(keys, 2))
        return pairs


def exact_duplicate_groups(docs: Sequence[str]) -> list[list[int]]:
    """Indices of documents whose normalised texts are identical (groups of size >= 2)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        groups[hashlib.sha1(normalise(d).encode("utf-8")).hexdigest()].append(i)
    return sorted(g for g in groups.values() if len(g) > 1)


def near_duplicate_pairs(docs: Sequence[str], threshold: float = 0.8, k: int = 5, bands: int = 16,
                         rows: int = 8, seed: int = 0, verify: bool = True) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs (i, j, similarity) with MinHash + LSH, optionally verified exactly.

    Candidates come from the LSH index; with ``verify`` each candidate's exact Jaccard similarity
    of k-character shingles is computed and kept if >= ``threshold`` (otherwise the MinHash estimate
    is used). Returns pairs sorted by index.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}; 0.8 is a common choice.")
    sh = [shingles(d, k) for d in docs]
    hasher = MinHasher(bands * rows, seed=seed)
    index = LSHIndex(bands, rows)
    sigs = []
    for i, s in enumerate(sh):
        sigs.append(hasher.signature(s))
        index.insert(i, sigs[-1])
    out = []
    for i, j in sorted(index.candidate_pairs()):
        sim = jaccard(sh[i], sh[j]) if verify else MinHasher.estimate(sigs[i], sigs[j])
        if sim >= threshold:
            out.append((i, j, sim))
    return out
