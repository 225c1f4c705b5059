"""ShapesWorld: determinism, split disjointness, answers recomputed from the scene, chain format,
rendering, and the Sample JSON the loaders read."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.data.schema import Sample, extract_answer
from mmboundary.shapesworld.scenes import (
    COLORS,
    NUMBER_WORDS,
    WorldConfig,
    describe,
    load_image,
    make_sample,
    make_samples,
    read_split,
    render,
    scene_split,
    where,
    write_split,
)
from mmboundary.text.matching import judge_answer, normalize_vqa_answer


@pytest.fixture(scope="module")
def test_samples() -> list[Sample]:
    return make_samples(400, seed=0, split="test")


def _recomputed_answer(sample: Sample) -> str:
    """The answer recomputed from the scene and the question text alone (independent of the
    generator's bookkeeping)."""
    objs, q = sample.meta["scene"], sample.question
    kind = sample.meta["kind"]
    if kind == "count":
        if q == "How many shapes are there?":
            return str(len(objs))
        word = q.split()[2]  # "How many red shapes ..." / "How many circles ..."
        if word in COLORS:
            return str(sum(o["color"] == word for o in objs))
        return str(sum(o["shape"] + "s" == word for o in objs))
    if kind == "color":
        shape = q.removeprefix("What color is the ").removesuffix("?")
        (obj,) = [o for o in objs if o["shape"] == shape]
        return obj["color"]
    if kind == "exist":
        color, shape = q.split()[3:5]
        return "yes" if any(o["color"] == color and o["shape"] == shape for o in objs) else "no"
    words = q.rstrip("?").split()
    a_name, b_name = tuple(words[2:4]), tuple(words[-2:])
    (a,) = [o for o in objs if (o["color"], o["shape"]) == a_name]
    (b,) = [o for o in objs if (o["color"], o["shape"]) == b_name]
    if "left" in q:
        return "left" if a["x"] < b["x"] else "right"
    return "above" if a["y"] < b["y"] else "below"


def test_same_seed_same_samples_and_different_seed_differs() -> None:
    a = [s.model_dump() for s in make_samples(50, seed=7, split="train")]
    b = [s.model_dump() for s in make_samples(50, seed=7, split="train")]
    c = [s.model_dump() for s in make_samples(50, seed=8, split="train")]
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) >= 45
    # a sample does not depend on how many were generated before it
    assert make_sample(42, "train", 7).model_dump() == a[42]


def test_ids_and_kinds_balanced(test_samples: list[Sample]) -> None:
    assert test_samples[123].id == "shapes-test-000123"
    assert all(s.dataset == "shapes" for s in test_samples)
    assert Counter(s.meta["kind"] for s in test_samples) == {
        "count": 100, "color": 100, "position": 100, "exist": 100}
    formats = Counter(s.meta["format"] for s in test_samples)
    assert 150 <= formats["mc"] <= 250  # mc_fraction 0.5, binomial sd 10


def test_splits_never_share_a_scene() -> None:
    scenes = {}
    for split in ("train", "validation", "test"):
        samples = make_samples(300, seed=0, split=split)
        assert all(scene_split(s.meta["scene"]) == split for s in samples)
        scenes[split] = {json.dumps(s.meta["scene"], sort_keys=True) for s in samples}
    assert not scenes["train"] & scenes["test"]
    assert not scenes["train"] & scenes["validation"]
    assert not scenes["validation"] & scenes["test"]


def test_answers_match_the_scene(test_samples: list[Sample]) -> None:
    for s in test_samples:
        assert _recomputed_answer(s) == s.gold_answer, s.id
        if s.choices is not None:
            assert s.choices[s.correct_choice_idx] == s.answers[0]
            assert len(set(s.choices)) == len(s.choices) >= 2
        if s.meta["kind"] == "count" and s.choices is None:
            assert s.answers == [s.gold_answer, NUMBER_WORDS[int(s.gold_answer)]]


def test_chain_format(test_samples: list[Sample]) -> None:
    for s in test_samples:
        ref = s.reference
        assert ref is not None and ref.image_level and len(ref.reasoning_level) >= 2
        assert extract_answer(ref.reasoning_level[-1]) == s.gold_answer
        assert ref.answer == s.gold_answer
        assert all(step.endswith(".") for step in ref.steps)
        scene_facts = {describe(o, 64) for o in s.meta["scene"]}
        for step in ref.image_level:
            assert step in scene_facts or step.startswith("There is no "), (s.id, step)


