"""Unit tests for transformer_challenges.dedup: shingles, MinHash vs exact Jaccard, LSH."""
import numpy as np
import pytest

from transformer_challenges import dedup as dd

BASE = ("the quick brown fox jumps over the lazy dog near the quiet river while a brave sailor "
        "watches the bright lamp in the window of the old garden")


def _mutate(text: str, n_changes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in rng.choice(len(words), n_changes, replace=False):
        words[i] = "zz" + words[i][::-1]
    return " ".join(words)


def test_normalise_and_shingles():
    assert dd.normalise("  The Fox,\nRUNS!  ") == "the fox runs"
    assert dd.shingles("abcd", k=2) == {"ab", "bc", "cd"}
    assert dd.shingles("a b c d", k=3, unit="word") == {"a b c", "b c d"}
    assert dd.shingles("ab", k=5) == {"ab"}          # shorter than k: the whole text
    assert dd.shingles("", k=5) == set()


def test_exact_jaccard():
    assert dd.jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert dd.jaccard(set(), set()) == 1.0
    assert dd.jaccard({1}, {2}) == 0.0


def test_minhash_estimates_exact_jaccard():
    hasher = dd.MinHasher(num_perm=256, seed=0)
    for n_changes in (0, 2, 5, 10, 20):
        a, b = dd.shingles(BASE), dd.shingles(_mutate(BASE, n_changes, seed=n_changes))
        j = dd.jaccard(a, b)
        est = dd.MinHasher.estimate(hasher.signature(a), hasher.signature(b))
        se = np.sqrt(max(j * (1 - j), 1e-4) / 256)
        assert abs(est - j) < 4 * se, (n_changes, j, est)
    assert dd.MinHasher.estimate(hasher.signature(dd.shingles(BASE)),
                                 hasher.signature(dd.shingles(BASE.upper()))) == 1.0


def test_minhash_is_deterministic_and_seeded():
    s = dd.shingles(BASE)
    assert np.array_equal(dd.MinHasher(64, seed=1).signature(s), dd.MinHasher(64, seed=1).signature(s))
    assert not np.array_equal(dd.MinHasher(64, seed=1).signature(s), dd.MinHasher(64, seed=2).signature(s))


def test_lsh_probability_s_curve():
    assert dd.lsh_probability(1.0, 16, 8) == pytest.approx(1.0)
    assert dd.lsh_probability(0.0, 16, 8) == pytest.approx(0.0)
    # threshold of the S-curve near (1/b)^(1/r)
    t = (1 / 16) ** (1 / 8)
    assert 0.4 < dd.lsh_probability(t, 16, 8) < 0.8
    assert dd.lsh_probability(0.9, 16, 8) > 0.99 and dd.lsh_probability(0.3, 16, 8) < 0.01


def test_near_duplicate_pairs_and_exact_groups():
    docs = [BASE, _mutate(BASE, 1, seed=0), "an entirely different sentence about robots and engines",
            BASE.upper() + "!", "yet another unrelated line of text with other words in it"]
    assert dd.exact_duplicate_groups(docs) == [[0, 3]]
    pairs = dd.near_duplicate_pairs(docs, threshold=0.7)
    found = {(i, j) for i, j, _ in pairs}
    assert {(0, 1), (0, 3), (1, 3)} <= found
    assert all(2 not in p[:2] and 4 not in p[:2] for p in pairs)
    for i, j, sim in pairs:
        assert sim == pytest.approx(dd.jaccard(dd.shingles(docs[i]), dd.shingles(docs[j])))


def test_lsh_index_candidates():
    hasher = dd.MinHasher(32, seed=0)
    index = dd.LSHIndex(bands=8, rows=4)
    index.insert("a", hasher.signature(dd.shingles(BASE)))
    index.insert("b", hasher.signature(dd.shingles(BASE + " again")))
    index.insert("c", hasher.signature(dd.shingles("robots carry lamps under the bright moon")))
    assert ("a", "b") in index.candidate_pairs()
    assert ("a", "c") not in index.candidate_pairs()


@pytest.mark.parametrize("call", [
    lambda: dd.normalise(b"bytes"),
    lambda: dd.shingles("text", k=0),
    lambda: dd.shingles("text", unit="byte"),
    lambda: dd.MinHasher(num_perm=0),
    lambda: dd.MinHasher(8).signature(set()),
    lambda: dd.MinHasher.estimate(np.zeros(4), np.zeros(5)),
    lambda: dd.LSHIndex(0, 4),
    lambda: dd.LSHIndex(2, 4).insert("x", np.zeros(7, dtype=np.uint64)),
    lambda: dd.lsh_probability(1.5, 4, 4),
    lambda: dd.lsh_probability(0.5, 0, 4),
    lambda: dd.near_duplicate_pairs(["a b c"], threshold=0),
])
def test_value_errors(call):
    with pytest.raises(ValueError):
        call()
