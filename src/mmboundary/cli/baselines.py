"""`mmboundary baselines`: one confidence baseline for any VLM, as predictions `evaluate` reads.

The library side is ``mmboundary.evaluation.baseline_runs.BaselineRunner`` (the demo uses it
too); this module only parses options, loads the resources a method needs and writes the JSONL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.common import (
    DATA_HELP,
    DATASET_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    IMAGES_HELP,
    image_loader,
    load_samples,
)

METHOD_HELP = ("One or several (comma-separated) of: token-prob (exp mean log p of a step's "
               "tokens), internal (fused internal confidence C, needs --calibrator), constant "
               "(--value or --fit-responses), dpv (prompted number), dps (prompted statement), "
               "sc (self-consistency over --k samples), multisample (mean stated confidence over "
               "--k samples). Several methods share one generation of each response kind.")


def _constant(value: float | None, fit_responses: Path | None, fit_data: Path | None,
              dataset: str | None, images: Path | None) -> float:
    """``--value``, or the answer accuracy of ``--fit-responses`` on ``--fit-data``."""
    if (value is None) == (fit_responses is None):
        raise typer.BadParameter("--method constant needs exactly one of --value FLOAT or "
                                 "--fit-responses FILE (with --fit-data FILE)")
    if value is not None:
        return value
    if fit_data is None:
        raise typer.BadParameter("--fit-responses needs --fit-data (the questions they answer)")
    from mmboundary.data.io import read_responses
    from mmboundary.evaluation.baselines import fit_constant
    from mmboundary.models.similarity import default_similarity

    samples = load_samples(fit_data, dataset, images)
    fitted = fit_constant(samples, read_responses(fit_responses), default_similarity())
    typer.echo(f"constant = {fitted:.4f} (answer accuracy of {fit_responses})", err=True)
    return fitted


def _methods(text: str, out: Path) -> list[str]:
    from mmboundary.evaluation.baseline_runs import METHODS

    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise typer.BadParameter(f"--method {text!r}: unknown {unknown}; expected one or more of "
                                 f"{', '.join(METHODS)}")
    if len(methods) > 1 and "{method}" not in str(out):
        raise typer.BadParameter(f"--out {out}: several methods need '{{method}}' in the path "
                                 "(e.g. runs/baselines/{method}.jsonl)")
    return methods


def _agreement(samples: list[Any], similarity: Any, judge: str, judge_model: str | None,
               judge_base_url: str | None, tau: float | None) -> Any:
    """SC / Multisample's ``agree(step_a, step_b)``: the evaluation's rule set (same judge flags
    as `mmboundary evaluate`) under the samples' step rule."""
    from mmboundary.cli.evaluate import judge_options
    from mmboundary.judging.rules import RuleConfig, StepRules

    rules = RuleConfig(judge=judge, judge_options=judge_options(judge, judge_model,
                                                                judge_base_url))
    if tau is not None:
        rules.tau = tau
        rules.__post_init__()
    match = {s.step_match for s in samples}
    if len(match) != 1:
        first = {m: next(s.id for s in samples if s.step_match == m) for m in sorted(match)}
        raise typer.BadParameter(f"--data: samples mix step rules (field step_match: {first}); "
                                 "sc / multisample need one")
    return StepRules(rules, similarity=similarity).agreement(match.pop())


def _resources(methods: list[str], samples: list[Any], *, calibrator: Path | None,
               clip: Path | None, similarity: str | None, device: str,
               **judging: Any) -> dict[str, Any]:
    """The objects ``BaselineRunner.run`` needs for ``methods`` (and only those)."""
    out: dict[str, Any] = {}
    wanted = set(methods)
    if wanted & {"sc", "multisample", "internal"}:
        from mmboundary.models.similarity import load_similarity

        out["similarity"] = load_similarity(similarity,
                                            device=None if device == "auto" else device)
    if wanted & {"sc", "multisample"}:
        out["agree"] = _agreement(samples, out["similarity"], **judging)
    if "internal" in wanted:
        if calibrator is None:
            raise typer.BadParameter("--method internal needs --calibrator (the JSON `mmboundary "
                                     "estimate` fitted on this model's own steps)")
        from mmboundary.confidence import ConfidenceCalibrator

        out["calibrator"] = ConfidenceCalibrator.load(calibrator)
        if "clips" in out["calibrator"].estimators:
            if clip is None:
                raise typer.BadParameter(f"--calibrator {calibrator} uses the clips estimator: "
                                         "give --clip PATH (a local CLIP folder)")
            from mmboundary.models.clip import ClipScorer

            out["clip"] = ClipScorer.from_pretrained(clip, device="cpu" if device == "auto"
                                                     else device)
    return out


