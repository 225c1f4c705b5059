"""`mmboundary generate`: a VLM answers every sample of a file; one Response per line (resumable).

Each line is ``Response.model_dump(mode="json")`` with ``token_stats`` (raw-logit log-probs,
entropies, offsets) and ``meta`` = {"sample_index", "finished", decoding parameters}. A sample
that fails (missing image, model error) is a line with ``text == ""`` and ``meta["error"]`` = the
reason; the run goes on. A rerun skips (sample id, sample index) pairs already in the output.
Exit code 1 when no line of the output succeeded, 2 when the input cannot be used.

``--guide resample|abstain`` decodes step by step and acts on a step whose confidence level is
below ``--below`` (``mmboundary.guidance``, docs/GUIDED.md): resample it ``--tries`` times and keep
the most confident, or stop and answer "I am not sure" (an abstention in ``meta``). The level is
the step's own statement, or with ``--calibrator`` the model's internal confidence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.common import (
    DATA_HELP,
    DATASET_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    IMAGES_HELP,
    MAX_SHOWN,
    image_loader,
    load_samples,
    report_failure,
)


def _response_writer(out: Path) -> Any:
    """A resumable JSONL writer keyed by ``sample_id#sample_index`` (several samples per id)."""
    from mmboundary.data.io import JsonlWriter

    class ResponseWriter(JsonlWriter):
        def _id_of(self, record: dict[str, Any]) -> str:
            return f"{record['sample_id']}#{record.get('meta', {}).get('sample_index', 0)}"

    return ResponseWriter(out, resume=True, id_key="sample_id",
                          failed=lambda r: "error" in (r.get("meta") or {}))


