"""`mmboundary estimate`: step-level internal confidence for every sample of a file.

One ``Response`` per line in ``--out`` (resumable; a failing sample is a line with
``meta["error"]``), a calibrator JSON beside it (``<out>.calibrator.json``) and a final rewrite
filling every step's normalised scores, fused confidence and level. Sharded runs
(``--num-shards N --shard-index I``) are joined and finalised by ``mmboundary estimate merge``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.common import (
    DATA_HELP,
    DATASET_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    EXIT_HELP,
    IMAGES_HELP,
    MAX_SHOWN,
    load_samples,
    report_failure,
)
from mmboundary.cli.dataclass_options import library_default as default
from mmboundary.confidence.fusion import ANSWER_STEP_RULES, Fusion, LevelCuts
from mmboundary.confidence.normalize import ConfidenceCalibrator
from mmboundary.confidence.pipeline import EstimateConfig, estimate_dataset
from mmboundary.models.similarity import load_similarity
from mmboundary.models.vlm import VLM

ALL_ESTIMATORS = ",".join(default(EstimateConfig, "estimators"))
FUSION = default(Fusion, "method")
NORMALIZER = default(ConfidenceCalibrator, "normalizer")
LEVEL_RULE = default(LevelCuts, "rule")
ANSWER_STEP = default(ConfidenceCalibrator, "answer_step")
ANSWER_STEP_HELP = ("The answer step's (last step's) confidence: own (its own tokens, like any "
                    "step), chain_min / chain_mean (the least / mean C of its chain, with level "
                    "cuts fitted on the answer steps alone).")
LEVEL_RULE_HELP = ("How C is cut into 5 levels: quantile (the distribution's shape), sigma "
                   "(mean +- k sd) or accuracy (fitted to step correctness against --data's "
                   "reference chains: a level's value is how often its steps are right).")
ESTIMATORS_HELP = "Comma-separated estimators: lnlp, mte, tokensar, clips (default: all four)."
FUSION_HELP = ("Fusion of the normalised estimators: mean (weighted mean, paper), max ('w U_Max') "
               "or fitted (the weighted mean with weights >= 0 fitted on the steps' correctness; "
               "needs --data).")


def _parse_estimators(text: str) -> tuple[str, ...]:
    from mmboundary.confidence.estimators import ESTIMATORS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        raise typer.BadParameter(f"--estimators {text!r}: unknown {unknown}; expected a "
                                 f"comma-separated subset of {','.join(ESTIMATORS)}")
    return names


def _template(estimators: tuple[str, ...], fusion: str, normalizer: str,
              level_rule: str = LEVEL_RULE, answer_step: str = ANSWER_STEP) -> Any:
    try:
        if answer_step not in ANSWER_STEP_RULES:
            raise ValueError(f"--answer-step: expected one of {ANSWER_STEP_RULES}, got "
                             f"{answer_step!r}")
        return ConfidenceCalibrator(estimators=estimators, normalizer=normalizer,
                                    fusion=Fusion(method=fusion),
                                    levels=LevelCuts(rule=level_rule), answer_step=answer_step)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def _labeller(samples: Any, needed: bool) -> Any:
    """The labels a calibrator that ``needs_labels`` (the accuracy level rule, the fitted fusion)
    fits on: each step judged against its sample's reference chain by the one rule set (None when
    not ``needed``)."""
    if not needed:
        return None
    from mmboundary.judging.rules import RuleConfig, StepRules

    rules, by_id = StepRules(RuleConfig()), {s.id: s for s in samples}

    def label(responses: Any) -> list[list[float | None]]:
        missing = sorted({r.sample_id for r in responses} - set(by_id))
        if missing:
            raise ValueError(f"the steps' correctness: {len(missing)} answered sample(s) not in "
                             f"--data (first {missing[:3]}): their steps cannot be judged")
        return rules.step_labels([by_id[r.sample_id] for r in responses],
                                 [r.steps for r in responses])

    return label


def _read_response_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) of each record of a --responses file; bad lines are error lines."""
    from mmboundary.data.failures import InputError, RecordFailure
    from mmboundary.data.io import iter_jsonl_lines

    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"--responses {path}: not JSON: {err}") from None
        if not isinstance(records, list):
            raise InputError(f"--responses {path}: expected a JSON list of records")
        return [(f"{path}: record {i}", r) for i, r in enumerate(records)]
    out: list[tuple[str, Any]] = []
    for number, item in iter_jsonl_lines(path):
        if isinstance(item, dict):
            out.append((f"{path}:{number}", item))
        else:
            report_failure(RecordFailure(None, "<line>", "torn_line" if item.torn else
                                         "invalid_json", item.message, f"{path}:{number}"))
    if not out:
        raise InputError(f"--responses {path}: no record could be read")
    return out