def baselines_command(
    model: Path = typer.Option(..., "--model", help="Vanilla model folder (VLM.from_pretrained)."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    method: str = typer.Option(..., "--method", help=METHOD_HELP),
    out: Path = typer.Option(..., "--out", help="Predictions JSONL (one Response per line, steps "
                             "with expressed_confidence) for `mmboundary evaluate --predictions`; "
                             "with several methods a path holding '{method}'."),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    cache: Path | None = typer.Option(
        None, "--cache", help="Folder keeping the generated responses (greedy, DPV, DPS, k "
        "samples) with their settings, so several methods share one generation; default: none."),
    k: int = typer.Option(5, "--k", help="Samples per question for sc and multisample."),
    judge: str = typer.Option("auto", "--judge", help="sc / multisample: the step judge that "
                              "decides whether two steps agree (as `mmboundary evaluate --judge`; "
                              "exact-match datasets always use exact)."),
    judge_model: str | None = typer.Option(None, "--judge-model", help="NLI cross-encoder folder "
                                           "or LLM model name for --judge nli/llm."),
    judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="OpenAI-compatible "
                                              "API base URL for --judge llm."),
    tau: float | None = typer.Option(None, "--tau", help="Similarity judge threshold (--judge "
                                     "similarity)."),
    value: float | None = typer.Option(None, "--value", help="constant: the confidence value."),
    fit_responses: Path | None = typer.Option(
        None, "--fit-responses", help="constant: the vanilla model's responses to training "
        "questions (e.g. the `mmboundary estimate` output); value = their answer accuracy."),
    fit_data: Path | None = typer.Option(None, "--fit-data",
                                         help="constant: the questions of --fit-responses."),
    calibrator: Path | None = typer.Option(None, "--calibrator", help="internal: fitted "
                                           "calibrator JSON of this model (`estimate` writes it)."),
    clip: Path | None = typer.Option(None, "--clip", help="internal: CLIP folder, if the "
                                     "calibrator uses the clips estimator."),
    similarity: str | None = typer.Option(None, "--similarity", help="Similarity model folder "
                                          "(default: offline all-MiniLM-L6-v2)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Most tokens per response."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per generate call."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (sc, "
                                      "multisample)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N samples."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
) -> None:
    """Step confidences of one baseline (METHOD.md section 7) for any VLM and annotated data."""
    from mmboundary.data.io import write_jsonl_atomic
    from mmboundary.evaluation.baseline_runs import BaselineRunner, BaselineSettings

    methods = _methods(method, out)
    constant = _constant(value, fit_responses, fit_data, dataset, images) \
        if "constant" in methods else None
    samples = load_samples(data, dataset, images)[:limit]
    resources = _resources(methods, samples, calibrator=calibrator, clip=clip,
                           similarity=similarity, device=device, judge=judge,
                           judge_model=judge_model, judge_base_url=judge_base_url, tau=tau)
    try:
        settings = BaselineSettings(k=k, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    temperature=temperature, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    runner = BaselineRunner(model, samples, image_loader(dataset, images), settings,
                            cache_dir=cache, device=device, dtype=dtype)
    for name in methods:
        predictions = runner.run(name, constant=constant, **resources)
        path = Path(str(out).replace("{method}", name))
        written = write_jsonl_atomic(path, predictions)
        failed = sum("error" in r.meta for r in predictions)
        typer.echo(f"{path}: {written} predictions of {name} ({failed} failed sample(s))")


def register(app: typer.Typer) -> None:
    app.command("baselines")(baselines_command)