def generate_command(
    model: Path = typer.Option(..., "--model", help="Saved model folder (VLM.from_pretrained)."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Responses JSONL to write (appended, resumable)."),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Most tokens per response."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N samples."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts per generate call."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample, or decode greedily."),
    num_samples: int = typer.Option(1, "--num-samples", help="Responses per sample (--sample)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1 = off)."),
    seed: int = typer.Option(0, "--seed", help="Torch seed before generating."),
    instruction: str | None = typer.Option(
        None, "--instruction", help="Instruction after the question (default: reason step by "
        "step, finish with 'So, the answer is X.')."),
    guide: str = typer.Option(
        "none", "--guide", help="none (plain decoding); resample: a step below --below is "
        "sampled again --tries times (same prefix, --temperature/--top-p) and the most "
        "confident kept; abstain: stop at the first step below --below and answer 'I am not "
        "sure' (meta['abstained'])."),
    below: int = typer.Option(3, "--below", help="--guide: a step of confidence level < LEVEL "
                              "(1..5) is low; 1 = none, 6 = every step."),
    tries: int = typer.Option(4, "--tries", help="--guide resample: alternatives per low step."),
    calibrator: Path | None = typer.Option(
        None, "--calibrator", help="--guide: a fitted calibrator JSON of this model "
        "(`mmboundary estimate` writes one): judge steps by the model's internal confidence "
        "instead of its confidence statements (for a model that states none)."),
    clip: Path | None = typer.Option(None, "--clip", help="CLIP folder, when the --calibrator "
                                     "uses the clips estimator."),
    statements: bool = typer.Option(
        True, "--statements/--no-statements", help="--calibrator: the model writes confidence "
        "statements (only the content before them is scored), or plain sentences."),
    missing_level: int = typer.Option(
        3, "--missing-level", help="--guide: level of a step whose confidence is unknown (no "
        "statement, nothing scorable)."),
) -> None:
    """Generate responses (with per-token log-probs and entropies) for every sample.

    A sample whose image is missing or not decodable, or whose prompt does not fit the model's
    context, is an error line and the run goes on. --out must be a new file or an output of
    ours (anything else is refused and left unchanged)."""
    from rich.progress import Progress

    from mmboundary.models.vlm import VLM

    if num_samples > 1 and not sample:
        raise typer.BadParameter("--num-samples > 1 needs --sample (greedy gives one response)")
    guide_config = _guide_config(guide, below, tries, max_new_tokens, sample, temperature, top_p,
                                 num_samples, calibrator, missing_level)
    from mmboundary.data.failures import FailureTally, NothingSucceededError, failure_from_meta
    from mmboundary.data.io import check_own_jsonl

    samples = load_samples(data, dataset, images)[:limit]
    check_own_jsonl(out, "sample_id")  # before the model loads
    vlm = VLM.from_pretrained(model, device=device, dtype=dtype)
    load = image_loader(dataset, images)
    decoding = dict(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                    top_p=top_p, num_return_sequences=num_samples)
    meta = {"do_sample": sample, "max_new_tokens": max_new_tokens, "seed": seed,
            **({"temperature": temperature, "top_p": top_p} if sample else {}),
            **({"instruction": instruction} if instruction else {})}
    produce = _producer(vlm, load, guide_config, instruction, meta, decoding, calibrator, clip,
                        statements, missing_level)
    import torch

    torch.manual_seed(seed)
    written = 0
    tally = FailureTally()
    guided = _GuidedTally()
    with _response_writer(out) as writer, Progress() as progress:
        todo = [s for s in samples
                if any(f"{s.id}#{k}" not in writer for k in range(num_samples))]
        task = progress.add_task("generating", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for response in produce(batch):
                written += writer.write(response)
                guided.add(response)
                failure = failure_from_meta(response.sample_id, response.meta)
                if failure is None:
                    tally.succeeded += 1
                    continue
                tally.add(failure)
                if len(tally.failures) <= MAX_SHOWN:
                    report_failure(failure)
            progress.advance(task, len(batch))
    typer.echo(f"{out}: wrote {written} line(s) ({len(tally.failures)} error(s)); "
               f"{len(samples) - len(todo)} sample(s) were already done; {tally.summary()}")
    if guide_config is not None:
        typer.echo(guided.summary(calibrator is None))
    if writer.failed_lines and not writer.ok_lines:
        raise NothingSucceededError(f"{out}: nothing succeeded: all {writer.failed_lines} "
                                    "line(s) are errors")


def _guide_config(guide: str, below: int, tries: int, max_new_tokens: int, sample: bool,
                  temperature: float, top_p: float, num_samples: int, calibrator: Path | None,
                  missing_level: int) -> Any:
    """The ``GuideConfig`` of ``--guide`` (None for "none"); bad options are ``BadParameter``."""
    if guide == "none":
        if calibrator is not None:
            raise typer.BadParameter("--calibrator is used by --guide resample|abstain only")
        return None
    from mmboundary.guidance import GuideConfig
    from mmboundary.text.statements import LEVELS

    if num_samples != 1:
        raise typer.BadParameter("--guide gives one response per sample: drop --num-samples")
    if missing_level not in LEVELS:
        raise typer.BadParameter(f"--missing-level: expected one of {LEVELS}, got {missing_level}")
    if calibrator is not None and not calibrator.is_file():
        raise typer.BadParameter(f"--calibrator {calibrator}: no such file")
    try:
        return GuideConfig(guide=guide, below=below, tries=tries,  # type: ignore[arg-type]
                           max_new_tokens=max_new_tokens, do_sample=sample,
                           temperature=temperature, top_p=top_p)
    except ValueError as err:
        raise typer.BadParameter(str(err).replace("GuideConfig.", "--")) from None


def _producer(vlm: Any, load: Any, config: Any, instruction: str | None, meta: dict[str, Any],
              decoding: dict[str, Any], calibrator: Path | None, clip: Path | None,
              statements: bool, missing_level: int) -> Callable[[list[Any]], list[Any]]:
    """``batch -> [Response]``: plain decoding (``config`` None), else guided decoding judged by
    the steps' statements or, with ``calibrator``, the model's internal confidence."""
    if config is None:
        from mmboundary.models.responses import generate_responses

        return lambda batch: generate_responses(vlm, batch, load, instruction=instruction,
                                                meta=meta, **decoding)
    from mmboundary.guidance import (
        InternalConfidence,
        StatedConfidence,
        generate_guided_responses,
    )

    if calibrator is None:
        source: Any = StatedConfidence(vlm.tokenizer, missing_level=missing_level)
    else:
        source = InternalConfidence(_scorer(vlm, calibrator, clip, statements, instruction),
                                    missing_level=missing_level)

    def produce(batch: list[Any]) -> list[Any]:
        return generate_guided_responses(vlm, batch, load, source, config,
                                         instruction=instruction, meta=meta)

    return produce


def _scorer(vlm: Any, path: Path, clip: Path | None, statements: bool,
            instruction: str | None) -> Any:
    """The ``InternalConfidenceScorer`` of ``vlm`` with the calibrator at ``path``."""
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.data.failures import InputError

    try:
        cal = ConfidenceCalibrator.load(path)
    except (OSError, ValueError) as err:
        raise InputError(f"--calibrator {path}: {err}") from None
    if not cal.is_fitted:
        raise InputError(f"--calibrator {path}: the calibrator is not fitted")
    similarity = clip_scorer = None
    if "tokensar" in cal.estimators:
        from mmboundary.models.similarity import default_similarity

        similarity = default_similarity()
    if "clips" in cal.estimators:
        if clip is None:
            raise InputError(f"--calibrator {path} uses the clips estimator: pass --clip")
        from mmboundary.models.clip import ClipScorer

        clip_scorer = ClipScorer.from_pretrained(clip, device="cpu")
    return InternalConfidenceScorer(vlm, cal, similarity=similarity, clip=clip_scorer,
                                    parse_statements=statements, instruction=instruction)


class _GuidedTally:
    """Counts of a guided run for the final summary line."""

    def __init__(self) -> None:
        self.responses = self.abstained = self.resampled = self.tokens = 0
        self.steps = self.unknown = 0

    def add(self, response: Any) -> None:
        if "error" in response.meta or "guide" not in response.meta:
            return
        self.responses += 1
        self.abstained += bool(response.meta["abstained"])
        self.resampled += response.meta["steps_resampled"]
        self.tokens += response.meta["tokens_generated"]
        self.steps += len(response.meta["step_levels"]) + bool(response.meta["abstained"])
        self.unknown += response.meta["steps_without_confidence"]

    def summary(self, by_statements: bool) -> str:
        line = (f"guided: {self.responses} response(s), {self.abstained} abstention(s), "
                f"{self.resampled} step(s) resampled, {self.tokens} token(s) generated")
        if by_statements and self.steps and self.unknown == self.steps:
            line += ("; no step stated a confidence (each counted as --missing-level): for a "
                     "model without statements pass --calibrator")
        return line


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