def _load_responses(path: Path, rescore: bool) -> dict[str, Any]:
    """sample id -> text (or the generate line's Response, to reuse its token statistics, or the
    ``RecordFailure`` of a line that is not a valid Response: recorded as that sample's error)."""
    from pydantic import ValidationError

    from mmboundary.data.failures import RecordFailure, validation_failure
    from mmboundary.data.schema import Response

    out: dict[str, Any] = {}
    for where, rec in _read_response_records(path):
        sid = rec.get("sample_id", rec.get("id")) if isinstance(rec, dict) else None
        text = rec.get("text", rec.get("response")) if isinstance(rec, dict) else None
        if sid is None or not isinstance(text, str):
            report_failure(RecordFailure(None if sid is None else str(sid), "sample_id/text",
                                         "invalid_record", "needs 'sample_id' (or 'id') and "
                                         "'text' (or 'response') as a string", where))
            continue
        if str(sid) in out or (rec.get("meta") or {}).get("error"):
            continue  # first response per sample; generate's error lines carry no text
        if rec.get("token_stats") and not rescore:
            try:
                out[str(sid)] = Response.model_validate(rec)
            except ValidationError as err:
                out[str(sid)] = validation_failure(err, {**rec, "sample_id": sid}, where)
        else:
            out[str(sid)] = str(text)
    return out


def _print_summary(summary: Any) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"{summary.out}: {summary.responses} responses ({summary.written} new, "
                  f"{summary.skipped} already done), {summary.steps} steps scored, "
                  f"{summary.failed} failed {summary.failures or ''}")
    if summary.finalized:
        console.print(f"levels (level: steps): {summary.levels}; calibrator: "
                      f"{summary.calibrator or 'given'}")
    else:
        console.print("raw scores only (sharded run): join the shards with "
                      "`mmboundary estimate merge OUT SHARD...`")


