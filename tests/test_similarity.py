"""The shared similarity interface on the real offline MiniLM model."""

from __future__ import annotations

import numpy as np
import pytest

from mmboundary.models.similarity import default_similarity, load_similarity


@pytest.fixture(scope="module")
def sim():
    return default_similarity()


def test_paraphrase_scores_above_unrelated(sim):
    a = ["The cake has the number 30 on it."]
    b = ["There is a 30 written on the cake.", "A dog runs across the beach."]
    scores = sim.pairwise(a, b)
    assert scores.shape == (1, 2)
    assert scores[0, 0] > 0.6 > 0.2 > scores[0, 1]


def test_pairwise_and_paired_agree_and_are_bounded(sim):
    a = ["red circle", "two squares", "the answer is blue"]
    b = ["a red circle", "three triangles", "blue"]
    matrix = sim.pairwise(a, b)
    assert np.allclose(np.diag(matrix), sim.paired(a, b), atol=1e-6)
    assert matrix.min() >= 0.0 and matrix.max() <= 1.0
    assert sim.pairwise(["same text"], ["same text"])[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_empty_inputs_and_length_mismatch(sim):
    assert sim.pairwise([], ["x"]).shape == (0, 1)
    assert sim.paired([], []).shape == (0,)
    with pytest.raises(ValueError, match="equal lengths"):
        sim.paired(["a"], ["b", "c"])


def test_load_similarity_default_and_missing_path(tmp_path):
    assert load_similarity(None) is default_similarity()
    with pytest.raises(FileNotFoundError, match="no hub downloads"):
        load_similarity(tmp_path / "nope")


def test_cache_eviction_never_drops_texts_of_the_current_call(sim):
    small = type(sim).__new__(type(sim))
    small.__dict__.update(sim.__dict__)
    small._cache = type(sim._cache)()
    small.cache_size = 3
    first = small.encode(["a red circle", "two squares"])
    both = small.encode(["a red circle", "blue", "green", "yellow", "two squares"])
    assert both.shape[0] == 5 and len(small._cache) == 3
    assert np.allclose(both[0], first[0], atol=1e-5) and np.allclose(both[4], first[1], atol=1e-5)
