"""The warm-up's probe teacher (``confidence.probe_teacher``, issue #12): cross-fitting that never
scores a step with a probe that saw its label, levels by the accuracy rule, states read where
the statement is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmboundary.confidence.probe_teacher import (
    crossfit_probabilities,
    step_states,
    teach_probe_levels,
)
from mmboundary.data.schema import Response, Step


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _linear(n_questions: int, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=8)
    x = rng.normal(size=(n_questions * steps, 8))
    y = (x @ w + 0.3 * rng.normal(size=len(x)) > 0).astype(float)
    return x, y, np.repeat(np.arange(n_questions), steps)


def test_crossfit_scores_each_question_without_its_own_labels() -> None:
    from mmboundary.evaluation.metrics import auroc

    x, y, g = _linear(60, 4)
    p = crossfit_probabilities(x, y, g, folds=5)
    assert np.isfinite(p).all() and auroc(p, y) > 0.9
    # flipping one question's labels moves the probes of the other folds, never its own score
    flipped = y.copy()
    flipped[g == 7] = 1 - flipped[g == 7]
    q = crossfit_probabilities(x, flipped, g, folds=5)
    assert q[g == 7] == pytest.approx(p[g == 7])
    assert not np.allclose(q[g != 7], p[g != 7])
    # unknown labels are scored and never fitted on: hiding a question's labels = flipping them
    hidden = y.copy()
    hidden[g == 7] = np.nan
    assert crossfit_probabilities(x, hidden, g, folds=5)[g == 7] == pytest.approx(p[g == 7])
    with pytest.raises(ValueError, match="3 questions for 5 folds"):
        crossfit_probabilities(x[:12], y[:12], g[:12], folds=5)


def _responses(n: int, steps: int) -> list[Response]:
    return [Response(sample_id=f"q{i}", text="x",
                     steps=[Step(index=k, text="x", start=0, end=1, level=3)
                            for k in range(steps)]) for i in range(n)]


def test_teach_probe_levels_sets_the_accuracy_rule_levels_of_the_crossfit_probability() -> None:
    from mmboundary.confidence.fusion import accuracy_cuts, assign_levels

    x, y, g = _linear(80, 3, seed=1)
    responses = _responses(80, 3)
    states: list[list[np.ndarray | None]] = [[x[3 * i + k] for k in range(3)] for i in range(80)]
    states[5][2] = None  # no content token: keeps its level (C's)
    labels: list[list[float | None]] = [[y[3 * i + k] for k in range(3)] for i in range(80)]
    labels[9][0] = None  # unaligned: gets a level, never fits the probe
    done = teach_probe_levels(responses, states, labels, folds=4, seed=0)
    assert responses[5].steps[2].level == 3 and done.kept_internal == 1
    assert done.labelled == 238 and sum(done.counts.values()) == 239
    # the same numbers by hand: cross-fitted p over the rows that have a state, cuts on the
    # labelled ones
    rows = [(i, k) for i in range(80) for k in range(3) if (i, k) != (5, 2)]
    xs = np.stack([x[3 * i + k] for i, k in rows])
    ys = np.array([np.nan if (i, k) == (9, 0) else y[3 * i + k] for i, k in rows])
    p = crossfit_probabilities(xs, ys, np.array([i for i, _ in rows]), folds=4)
    known = np.isfinite(ys)
    cuts = accuracy_cuts(p[known], ys[known], 5)
    assert done.cuts == pytest.approx(cuts)
    assert [responses[i].steps[k].level for i, k in rows] == assign_levels(cuts, p).tolist()
    assert done.crossfit_auroc > 0.85 and len({s.level for r in responses for s in r.steps}) >= 3
    with pytest.raises(ValueError, match="'q0' has 3 steps, 2 states"):
        teach_probe_levels(_responses(1, 3), [[x[0], x[1]]], [[1.0, 0.0, 1.0]])


def test_step_states_read_the_last_content_token(tiny_model_dir, tmp_path) -> None:
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, read_split, write_split
    from mmboundary.text import default_parser, insert_statement

    samples = read_split(write_split(tmp_path, 2, "train", seed=0))
    vlm = VLM.from_pretrained(tiny_model_dir("llava"), device="cpu")
    ref = samples[0].reference.steps
    text = " ".join([insert_statement(ref[0], "but this is just a guess"), *ref[1:]])
    responses = [Response(sample_id=s.id, text=t, steps=default_parser().parse(t))
                 for s, t in ((samples[0], text), (samples[1], "So, the answer is 2."))]
    states = step_states(vlm, samples, responses, load_image, batch_size=2)
    assert [len(c) for c in states] == [len(r.steps) for r in responses]
    hidden, offsets = vlm.hidden_states([samples[0]], [load_image(samples[0])], [text])[0]
    first = responses[0].steps[0]
    last = max(i for i, (a, _) in enumerate(offsets) if a < first.content_end)
    assert text[offsets[last][0]:offsets[last][1]].strip() == first.content.split()[-1]
    assert states[0][0] == pytest.approx(hidden[last], abs=1e-5)
    assert responses[0].steps[0].token_end is None  # the caller's steps are not touched


def test_step_probe_is_the_sklearn_probe_and_round_trips(tmp_path) -> None:
    from mmboundary.confidence.fusion import accuracy_cuts
    from mmboundary.confidence.probe_teacher import StepProbe, fit_step_probe
    from mmboundary.evaluation.probe import fit_probe

    x, y, g = _linear(60, 4, seed=2)
    probe, p = fit_step_probe(x, y, g, folds=5)
    assert probe.probability(x) == pytest.approx(fit_probe(x, y).predict_proba(x)[:, 1], abs=1e-9)
    assert probe.cuts == pytest.approx(accuracy_cuts(p, y, 5))  # cut on the cross-fitted p
    assert p == pytest.approx(crossfit_probabilities(x, y, g, folds=5))
    loaded = StepProbe.load(probe.save(tmp_path / "probe.json"))
    assert loaded.levels(x).tolist() == probe.levels(x).tolist()
    assert loaded.info["labelled"] == 240 and loaded.info["crossfit_auroc"] > 0.85
    with pytest.raises(ValueError, match="width 4"):
        probe.probability(x[:, :4])
    (tmp_path / "bad.json").write_text('{"kind": "step_probe", "mean": [1.0]}')
    with pytest.raises(ValueError, match="bad.json: StepProbe field missing"):
        StepProbe.load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('{"kind": "step_pr')
    with pytest.raises(ValueError, match="cut.json: not a StepProbe JSON"):
        StepProbe.load(tmp_path / "cut.json")
    (tmp_path / "calibrator.json").write_text('{"estimators": ["lnlp"]}')
    with pytest.raises(ValueError, match="not a StepProbe"):
        StepProbe.load(tmp_path / "calibrator.json")


def test_the_scorer_with_a_probe_gives_the_probe_levels_of_its_own_model(tmp_path) -> None:
    """i_t of R_CS under the probe teacher: the start model's own probe, fitted with its
    calibrator on its own greedy answers, levels the steps of any text it scores."""
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer, LevelCuts
    from mmboundary.demo.stages import label_steps
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import (
        load_image,
        read_split,
        shipped_world_model_path,
        write_split,
    )

    samples = read_split(write_split(tmp_path, 40, "train", seed=3))
    vlm = VLM.from_pretrained(shipped_world_model_path(), device="cpu", dtype="float32")
    calibrator = ConfidenceCalibrator(estimators=("lnlp", "mte"), levels=LevelCuts(rule="accuracy"))
    scorer = InternalConfidenceScorer(vlm, calibrator, batch_size=8)
    with pytest.raises(ValueError, match="probe=True needs label_steps"):
        scorer.fit_calibrator(samples, probe=True)
    scorer.fit_calibrator(samples, max_new_tokens=96, label_steps=label_steps, probe=True)
    assert scorer.probe is not None and scorer.probe.info["rows"] >= 40
    texts = [" ".join(s.reference.steps) for s in samples[:5]]
    scored = scorer.score(samples[:5], texts)
    plain = InternalConfidenceScorer(vlm, scorer.calibrator, batch_size=8).score(samples[:5], texts)
    states = step_states(vlm, samples[:5], scored, load_image)
    for response, c_only, chain in zip(scored, plain, states, strict=True):
        for step, c_step, state in zip(response.steps, c_only.steps, chain, strict=True):
            assert step.confidence == c_step.confidence  # C is C; only the level is the probe's
            assert step.level == (c_step.level if state is None
                                  else int(scorer.probe.levels(state[None])[0]))
    with pytest.raises(ValueError, match="scale='level'"):
        InternalConfidenceScorer(vlm, scorer.calibrator, scale="raw", probe=scorer.probe)


def test_estimate_probe_cli_relevels_a_real_estimate_output_record_by_record(tmp_path) -> None:
    """`mmboundary estimate probe` (the probe teacher for any model): on the world model's own
    estimate output its levels are those of ``teach_probe_levels`` on the same steps, its saved
    probe is the full fit; a response it cannot read is an error line naming the record and
    field, the others go on; the input is never modified; unusable inputs exit 2."""
    import json
    from collections import Counter

    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.confidence.probe_teacher import StepProbe
    from mmboundary.data.io import read_responses
    from mmboundary.demo.stages import label_steps
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import (
        load_image,
        read_split,
        shipped_world_model_path,
        write_split,
    )

    data = write_split(tmp_path / "world", 48, "train", seed=5)
    model = shipped_world_model_path()
    est = tmp_path / "est.jsonl"
    run = CliRunner().invoke(app, ["estimate", "--model", str(model), "--data", str(data),
                                   "--dataset", "shapes", "--out", str(est), "--estimators",
                                   "lnlp,mte", "--device", "cpu", "--no-progress",
                                   "--max-new-tokens", "96", "--batch-size", "16"])
    assert run.exit_code == 0, run.output
    # one response for a question not in --data, one whose image does not decode
    samples = read_split(data)
    lines = est.read_text().splitlines()
    stranger = json.loads(lines[0])
    stranger["sample_id"] = "nowhere"
    est.write_text("\n".join([*lines, json.dumps(stranger)]) + "\n")
    gone = samples[3].id
    image = data.parent / "images" / f"{gone}.png"
    kept_image = image.read_bytes()
    image.write_bytes(b"not a png")
    before = est.read_bytes()

    out = tmp_path / "probe.jsonl"

    def probe_cli(**given: object) -> object:
        opts = {"model": model, "responses": est, "data": data, "out": out, **given}
        args = [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        return CliRunner().invoke(app, ["estimate", "probe", *args, "--dataset", "shapes",
                                        "--folds", "4", "--device", "cpu", "--dtype", "float32"])

    result = probe_cli()
    assert result.exit_code == 0, result.output
    assert est.read_bytes() == before
    assert "'nowhere'" in result.output and "sample_id" in result.output
    assert repr(gone) in result.output and "image" in result.output
    leveled = read_responses(out)
    assert [r.sample_id for r in leveled] == [json.loads(x)["sample_id"]
                                              for x in before.decode().splitlines()]
    errors = {r.sample_id: (r.meta["error_field"], r.meta["error_reason"]) for r in leveled
              if "error" in r.meta}
    assert errors == {"nowhere": ("sample_id", "unknown_sample"), gone: ("image", "bad_image")}

    # the same levels by hand, on the responses the command could read
    image.write_bytes(kept_image)
    given = [r for r in read_responses(est) if r.sample_id not in ("nowhere", gone)]
    by_id = {s.id: s for s in samples}
    vlm = VLM.from_pretrained(model, device="cpu", dtype="float32")
    chosen = [by_id[r.sample_id] for r in given]
    states = step_states(vlm, chosen, given, load_image, batch_size=8)
    taught = teach_probe_levels(given, states, label_steps(chosen, given), folds=4, seed=0)
    got = {r.sample_id: [s.level for s in r.steps] for r in leveled if "error" not in r.meta}
    assert got == {r.sample_id: [s.level for s in r.steps] for r in given}
    assert len({lv for levels in got.values() for lv in levels}) >= 2
    probe = StepProbe.load(tmp_path / "probe.jsonl.probe.json")
    # (batches differ by the failed records, so the states differ in the 5th digit: padding)
    assert probe.cuts == pytest.approx(taught.cuts, abs=1e-3)
    assert probe.coef == pytest.approx(taught.probe.coef, abs=1e-2)
    assert probe.info["crossfit_auroc"] == pytest.approx(taught.crossfit_auroc, abs=1e-3)
    assert "cross-fitted AUROC: " in result.output
    # the warm-up data are built from it as from an estimate output (error lines skipped)
    from mmboundary.training.sft_data import build_sft

    _, summary, _ = build_sft(out, data, tmp_path / "sft", seed=0)
    assert summary.records == len(got) and summary.skipped_failed == 2
    assert dict(summary.levels) == dict(Counter(lv for levels in got.values() for lv in levels))

    # unusable inputs: the probe file exists; --out not ours; no levels in --responses
    again = probe_cli(out=tmp_path / "o2.jsonl", save_probe=tmp_path / "probe.jsonl.probe.json")
    assert again.exit_code == 2 and "never overwritten" in again.output
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"x": 1}\n')
    refused = probe_cli(out=foreign)
    assert refused.exit_code == 2 and foreign.read_text() == '{"x": 1}\n'
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"sample_id": samples[0].id, "text": "There is a red square.",
                                "steps": []}) + "\n")
    empty = probe_cli(responses=bare, out=tmp_path / "o3.jsonl")
    assert empty.exit_code == 2 and "no step carries a level" in empty.output
