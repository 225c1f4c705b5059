"""The one internal-confidence scorer: R_CS's i_t and the "Internal C" baseline agree by
construction; calibrating stored raw scores; the level-value scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer, internal_value
from mmboundary.data.schema import Response, Step


def _scored_response(raw: list[dict[str, float]], sample_id: str = "s") -> Response:
    steps = [Step(index=i, text=f"Step {i}.", start=9 * i, end=9 * i + 7, raw_scores=r)
             for i, r in enumerate(raw)]
    return Response(sample_id=sample_id, text=" ".join(s.text for s in steps), steps=steps)


def _reference(n: int = 60) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    return [{"lnlp": float(rng.uniform(1, 4)), "mte": float(rng.uniform(0, 2))} for _ in range(n)]


def test_calibrate_and_values_without_a_model() -> None:
    raw = _reference()
    calibrator = ConfidenceCalibrator(estimators=("lnlp", "mte")).fit(raw)
    response = _scored_response([raw[0], raw[1], {}])
    failed = Response(sample_id="f", text="x", meta={"error": "boom", "error_reason": "error"})
    scorer = InternalConfidenceScorer(None, calibrator)
    assert scorer.calibrate([response, failed]) == [response, failed]
    expected = calibrator.transform([raw[0], raw[1]])
    assert [s.level for s in response.steps] == [e.level for e in expected] + [None]
    values = scorer.values(response)
    assert values[:2] == [(2 * e.level - 1) / 10 for e in expected] and math.isnan(values[2])
    fused = InternalConfidenceScorer(None, calibrator, scale="raw").values(response)
    assert fused[:2] == pytest.approx([e.confidence for e in expected])
    assert np.isnan(scorer.values(failed)).all()
    with pytest.raises(ValueError, match="needs the model whose confidence it is"):
        scorer.score([], [])


def test_scorer_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="scale: expected one of"):
        InternalConfidenceScorer(None, ConfidenceCalibrator(), scale="fused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibrator is not fitted"):
        InternalConfidenceScorer(None, ConfidenceCalibrator()).calibrate([])
    step = Step(index=0, text="x", start=0, end=1, confidence=0.83, level=4)
    assert internal_value(step) == 0.7 and internal_value(step, "raw") == 0.83
    assert math.isnan(internal_value(Step(index=0, text="x", start=0, end=1)))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """A tiny LLaVA, 12 ShapesWorld samples, their reference chains with statements, and
    calibrators fitted on the model's own scores of those responses (the answer step a step like
    any other, and the answer step from its chain)."""
    import torch

    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, make_samples
    from mmboundary.text.statements import default_bank, insert_statement

    torch.set_num_threads(1)
    samples = make_samples(12, seed=1)
    bank = default_bank()
    texts = [" ".join(insert_statement(step, bank.levels[1 + (i + j) % 5][0])
                      for j, step in enumerate(s.reference.steps))
             for i, s in enumerate(samples)]
    vlm = VLM.from_pretrained(tiny_model_dir("llava"), device="cpu")
    loader = lambda sample: (load_image(sample), sample.id)  # noqa: E731
    scorer = InternalConfidenceScorer(vlm, ConfidenceCalibrator(estimators=("lnlp", "mte")),
                                      image_loader=loader)
    calibrator = scorer.fit_calibrator(samples, texts)
    chain = InternalConfidenceScorer(
        vlm, ConfidenceCalibrator(estimators=("lnlp", "mte"), answer_step="chain_min"),
        image_loader=loader).fit_calibrator(samples, texts)
    return {"vlm": vlm, "samples": samples, "texts": texts, "calibrator": calibrator,
            "chain": chain, "loader": loader}


@pytest.mark.parametrize(("scale", "calibrator"),
                         [("level", "calibrator"), ("raw", "calibrator"), ("level", "chain")])
def test_rcs_internal_equals_the_internal_baseline(tiny, scale: str, calibrator: str) -> None:
    """R_CS's i_t (StepAnalyzer + scorer, as training.rl builds it) and the "Internal C"
    baseline's step confidence are the same numbers on the same responses."""
    from mmboundary.confidence import EstimateConfig
    from mmboundary.evaluation.baselines import internal_confidence
    from mmboundary.shapesworld.scenes import load_image
    from mmboundary.text import default_parser
    from mmboundary.training.rewards import confidence_self_calibration_reward
    from mmboundary.training.step_analysis import StepAnalyzer

    samples, texts = tiny["samples"], tiny["texts"]
    parser = default_parser()
    scorer = InternalConfidenceScorer(tiny["vlm"], tiny[calibrator], parser=parser,
                                      scale=scale)  # type: ignore[arg-type]
    analyzer = StepAnalyzer(parse=parser.parse, similarity=None, internal=scorer)
    columns = [s.model_dump_json() for s in samples]
    analyses = analyzer.analyze(texts, columns, image=[load_image(s) for s in samples])
    responses = [Response(sample_id=s.id, text=t) for s, t in zip(samples, texts, strict=True)]
    baseline = internal_confidence(
        tiny["vlm"], samples, responses,
        calibrator=tiny[calibrator], similarity=None, clip=None,
        image_loader=tiny["loader"], scale=scale,
        config=EstimateConfig(estimators=("lnlp", "mte"), parse_statements=True))
    for analysis, response in zip(analyses, baseline, strict=True):
        assert "error" not in response.meta and len(analysis.internal) == len(response.steps)
        assert analysis.internal == pytest.approx(
            [s.expressed_confidence for s in response.steps], abs=1e-6)
        assert [s.content for s in analysis.steps] == [s.content for s in response.steps]
    flat = [v for a in analyses for v in a.internal]
    if scale == "level":
        assert set(flat) <= {0.1, 0.3, 0.5, 0.7, 0.9}
    r_cs = confidence_self_calibration_reward(texts, columns, analyzer=analyzer)
    expected = [1 - np.mean(np.abs(np.array(a.expressed) - np.array(a.internal)))
                for a in analyses]
    assert r_cs == pytest.approx(expected)


