"""The estimate pipeline end to end on tiny models: values, failures, resumption, shards, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmboundary.confidence import (
    EstimateConfig,
    SampleError,
    calibrator_path_for,
    estimate_dataset,
    estimate_steps,
    failed,
    merge_outputs,
)
from mmboundary.confidence.estimators import token_removal_variants, token_sar
from mmboundary.confidence.normalize import ConfidenceCalibrator
from mmboundary.data.io import read_responses
from mmboundary.data.schema import Response

N_SAMPLES = 8


@pytest.fixture(scope="module")
def env(tiny_model_dir, tmp_path_factory):
    import torch

    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.similarity import default_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import read_split, write_split

    torch.set_num_threads(1)
    data = write_split(tmp_path_factory.mktemp("shapes"), N_SAMPLES, "train")
    samples = read_split(data)
    # reference chains as responses: several steps each, one with a confidence statement
    responses = {s.id: " ".join(s.reference.steps) for s in samples}
    first = samples[0].reference.steps
    responses[samples[0].id] = " ".join([first[0][:-1] + ", with total certainty.", *first[1:]])
    return dict(vlm=VLM.from_pretrained(tiny_model_dir("llava"), device="cpu"),
                clip=ClipScorer.from_pretrained(tiny_model_dir("clip")),
                sim=default_similarity(), samples=samples, responses=responses, data=data,
                model_dir=tiny_model_dir("llava"), clip_dir=tiny_model_dir("clip"))


def _models(env):
    return dict(similarity=env["sim"], clip=env["clip"])


def test_estimate_steps_scores_content_tokens_from_one_pass(env):
    sample, text = env["samples"][0], env["responses"][env["samples"][0].id]
    resp = estimate_steps(env["vlm"], sample, text, **_models(env))
    tok = env["vlm"].tokenizer
    stats = resp.token_stats
    assert resp.text == text and len(resp.steps) == len(sample.reference.steps)
    step = resp.steps[0]
    assert step.statement == "with total certainty"
    span = slice(step.token_start, step.token_end)
    assert tok.decode(stats.token_ids[span]).strip() == step.content  # no statement tokens
    lp = np.array(stats.logprobs[span])
    assert step.raw_scores["lnlp"] == pytest.approx(math.exp(-lp.mean()))
    assert step.raw_scores["mte"] == pytest.approx(np.mean(stats.entropies[span]))
    # TokenSAR the naive way: one similarity call per removed token
    spans = [(a - step.start, b - step.start) for a, b in stats.offsets[span]]
    variants = token_removal_variants(step.content, spans)
    sims = [env["sim"].paired([step.content], [v])[0] for v in variants]
    assert step.raw_scores["tokensar"] == pytest.approx(token_sar(lp, sims), rel=1e-5)
    image = sample.image
    cos = env["clip"].cosine([image], [step.content])[0]
    assert step.raw_scores["clips"] == pytest.approx(max(cos, 0.0), abs=1e-6)


def test_estimate_steps_generates_when_no_response(env):
    resp = estimate_steps(env["vlm"], env["samples"][1], **_models(env),
                          config=EstimateConfig(max_new_tokens=12, estimators=("lnlp", "mte")))
    assert resp.text and resp.token_stats is not None
    assert all(set(s.raw_scores) == {"lnlp", "mte"} for s in resp.steps if s.raw_scores)
    with pytest.raises(SampleError, match="empty_response"):
        estimate_steps(env["vlm"], env["samples"][1], "  ", **_models(env))


class PoisonVLM:
    """A real VLM whose scores for one response text are NaN (a broken pass); counts prompts."""

    def __init__(self, vlm, poison: str | None = None) -> None:
        self.vlm, self.poison, self.scored = vlm, poison, 0

    def __getattr__(self, name):
        return getattr(self.vlm, name)

    def score(self, prompts, images, responses, batch_size=8):
        self.scored += len(prompts)
        out = self.vlm.score(prompts, images, responses, batch_size=batch_size)
        for r, st in zip(responses, out, strict=True):
            if r == self.poison:
                st.logprobs = [float("nan")] * len(st.logprobs)
        return out


def _broken_inputs(env):
    samples = [s.model_copy() for s in env["samples"]]
    responses = dict(env["responses"])
    samples[2] = samples[2].model_copy(update={"image": "/nonexistent/img.png",
                                               "image_id": None})
    responses[samples[3].id] = ""
    responses[samples[4].id] = "There is a broken pass. So, the answer is 2."
    del responses[samples[5].id]
    return samples, responses


def test_dataset_records_failures_and_fits_the_calibrator(env, tmp_path):
    samples, responses = _broken_inputs(env)
    vlm = PoisonVLM(env["vlm"], poison=responses[samples[4].id])
    out = tmp_path / "out.jsonl"
    summary = estimate_dataset(vlm, samples, out, responses=responses, **_models(env),
                               config=EstimateConfig(batch_size=4), progress=False)
    assert (summary.total, summary.written, summary.failed) == (N_SAMPLES, N_SAMPLES, 4)
    assert summary.failures == {"missing_image": 1, "empty_response": 1, "non_finite": 1,
                                "missing_response": 1}
    lines = read_responses(out)
    assert [r.sample_id for r in lines] == [s.id for s in samples]
    ok = [r for r in lines if not failed(r)]
    assert len(ok) == 4 and summary.steps == sum(len(r.steps) for r in ok)
    cal = ConfidenceCalibrator.load(calibrator_path_for(out))
    steps = [s for r in ok for s in r.steps]
    assert all(0 <= s.confidence <= 1 and 1 <= s.level <= 5 for s in steps)
    assert sum(summary.levels.values()) == len(steps)
    again = cal.transform([s.raw_scores for s in steps])
    assert [a.level for a in again] == [s.level for s in steps]
    assert "nonexistent" in lines[2].meta["error"]


def test_resume_after_kill_neither_duplicates_nor_loses(env, tmp_path):
    config = EstimateConfig(batch_size=3)
    full = tmp_path / "full.jsonl"
    estimate_dataset(env["vlm"], env["samples"], full, responses=env["responses"],
                     **_models(env), config=config, progress=False, finalize=False)
    lines = full.read_text().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"  # a kill -9 in the middle of writing line 4
    part.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    vlm = PoisonVLM(env["vlm"])
    summary = estimate_dataset(vlm, env["samples"], part, responses=env["responses"],
                               **_models(env), config=config, progress=False, finalize=False)
    assert (summary.skipped, summary.written, vlm.scored) == (3, N_SAMPLES - 3, N_SAMPLES - 3)
    got, want = read_responses(part), read_responses(full)
    assert [r.sample_id for r in got] == [r.sample_id for r in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose([list(s.raw_scores.values()) for s in a.steps],
                                   [list(s.raw_scores.values()) for s in b.steps], rtol=1e-5)


def test_shards_merge_into_the_unsharded_result(env, tmp_path):
    outs = []
    for i in range(2):
        outs.append(tmp_path / f"shard{i}.jsonl")
        s = estimate_dataset(env["vlm"], env["samples"], outs[-1], responses=env["responses"],
                             **_models(env), num_shards=2, shard_index=i, progress=False)
        assert not s.finalized and 0 < s.total < N_SAMPLES
    merged = merge_outputs(outs, tmp_path / "merged.jsonl")
    assert merged.responses == N_SAMPLES and merged.failed == 0 and merged.finalized
    ids = sorted(r.sample_id for r in read_responses(tmp_path / "merged.jsonl"))
    assert ids == sorted(s.id for s in env["samples"])


def _responses_file(env, tmp_path):
    """The fixture's responses as the JSONL ``--responses`` reads."""
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps({"sample_id": k, "text": v}) + "\n"
                            for k, v in env["responses"].items()))
    return path