def estimate_callback(
    ctx: typer.Context,
    model: Path = typer.Option(None, "--model", help="Saved VLM folder (VLM.from_pretrained)."),
    data: Path = typer.Option(None, "--data", help=DATA_HELP),
    out: Path = typer.Option(None, "--out", help="Output JSONL (appended, resumable)."),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    responses: Path | None = typer.Option(
        None, "--responses", help="JSONL of {sample_id, text} to score instead of generating "
        "(a `mmboundary generate` output: its token statistics are reused)."),
    rescore: bool = typer.Option(False, "--rescore", help="Re-score --responses texts with one "
                                 "teacher-forced pass even when they carry token statistics."),
    similarity: str | None = typer.Option(
        None, "--similarity", help="Similarity model folder for TokenSAR (default: offline "
        "all-MiniLM-L6-v2)."),
    similarity_precision: str = typer.Option(
        default(load_similarity, "precision"), "--similarity-precision", help="float32 (default) or bfloat16: bf16 halves "
        "TokenSAR's time on CPUs with bf16 units (fused C Spearman 0.99998 vs float32; "
        "docs/PERFORMANCE.md)."),
    clip: Path | None = typer.Option(None, "--clip", help="CLIP model folder (needed for clips)."),
    calibrator: Path | None = typer.Option(
        None, "--calibrator", help="A fitted calibrator JSON to apply (default: fit one on this "
        "run's raw scores and save it beside --out)."),
    estimators: str = typer.Option(ALL_ESTIMATORS, "--estimators", help=ESTIMATORS_HELP),
    fusion: str = typer.Option(FUSION, "--fusion", help=FUSION_HELP),
    normalizer: str = typer.Option(NORMALIZER, "--normalizer",
                                   help="Per-estimator normaliser: robust_minmax or quantile."),
    level_rule: str = typer.Option(LEVEL_RULE, "--level-rule", help=LEVEL_RULE_HELP),
    answer_step: str = typer.Option(ANSWER_STEP, "--answer-step", help=ANSWER_STEP_HELP),
    include_question: bool = typer.Option(
        default(EstimateConfig, "include_question"), "--include-question", help="TokenSAR similarity over question + step (default: "
        "the step alone)."),
    num_shards: int = typer.Option(default(estimate_dataset, "num_shards"), "--num-shards",
                                   help="Split the samples into N shards."),
    shard_index: int = typer.Option(default(estimate_dataset, "shard_index"), "--shard-index",
                                    help="Which shard this run does."),
    batch_size: int = typer.Option(default(EstimateConfig, "batch_size"), "--batch-size",
                                   help="Samples per batched VLM pass."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N samples."),
    max_new_tokens: int = typer.Option(default(EstimateConfig, "max_new_tokens"),
                                       "--max-new-tokens",
                                       help="Most tokens per generated response."),
    instruction: str | None = typer.Option(None, "--instruction",
                                           help="Instruction after the question."),
    device: str = typer.Option(default(VLM.from_pretrained, "device"), "--device",
                               help=DEVICE_HELP),
    dtype: str = typer.Option(default(VLM.from_pretrained, "dtype"), "--dtype", help=DTYPE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score every step's internal confidence (LNLP, MTE, TokenSAR, CLIPS), normalise, fuse, level.

    A sample that cannot be scored (image missing or not decodable, input longer than the
    model's context, empty response, NaN statistics) is an error line and the run goes on. --out
    must be a new file or an output of ours (anything else is refused and left unchanged)."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [n for n, v in (("--model", model), ("--data", data), ("--out", out)) if v is None]
    if missing:
        raise typer.BadParameter(f"missing option(s) {', '.join(missing)}")
    names = _parse_estimators(estimators)
    template = _template(names, fusion, normalizer, level_rule, answer_step)
    if "clips" in names and clip is None:
        raise typer.BadParameter("estimator clips needs --clip PATH (a local CLIP folder), or "
                                 "drop it: --estimators lnlp,mte,tokensar")
    from mmboundary.confidence.pipeline import default_image_loader
    from mmboundary.data.io import check_own_jsonl
    from mmboundary.models.clip import ClipScorer

    fitted = ConfidenceCalibrator.load(calibrator) if calibrator is not None else None
    samples = load_samples(data, dataset, images)
    check_own_jsonl(out, "sample_id")  # refuse a foreign --out before loading any model
    texts = _load_responses(responses, rescore) if responses is not None else None
    vlm = VLM.from_pretrained(model, device=device, dtype=dtype)
    sim = load_similarity(similarity, device=None if device == "auto" else device,
                          precision=similarity_precision) if "tokensar" in names else None
    scorer = ClipScorer.from_pretrained(clip, device=str(vlm.device)) if "clips" in names else None
    config = EstimateConfig(estimators=names, include_question=include_question,
                            instruction=instruction, max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
    summary = estimate_dataset(vlm, samples, out, similarity=sim, clip=scorer, responses=texts,
                               calibrator=fitted, template=template,
                               image_loader=default_image_loader(images), config=config,
                               num_shards=num_shards, shard_index=shard_index, limit=limit,
                               progress=progress, on_failure=_failure_printer(),
                               label_steps=_labeller(samples, template.needs_labels))
    _print_summary(summary)
    _exit_if_nothing_succeeded(summary)


def _failure_printer() -> Any:
    """An ``on_failure`` callback: the first failures as error lines, then a count at the end."""
    shown = [0]

    def show(failure: Any) -> None:
        shown[0] += 1
        if shown[0] <= MAX_SHOWN:
            report_failure(failure)
        elif shown[0] == MAX_SHOWN + 1:
            typer.echo("error: ... more failed records (counted in the summary)", err=True)

    return show


def _exit_if_nothing_succeeded(summary: Any) -> None:
    from mmboundary.data.failures import NothingSucceededError

    if summary.responses and summary.failed == summary.responses:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary.failures.items())
        raise NothingSucceededError(f"{summary.out}: nothing succeeded: all {summary.failed} "
                                    f"record(s) failed ({reasons}); no calibrator was fitted")


def merge_command(
    out: Path = typer.Argument(..., help="Merged output JSONL."),
    inputs: list[Path] = typer.Argument(..., help="Shard outputs of `mmboundary estimate`."),
    calibrator: Path | None = typer.Option(None, "--calibrator", help="A fitted calibrator "
                                           "JSON to apply (default: fit one on the merged file)."),
    estimators: str = typer.Option(ALL_ESTIMATORS, "--estimators", help=ESTIMATORS_HELP),
    fusion: str = typer.Option(FUSION, "--fusion", help=FUSION_HELP),
    normalizer: str = typer.Option(NORMALIZER, "--normalizer",
                                   help="Per-estimator normaliser: robust_minmax or quantile."),
    level_rule: str = typer.Option(LEVEL_RULE, "--level-rule", help=LEVEL_RULE_HELP),
    answer_step: str = typer.Option(ANSWER_STEP, "--answer-step", help=ANSWER_STEP_HELP),
    data: Path | None = typer.Option(None, "--data", help="The samples the shards answered "
                                     "(needed by --level-rule accuracy and --fusion fitted). " + DATA_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
) -> None:
    """Join shard outputs (first line per sample wins), fit or apply the calibrator, fill levels.
    OUT must be a new file or an output of ours."""
    from mmboundary.confidence.outputs import merge_outputs
    from mmboundary.data.failures import NothingSucceededError
    from mmboundary.data.io import check_own_jsonl, read_jsonl

    check_own_jsonl(out, "sample_id")
    template = _template(_parse_estimators(estimators), fusion, normalizer, level_rule,
                         answer_step)
    if template.needs_labels and calibrator is None and data is None:
        raise typer.BadParameter(f"--level-rule {level_rule} / --fusion {fusion} needs --data "
                                 "(the steps are judged against its reference chains)")
    labeller = _labeller(load_samples(data, dataset, images), template.needs_labels) if data else None
    fitted = ConfidenceCalibrator.load(calibrator) if calibrator is not None else None
    if not any("error" not in (r.get("meta") or {}) for p in inputs for r in read_jsonl(p)):
        raise NothingSucceededError(f"no line of the {len(inputs)} shard output(s) succeeded; "
                                    "nothing to merge")
    _print_summary(merge_outputs(inputs, out, fitted, template=template, label_steps=labeller))


def register(app: typer.Typer) -> None:
    estimate_app = typer.Typer(help="Step-level internal confidence (LNLP, MTE, TokenSAR, CLIPS).",
                               invoke_without_command=True, no_args_is_help=False,
                               epilog=EXIT_HELP)
    estimate_app.callback(invoke_without_command=True)(estimate_callback)
    estimate_app.command("merge")(merge_command)
    from mmboundary.cli.estimate_probe import probe_command

    estimate_app.command("probe")(probe_command)
    app.add_typer(estimate_app, name="estimate")