def test_fit_calibrator_copies_the_template_and_counts_levels(tiny) -> None:
    template = ConfidenceCalibrator(estimators=("lnlp", "mte"))
    scorer = InternalConfidenceScorer(tiny["vlm"], template, image_loader=tiny["loader"])
    fitted = scorer.fit_calibrator(tiny["samples"], tiny["texts"])
    assert scorer.calibrator is fitted and fitted is not template and not template.is_fitted
    counts = fitted.levels_.counts_
    assert all(counts[k] > 0 for k in range(1, 6))  # the quantile rule reaches every level
    assert fitted.levels_.cuts_ == pytest.approx(tiny["calibrator"].levels_.cuts_, abs=1e-4)
    with pytest.raises(ValueError, match=r"fit_calibrator: 0 scored steps in 0/1 responses"):
        scorer.fit_calibrator(tiny["samples"][:1], [""])


def test_the_answer_step_is_scored_from_its_whole_chain(tiny) -> None:
    """answer_step="chain_min": a response's last step carries its chain's least C (the
    normalisers are fitted on the same steps either way, so the own-C calibrator gives the
    chain's C), with levels from the answer steps' own cuts; the other steps are unchanged."""
    own, chain = tiny["calibrator"], tiny["chain"]
    assert chain.answer_levels_.counts_ is not None
    assert sum(chain.answer_levels_.counts_.values()) == len(tiny["samples"])
    responses = InternalConfidenceScorer(tiny["vlm"], own, image_loader=tiny["loader"]).score(
        tiny["samples"], tiny["texts"])
    again = InternalConfidenceScorer(tiny["vlm"], chain, image_loader=tiny["loader"]).score(
        tiny["samples"], tiny["texts"])
    for plain, whole in zip(responses, again, strict=True):
        steps = [s.confidence for s in plain.steps]
        assert [s.confidence for s in whole.steps] == pytest.approx(steps[:-1] + [min(steps)])
        assert whole.steps[-1].level == chain.answer_levels_.level(min(steps))
        assert [s.level for s in whole.steps[:-1]] == [chain.levels_.level(c) for c in steps[:-1]]
    parts = InternalConfidenceScorer(tiny["vlm"], chain, image_loader=tiny["loader"]).score(
        tiny["samples"][:1], tiny["texts"][:1], whole=False)  # partial chains: plain steps
    assert parts[0].steps[-1].confidence == pytest.approx(responses[0].steps[-1].confidence,
                                                          abs=1e-3)  # batch of one: padding