def test_cli_estimate(env, tmp_path):
    from typer.testing import CliRunner

    from mmboundary.cli import app

    responses = _responses_file(env, tmp_path)
    out = tmp_path / "cli.jsonl"
    args = ["estimate", "--model", str(env["model_dir"]), "--data", str(env["data"]),
            "--dataset", "shapes", "--out", str(out), "--responses", str(responses),
            "--clip", str(env["clip_dir"]), "--estimators", "lnlp,mte,clips", "--fusion", "max",
            "--device", "cpu", "--batch-size", "4", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 responses" in result.output
    lines = [Response.model_validate_json(x) for x in out.read_text().splitlines()]
    assert len(lines) == N_SAMPLES
    step = lines[0].steps[0]
    assert set(step.raw_scores) == {"lnlp", "mte", "clips"}
    assert step.confidence == pytest.approx(max(step.normalized_scores.values()))
    cal = json.loads(calibrator_path_for(out).read_text())
    assert cal["fusion"]["method"] == "max" and cal["estimators"] == ["lnlp", "mte", "clips"]
    # a rerun with the saved calibrator skips every sample and keeps the levels
    result = CliRunner().invoke(app, [*args, "--calibrator", str(calibrator_path_for(out))])
    assert result.exit_code == 0, result.output
    assert [s.level for s in Response.model_validate_json(
        out.read_text().splitlines()[0]).steps] == [s.level for s in lines[0].steps]
    bad = CliRunner().invoke(app, [*args, "--estimators", "lnlp,ppl"])
    assert bad.exit_code != 0 and "ppl" in bad.output


def test_existing_output_path_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_responses(Path(tmp_path) / "missing.jsonl")


def test_cli_estimate_fits_levels_to_step_accuracy(env, tmp_path):
    """--level-rule accuracy: the steps are judged against --data's references by the one rule
    set, and every level holds steps right about as often as its value says."""
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.judging.rules import RuleConfig, StepRules

    responses = _responses_file(env, tmp_path)
    out = tmp_path / "accuracy.jsonl"
    args = ["estimate", "--model", str(env["model_dir"]), "--data", str(env["data"]),
            "--dataset", "shapes", "--out", str(out), "--responses", str(responses),
            "--estimators", "lnlp,mte", "--level-rule", "accuracy", "--device", "cpu",
            "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [Response.model_validate_json(x) for x in out.read_text().splitlines()]
    by_id = {s.id: s for s in env["samples"]}
    labels = StepRules(RuleConfig()).step_labels([by_id[r.sample_id] for r in lines],
                                                 [r.steps for r in lines])
    pairs = [(s.level, y) for r, chain in zip(lines, labels, strict=True)
             for s, y in zip(r.steps, chain, strict=True) if y is not None and s.level]
    levels = json.loads(calibrator_path_for(out).read_text())["levels"]
    assert levels["rule"] == "accuracy" and pairs
    for k in range(1, 6):  # the recorded accuracy is the labelled steps' at that level
        at = [y for level, y in pairs if level == k]
        assert levels["accuracy"][str(k)] == (pytest.approx(sum(at) / len(at)) if at else None)
        if at:
            assert (k - 1) / 5 - 1e-9 <= sum(at) / len(at) <= k / 5 + 1e-9
    merged = CliRunner().invoke(app, ["estimate", "merge", str(tmp_path / "m.jsonl"), str(out),
                                      "--estimators", "lnlp,mte", "--level-rule", "accuracy"])
    assert merged.exit_code != 0 and "needs --data" in merged.output


def test_cli_estimate_fits_the_fusion_weights(env, tmp_path):
    """--fusion fitted: the weights are fitted on --data's step correctness, saved with the
    calibrator (>= 0, summing to 1), and each step's C is the weighted mean of its confidences."""
    from typer.testing import CliRunner

    from mmboundary.cli import app

    # every other sample answered with the next sample's chain: right and wrong steps both
    ids, texts = list(env["responses"]), list(env["responses"].values())
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(
        json.dumps({"sample_id": k, "text": texts[(i + i % 2) % len(texts)]}) + "\n"
        for i, k in enumerate(ids)))
    out = tmp_path / "fitted.jsonl"
    args = ["estimate", "--model", str(env["model_dir"]), "--data", str(env["data"]),
            "--dataset", "shapes", "--out", str(out), "--responses", str(responses),
            "--estimators", "lnlp,mte", "--fusion", "fitted", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fusion = json.loads(calibrator_path_for(out).read_text())["fusion"]
    weights = fusion["weights"]
    assert fusion["method"] == "fitted" and set(weights) == {"lnlp", "mte"}
    assert min(weights.values()) >= 0 and sum(weights.values()) == pytest.approx(1.0)
    lines = [Response.model_validate_json(x) for x in out.read_text().splitlines()]
    steps = [s for r in lines for s in r.steps if s.confidence is not None]
    assert steps
    for s in steps:
        assert s.confidence == pytest.approx(sum(weights[k] * v for k, v in
                                                 s.normalized_scores.items()))
    merged = CliRunner().invoke(app, ["estimate", "merge", str(tmp_path / "m.jsonl"), str(out),
                                      "--estimators", "lnlp,mte", "--fusion", "fitted"])
    assert merged.exit_code != 0 and "needs --data" in merged.output


def test_cli_estimate_answer_step_from_the_chain(env, tmp_path):
    """--answer-step chain_min: each response's last step carries its chain's least C (the
    normalisers are fitted on the same steps as with the default), with its own saved cuts."""
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.shapesworld.scenes import read_split, write_split

    n = 12  # the answer steps' cuts need >= 10 answer steps (LevelCuts.min_count)
    data = write_split(tmp_path / "shapes", n, "train")
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"sample_id": s.id, "text": " ".join(s.reference.steps)})
                                 + "\n" for s in read_split(data)))
    common = ["estimate", "--model", str(env["model_dir"]), "--data", str(data),
              "--dataset", "shapes", "--responses", str(responses), "--estimators", "lnlp,mte",
              "--device", "cpu", "--no-progress"]
    own, chain = tmp_path / "own.jsonl", tmp_path / "chain.jsonl"
    for out, extra in ((own, []), (chain, ["--answer-step", "chain_min"])):
        result = CliRunner().invoke(app, [*common, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    read = lambda p: [Response.model_validate_json(x) for x in p.read_text().splitlines()]  # noqa: E731
    saved = json.loads(calibrator_path_for(chain).read_text())
    assert saved["answer_step"] == "chain_min"
    assert sum(saved["answer_levels"]["counts"].values()) == n
    assert json.loads(calibrator_path_for(own).read_text())["answer_levels"] is None
    for a, b in zip(read(own), read(chain), strict=True):
        c = [s.confidence for s in a.steps]
        assert [s.confidence for s in b.steps] == pytest.approx(c[:-1] + [min(c)])
    bad = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x.jsonl"),
                                   "--answer-step", "last"])
    assert bad.exit_code != 0 and "--answer-step" in bad.output
