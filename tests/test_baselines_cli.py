"""Baselines for any VLM: the scoring functions (SC / Multisample take an ``agree`` callable, the
constant baseline a value), the runner that generates each response kind once (cached with its
settings), `mmboundary baselines` writing predictions that `mmboundary evaluate` reads, and the
demo calling the same runner."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmboundary.data.schema import Response
from mmboundary.evaluation import baselines as B

METHODS = ("token-prob", "internal", "constant", "dpv", "dps", "sc", "multisample")


def response(text: str, sample_id: str = "s1", **meta: object) -> Response:
    return Response(sample_id=sample_id, text=text, meta=dict(meta))


def same_words(a: str, b: str) -> bool:
    return a.lower().split() == b.lower().split()


def test_self_consistency_counts_agreeing_samples_and_answers() -> None:
    greedy = [response("There is a red circle. So, the answer is 2.")]
    group = [[response("there is a RED circle. So, the answer is 2."),
              response("There is a blue square. So, the answer is 3."),
              response("There is a red circle. So, the answer is two."),
              response("", error="image: missing")]]
    [scored] = B.self_consistency(greedy, group, same_words)
    # the failed sample is left out: 3 samples; 2 hold the step; answers 2 / 3 / two -> 2 agree
    assert [s.expressed_confidence for s in scored.steps] == [pytest.approx(2 / 3),
                                                              pytest.approx(2 / 3)]
    never = B.self_consistency(greedy, group, lambda a, b: False)
    assert never[0].steps[0].expressed_confidence == 0.0


def test_multisample_averages_the_agreeing_steps_of_the_majority_answer() -> None:
    from mmboundary.text import StatementParser

    group = [[response("A red circle (confidence 0.6). So, the answer is 2 (confidence 0.8)."),
              response("a red circle (confidence 0.2). So, the answer is 2 (confidence 0.4)."),
              response("A blue square (confidence 0.9). So, the answer is 3 (confidence 0.9).")]]
    [rep] = B.multisample(group, StatementParser(mode="numeric"), same_words)
    values = [s.expressed_confidence for s in rep.steps]
    assert values == [pytest.approx(0.4), pytest.approx(0.6)]


def test_constant_and_its_fit() -> None:
    from mmboundary.shapesworld.scenes import make_samples

    samples = make_samples(4, seed=0, split="train")
    answers = [s.reference.answer for s in samples]
    responses = [response(f"So, the answer is {answers[0]}.", samples[0].id),
                 response("So, the answer is nothing.", samples[1].id),
                 response("", samples[2].id, error="generate: boom")]
    assert B.fit_constant(samples, responses) == 0.5  # the failed one is left out
    with pytest.raises(ValueError, match="response 0 .*'nope'"):
        B.fit_constant(samples, [response("x", "nope")])
    steps = B.constant_confidence(responses[:1], 0.3)[0].steps
    assert [s.expressed_confidence for s in steps] == [0.3]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        B.constant_confidence(responses, 1.5)


def test_token_probability_keeps_failed_generations_as_they_are() -> None:
    failed = response("", error="image: missing")
    assert B.token_probability([failed]) == [failed]
    with pytest.raises(ValueError, match="s1: token_probability needs"):
        B.token_probability([response("No stats.")])


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """A tiny Qwen2-VL, 3 ShapesWorld test samples and an (LNLP, MTE) calibrator fitted on
    synthetic raw scores."""
    from mmboundary.confidence import ConfidenceCalibrator
    from mmboundary.shapesworld.scenes import write_split

    root = tmp_path_factory.mktemp("baselines")
    rng = np.random.default_rng(0)
    calibrator = ConfidenceCalibrator(estimators=("lnlp", "mte")).fit(
        [{"lnlp": float(a), "mte": float(b)} for a, b in rng.uniform(1, 9, size=(40, 2))])
    calibrator.save(root / "calibrator.json")
    return {"model": tiny_model_dir("qwen2-vl"), "root": root,
            "data": write_split(root / "world", 3, "test", seed=0),
            "calibrator": root / "calibrator.json"}


def run_cli(*args: str) -> str:
    from mmboundary.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def read(path: Path) -> list[Response]:
    return [Response.model_validate_json(line) for line in path.read_text().splitlines()]


def test_cli_writes_every_baseline_and_evaluate_reads_them(world) -> None:
    out = world["root"] / "preds"
    cache = world["root"] / "cache"
    run_cli("baselines", "--model", world["model"], "--data", world["data"], "--dataset",
            "shapes", "--method", ",".join(METHODS), "--out", out / "{method}.jsonl",
            "--cache", cache, "--calibrator", world["calibrator"], "--value", "0.25",
            "--k", "2", "--max-new-tokens", "8", "--device", "cpu", "--dtype", "float32")
    for method in METHODS:
        rows = read(out / f"{method}.jsonl")
        assert [r.sample_id for r in rows] == [f"shapes-test-{i:06d}" for i in range(3)], method
        assert all(r.steps for r in rows), method
    assert {s.expressed_confidence for r in read(out / "constant.jsonl") for s in r.steps} == {0.25}
    for method in ("token-prob", "internal", "sc"):
        values = [s.expressed_confidence for r in read(out / f"{method}.jsonl") for s in r.steps]
        assert all(v is not None and 0.0 <= v <= 1.0 for v in values), (method, values)
    # one generation per response kind, shared by the methods, kept with its settings
    assert sorted(p.name for p in cache.glob("*.jsonl")) == [
        "dps.jsonl", "dpv.jsonl", "sampled2-dps.jsonl", "sampled2.jsonl", "vanilla.jsonl"]
    assert len(read(cache / "sampled2.jsonl")) == 6
    plan = json.loads((cache / "vanilla.settings.json").read_text())
    assert plan["max_new_tokens"] == 8 and plan["num_samples"] == 1
    run_cli("evaluate", "--predictions", out / "sc.jsonl", "--data", world["data"],
            "--dataset", "shapes", "--system", "SC", "--out", world["root"] / "sc.json",
            "--bootstrap", "0")
    metrics = json.loads((world["root"] / "sc.json").read_text())
    assert metrics["counts"]["evaluated"] == 3


def test_runner_reuses_a_cache_only_with_the_same_settings(world) -> None:
    from mmboundary.evaluation.baseline_runs import BaselineRunner, BaselineSettings
    from mmboundary.shapesworld.scenes import load_image, read_split

    samples = read_split(world["data"])
    cache = world["root"] / "cache-settings"
    first = BaselineRunner(world["model"], samples, load_image,
                           BaselineSettings(max_new_tokens=4), cache_dir=cache, device="cpu")
    texts = [r.text for r in first.greedy()]
    stamp = (cache / "vanilla.jsonl").stat().st_mtime_ns
    again = BaselineRunner(world["model"], samples, load_image,
                           BaselineSettings(max_new_tokens=4), cache_dir=cache, device="cpu")
    assert [r.text for r in again.greedy()] == texts
    assert again._model == world["model"]  # served from the cache: the model was never loaded
    assert (cache / "vanilla.jsonl").stat().st_mtime_ns == stamp
    longer = BaselineRunner(world["model"], samples, load_image,
                            BaselineSettings(max_new_tokens=6), cache_dir=cache, device="cpu")
    longer.greedy()
    assert json.loads((cache / "vanilla.settings.json").read_text())["max_new_tokens"] == 6
    # the same folder with new weights (a model retrained in place) is not served the old cache
    weights = sorted(Path(world["model"]).glob("*.safetensors"))[0]
    info = weights.stat()
    stamp = (cache / "vanilla.jsonl").stat().st_mtime_ns
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    retrained = BaselineRunner(world["model"], samples, load_image,
                               BaselineSettings(max_new_tokens=6), cache_dir=cache, device="cpu")
    retrained.greedy()
    assert retrained._model != world["model"]  # loaded: the cache was not reused
    assert (cache / "vanilla.jsonl").stat().st_mtime_ns != stamp


def test_cli_names_what_a_method_needs(world) -> None:
    from mmboundary.cli import app

    base = ["baselines", "--model", str(world["model"]), "--data", str(world["data"]),
            "--dataset", "shapes", "--device", "cpu"]
    cases = [(["--method", "internal", "--out", "x.jsonl"], "--calibrator"),
             (["--method", "constant", "--out", "x.jsonl"], "--value"),
             (["--method", "sc,dps", "--out", "x.jsonl"], "{method}"),
             (["--method", "magic", "--out", "x.jsonl"], "magic")]
    for extra, needle in cases:
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code != 0 and needle in result.output, (extra, result.output)


def test_the_demo_runs_its_baselines_through_the_same_runner() -> None:
    from mmboundary.demo import systems
    from mmboundary.evaluation.baseline_runs import METHODS as RUNNER_METHODS

    source = inspect.getsource(systems)
    assert "BaselineRunner" in source and "generate_responses" not in source
    assert set(systems.BASELINES.values()) <= set(RUNNER_METHODS)
