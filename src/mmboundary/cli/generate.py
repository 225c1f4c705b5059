"""`mmboundary generate`: a VLM answers every sample of a file; one Response per line (resumable).

Each line is ``Response.model_dump(mode="json")`` with ``token_stats`` (raw-logit log-probs,
entropies, offsets) and ``meta`` = {"sample_index", "finished", decoding parameters}. A sample
that fails (missing image, model error) is a line with ``text == ""`` and ``meta["error"]`` = the
reason; the run goes on. A rerun skips (sample id, sample index) pairs already in the output.
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
    load_samples,
)


def _image_loader(dataset: str | None, images: Path | None) -> Any:
    """``sample -> PIL.Image``; raises (MissingImageError, OSError) with the reason."""
    if dataset == "shapes":
        from mmboundary.data.shapes import load_image as load_shapes_image

        return load_shapes_image
    from mmboundary.data.images import load_image, resolve_image

    return lambda sample: load_image(resolve_image(sample, images))


def _response_writer(out: Path) -> Any:
    """A resumable JSONL writer keyed by ``sample_id#sample_index`` (several samples per id)."""
    from mmboundary.data.io import JsonlWriter

    class ResponseWriter(JsonlWriter):
        def _id_of(self, record: dict[str, Any]) -> str:
            return f"{record['sample_id']}#{record.get('meta', {}).get('sample_index', 0)}"

    return ResponseWriter(out, resume=True)


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
) -> None:
    """Generate responses (with per-token log-probs and entropies) for every sample."""
    from rich.progress import Progress

    from mmboundary.models.responses import generate_responses
    from mmboundary.models.vlm import VLM

    if num_samples > 1 and not sample:
        raise typer.BadParameter("--num-samples > 1 needs --sample (greedy gives one response)")
    try:
        samples = load_samples(data, dataset, images)[:limit]
    except (OSError, ValueError) as err:
        raise typer.BadParameter(f"--data {data}: {err}") from err
    vlm = VLM.from_pretrained(model, device=device, dtype=dtype)
    load = _image_loader(dataset, images)
    decoding = dict(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                    top_p=top_p, num_return_sequences=num_samples)
    meta = {"do_sample": sample, "max_new_tokens": max_new_tokens, "seed": seed,
            **({"temperature": temperature, "top_p": top_p} if sample else {}),
            **({"instruction": instruction} if instruction else {})}
    import torch

    torch.manual_seed(seed)
    written = errors = 0
    with _response_writer(out) as writer, Progress() as progress:
        todo = [s for s in samples
                if any(f"{s.id}#{k}" not in writer for k in range(num_samples))]
        task = progress.add_task("generating", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for response in generate_responses(vlm, batch, load, instruction=instruction,
                                               meta=meta, **decoding):
                written += writer.write(response)
                errors += "error" in response.meta
            progress.advance(task, len(batch))
    typer.echo(f"{out}: wrote {written} line(s) ({errors} error(s)); "
               f"{len(samples) - len(todo)} sample(s) were already done")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
