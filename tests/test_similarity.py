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


def test_clear_cache_and_one_encode_pass_per_call(sim, monkeypatch):
    calls: list[list[str]] = []
    embed = sim._embed
    monkeypatch.setattr(sim, "_embed", lambda texts: calls.append(list(texts)) or embed(texts))
    sim.clear_cache()
    a = ["red circle", "red circle", "two squares"]
    b = ["a red circle", "red circle", "blue"]
    sim.paired(a, b)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(a + b))  # each text once
    sim.paired(a, b)
    assert len(calls) == 1  # all cached
    sim.clear_cache()
    sim.pairwise(a, b)
    assert len(calls) == 2 and len(calls[1]) == len(set(a + b))


def test_batched_paired_equals_one_pair_at_a_time(sim):
    a = ["The image shows two red circles.", "There are three shapes.", "So, the answer is 2."]
    b = ["The image shows two circles.", "There are shapes.", "So, the is 2."]
    sim.clear_cache()
    batched = sim.paired(a, b)
    single = []
    for x, y in zip(a, b, strict=True):
        sim.clear_cache()
        single.append(sim.paired([x], [y])[0])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_bfloat16_precision_is_opt_in_and_close_to_float32(sim):
    assert sim.precision == "float32"
    fast = default_similarity("bfloat16")
    assert fast is not sim and fast.precision == "bfloat16"
    a = ["The image shows two red circles.", "There are three shapes.", "a red circle"]
    b = ["The image shows two circles.", "There are shapes.", "a dog on a beach"]
    exact, approx = sim.paired(a, b), fast.paired(a, b)
    assert approx.dtype == np.float32
    np.testing.assert_allclose(approx, exact, atol=2e-3)
    assert np.allclose(np.linalg.norm(fast.encode(a), axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="precision"):
        load_similarity(None, precision="int8")
