"""`mmboundary estimate probe`: the probe teacher for a real model (ours; README "A teacher that
knows more", ``confidence.probe_teacher``).

Reads a finished ``mmboundary estimate`` output (the model's answers, their steps and C's levels),
judges every step against ``--data``'s reference chains by the one rule set, reads the model's
hidden state at each step's last content token, and writes ``--out``: the same responses with each
step's level from a linear probe cross-fitted over the questions (no step is levelled by a probe
that saw its label), cut by the accuracy rule. Beside it, ``--save-probe`` (default
``<out>.probe.json``): the probe fitted on every labelled step, the ``probe:`` of ``mmboundary
train rl`` (R_CS's i_t) when these are the RL start model's answers.

Two uses, one command:
- the warm-up's teacher: run it on the vanilla model's estimate output, then ``mmboundary express``
  / ``train sft`` on ``--out`` as on an estimate output;
- R_CS's probe: run it on the warm-up model's estimate output (its greedy answers to the RL
  prompts) and give ``--save-probe``'s file to ``train rl --probe``.
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
    report_failure,
)
from mmboundary.cli.dataclass_options import library_default as default
from mmboundary.confidence.probe_teacher import PROBE_FOLDS, probe_teacher_responses
from mmboundary.models.vlm import VLM


def probe_command(
    model: Path = typer.Option(..., "--model", help="The model whose answers these are (saved VLM "
                               "folder): its hidden states are read."),
    responses: Path = typer.Option(..., "--responses", help="A finished `mmboundary estimate` "
                                   "output (JSONL) of that model's answers."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP + " Its reference chains judge "
                              "the steps."),
    out: Path = typer.Option(..., "--out", help="Output JSONL: the responses with the probe's "
                             "levels (a new file or an output of ours)."),
    save_probe: Path | None = typer.Option(None, "--save-probe", help="Where the fitted probe "
                                           "goes (default <out>.probe.json; `train rl --probe`)."),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    folds: int = typer.Option(PROBE_FOLDS, "--folds", min=2, help="Question groups the probe is "
                              "cross-fitted over."),
    seed: int = typer.Option(0, "--seed", help="The probe's seed."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Responses per forward pass."),
    device: str = typer.Option(default(VLM.from_pretrained, "device"), "--device",
                               help=DEVICE_HELP),
    dtype: str = typer.Option(default(VLM.from_pretrained, "dtype"), "--dtype", help=DTYPE_HELP),
) -> None:
    """Level each step by a probe on the model's own hidden state (the probe teacher), and save
    the probe for RL's R_CS.

    A response whose sample is not in --data, that has no steps, or whose image cannot be loaded
    becomes an error line naming the record and field; failure lines of the input pass through;
    the input file is never modified."""
    from rich.console import Console

    from mmboundary.cli.estimate import _labeller
    from mmboundary.data.failures import InputError
    from mmboundary.data.io import check_own_jsonl, read_responses, write_jsonl_atomic

    samples = load_samples(data, dataset, images)
    check_own_jsonl(out, "sample_id")  # refuse a foreign --out before loading any model
    probe_path = save_probe or out.with_name(out.name + ".probe.json")
    if probe_path.exists():
        raise InputError(f"--save-probe {probe_path}: exists; give a new path (a probe is "
                         "never overwritten)")
    given = read_responses(responses, on_bad_record=report_failure)
    if not given:
        raise InputError(f"--responses {responses}: no response could be read")
    if not any(r.steps and r.steps[0].level is not None for r in given
               if "error" not in (r.meta or {})):
        raise InputError(f"--responses {responses}: no step carries a level; give a finished "
                         "`mmboundary estimate` output")
    vlm = VLM.from_pretrained(model, device=device, dtype=dtype)
    judge = _labeller(samples, True)  # the one rule set, as the accuracy level rule's
    try:
        leveled, taught = probe_teacher_responses(
            vlm, samples, given, image_loader(dataset, images), lambda _, chosen: judge(chosen),
            folds=folds, seed=seed, batch_size=batch_size, on_failure=report_failure)
    except ValueError as err:  # fewer questions than folds, steps all right or all wrong
        raise InputError(f"--responses {responses}: {err}") from None
    write_jsonl_atomic(out, [r.model_dump(mode="json") for r in leveled], own_key="sample_id")
    taught.probe.save(probe_path)
    console = Console()
    accuracy = {k: None if v is None else round(v, 3) for k, v in taught.accuracy.items()}
    console.print(f"{len(leveled)} responses -> {out}; probe -> {probe_path}")
    console.print(f"steps levelled by the probe: {sum(taught.counts.values())} (labelled "
                  f"{taught.labelled}; kept C's level, no content token: {taught.kept_internal}); "
                  f"level changed from C's: {taught.changed}")
    console.print(f"levels (level: steps): {taught.counts}; share right per level: {accuracy}; "
                  f"cross-fitted AUROC: {_fmt(taught.crossfit_auroc)}")


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"