def test_where_phrases() -> None:
    assert where({"x": 5, "y": 5}, 64) == "at the top left"
    assert where({"x": 32, "y": 32}, 64) == "in the middle"
    assert where({"x": 60, "y": 30}, 64) == "on the right"
    assert where({"x": 30, "y": 50}, 64) == "at the bottom"
    assert describe({"color": "red", "shape": "circle", "x": 5, "y": 30}, 64) == \
        "There is a red circle on the left."


def test_render_is_deterministic_and_draws_the_shapes(test_samples: list[Sample]) -> None:
    s = test_samples[0]
    a, b = np.asarray(render(s)), np.asarray(render(s))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    for obj in s.meta["scene"]:  # the centre pixel of a shape drawn last is its colour
        if obj is s.meta["scene"][-1]:
            centre = a[obj["y"], obj["x"]].astype(int)
            assert np.abs(centre - np.asarray(COLORS[obj["color"]])).max() <= 25 + 4 * 10
    # the background (far from every object) is light grey
    assert np.median(a) >= 200


def test_write_split_round_trip_and_loader(tmp_path) -> None:
    from mmboundary.data.loaders import load_annotated

    path = write_split(tmp_path, 12, "validation", seed=3)
    samples = read_split(path)
    assert [s.id for s in samples] == [f"shapes-validation-{i:06d}" for i in range(12)]
    for s in samples:
        assert np.array_equal(np.asarray(load_image(s)), np.asarray(render(s)))
    loaded = load_annotated(path)
    assert not [p for p in loaded.problems if p.severity == "error"]
    assert [s.image for s in loaded.samples] == [s.image for s in samples]
    assert loaded.samples[5].reference == samples[5].reference


def test_answer_correct_letters_text_and_numbers(test_samples: list[Sample]) -> None:
    """ShapesWorld answers are judged by ``text.matching.judge_answer`` (no similarity model):
    the samples' ``answer_mode`` is "choice" (MC) or "exact" (open)."""

    def correct(sample: Sample, answer: str | None) -> bool:
        return judge_answer(sample, answer, None).score == 1.0

    mc = next(s for s in test_samples if s.choices and s.meta["kind"] == "color")
    assert mc.answer_mode == "choice"
    letter = "ABCD"[mc.correct_choice_idx]
    assert correct(mc, letter) and correct(mc, f"({letter})")
    assert correct(mc, f"{letter}. {mc.gold_answer}")
    assert correct(mc, mc.gold_answer.upper() + ".")
    wrong = next(c for c in mc.choices if c != mc.gold_answer)
    assert not correct(mc, wrong) and not correct(mc, None)
    count = next(s for s in test_samples if s.choices is None and s.meta["kind"] == "count")
    assert count.answer_mode == "exact"
    assert correct(count, NUMBER_WORDS[int(count.gold_answer)])
    assert correct(count, f"The {count.gold_answer}.")
    assert not correct(count, str(int(count.gold_answer) + 1))
    assert normalize_vqa_answer("The Red.") == "red" and normalize_vqa_answer("'three'") == "3"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 10_000), st.sampled_from(["train", "test"]))
def test_any_seed_gives_a_consistent_sample(seed: int, index: int, split: str) -> None:
    s = make_sample(index, split, seed)
    assert _recomputed_answer(s) == s.gold_answer
    assert 1 <= len(s.meta["scene"]) <= 5
    assert s.reference.answer == s.gold_answer


def test_config_validation_and_kinds() -> None:
    with pytest.raises(ValueError, match="kinds"):
        WorldConfig(kinds=("shape",))
    only = make_samples(8, seed=0, split="train", cfg=WorldConfig(kinds=("exist",)))
    assert {s.meta["kind"] for s in only} == {"exist"}


def test_speed_2000_samples() -> None:
    start = time.perf_counter()
    make_samples(2000, seed=1, split="train")
    assert time.perf_counter() - start < 10  # ~0.3 s idle; generous for a loaded machine
