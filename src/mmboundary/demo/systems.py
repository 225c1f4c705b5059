"""The demo's test-time side: every system and baseline answers the evaluated split, cached as JSONL.

The baselines run through ``evaluation.baseline_runs.BaselineRunner``, the same code as
``mmboundary baselines`` for any VLM; the demo only names the systems and picks its settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmboundary.data.schema import Response, Sample
from mmboundary.demo.ablations import statement_mode
from mmboundary.demo.config import DemoConfig

#: display name -> ``baseline_runs.METHODS`` entry, in report order
BASELINES = {
    "Token probability": "token-prob",
    "Internal C (not verbalised)": "internal", "DPV (prompted number)": "dpv",
    "DPS (prompted statement)": "dps", "SC (k={k})": "sc", "Multisample (k={k})": "multisample",
}


def _runner(model: str | Path, samples: list[Sample], config: DemoConfig, cache: Path) -> Any:
    from mmboundary.evaluation.baseline_runs import BaselineRunner, BaselineSettings
    from mmboundary.shapesworld.scenes import load_image

    settings = BaselineSettings(k=config.sc_samples, max_new_tokens=config.max_new_tokens,
                                batch_size=config.batch_size, temperature=1.0, seed=config.seed)
    return BaselineRunner(str(model), samples, load_image, settings, cache_dir=cache,
                          device="cpu", dtype="float32")


def vanilla_responses(config: DemoConfig, samples: list[Sample], vanilla: Path,
                      folder: Path) -> list[Response]:
    """The vanilla model's greedy responses to ``samples`` (cached in ``folder``), split into
    plain steps."""
    from mmboundary.evaluation.baselines import plain_steps

    return [plain_steps(r) for r in _runner(vanilla, samples, config, folder).greedy()]


def system_predictions(config: DemoConfig, samples: list[Sample], models: dict[str, str],
                       vanilla: Path, calibrator: str, clip: Path, constants: dict[str, float],
                       rules: Any, split: str = "test") -> dict[str, list[Response]]:
    """Predictions with step confidences for every system and baseline, by display name.

    ``constants``: the constant baselines' values fitted on validation (``answer``: answer
    accuracy, ``step``: aligned-step accuracy); ``rules``: the rule set, whose step agreement
    SC and Multisample use (exact match on ShapesWorld, where templated steps that differ in
    one word score 0.87-0.99 in MiniLM)."""
    from mmboundary.confidence import ConfidenceCalibrator
    from mmboundary.evaluation.baselines import (
        constant_confidence,
        plain_steps,
        verbal_confidence,
    )
    from mmboundary.models.clip import ClipScorer
    from mmboundary.text import default_parser

    folder = config.out / ("predictions" if split == "test" else f"predictions-{split}")
    match = {s.step_match for s in samples}
    if len(match) != 1:
        raise ValueError(f"samples mix step rules {sorted(match)}: SC agreement needs one")
    runner = _runner(vanilla, samples, config, folder)
    resources = dict(parser=default_parser(), agree=rules.agreement(match.pop()),
                     calibrator=ConfidenceCalibrator.load(calibrator),
                     similarity=rules.similarity,
                     clip=ClipScorer.from_pretrained(clip, device="cpu"))
    vanilla_steps = [plain_steps(r) for r in runner.greedy()]  # the runner caches greedy once
    preds: dict[str, list[Response]] = {
        "Vanilla (no confidence)": vanilla_steps,
        "Constant (val. answer accuracy)": constant_confidence(vanilla_steps, constants["answer"]),
        "Constant (val. step accuracy)": constant_confidence(vanilla_steps, constants["step"])}
    for name, method in BASELINES.items():
        if method in config.baselines:
            preds[name.format(k=config.sc_samples)] = runner.run(method, **resources)
    for name, model in models.items():
        greedy = _runner(model, samples, config, folder / slug(name)).greedy()
        parser = (resources["parser"] if statement_mode(name) == "statement"
                  else default_parser("numeric"))
        preds[name] = verbal_confidence(greedy, parser)
    return preds


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
