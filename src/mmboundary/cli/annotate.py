"""`mmboundary annotate`: build reference chains for a dataset with an LLM (two passes)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmboundary" / \
    "annotate"


class Backend(str, Enum):
    openai = "openai"
    hf = "hf"


def _model_name(backend: Backend, model: str | None) -> str:
    model = model or os.environ.get("MMBOUNDARY_ANNOTATE_MODEL")
    if model:
        return model
    if backend is Backend.hf:
        raise typer.BadParameter("--backend hf needs --model PATH (a local VLM folder) or "
                                 "MMBOUNDARY_ANNOTATE_MODEL", param_hint="--model")
    return "gpt-4o"


def _dry_run(items: list, model: str, base_url: str | None, backend: Backend, config,
             prompts) -> None:
    from mmboundary.annotate.client import DEFAULT_BASE_URL, ImagePayload
    from mmboundary.annotate.inputs import describe_messages
    from mmboundary.annotate.prompts import generate_messages

    item = items[0]
    source = item.image if item.image is not None else item.sample.image
    try:
        image = ImagePayload.from_source(source, config.image_max_side) if source else \
            "<image missing: pass --images DIR>"
    except OSError as err:
        image = f"<image missing: {err}>"
    from mmboundary.data.redact import redact_url

    where = redact_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    typer.echo(f"# dry run: nothing is sent. backend={backend.value} model={model}"
               + (f" url={where}/chat/completions" if backend is Backend.openai else ""))
    typer.echo(f"# {len(items)} sample(s); params {config.params()}")
    typer.echo(f"# pass 1 (generate) for sample {item.sample.id!r}:")
    typer.echo(describe_messages(generate_messages(item.sample, prompts), image))
    typer.echo("# pass 2 (filter) sends the same inputs plus pass 1's chain.")


def _print_summary(summary, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"annotate -> {out}", show_header=False)
    for key, value in summary.to_dict().items():
        if key == "cost_usd" and value is None:
            value = "unknown (pass --price-input/--price-output)"
        table.add_row(key, str(value))
    Console(stderr=True).print(table)


def annotate(
    data: Path = typer.Option(..., "--data", help="Dataset file (the authors' JSON, or our "
                              "Sample JSON/JSONL) to annotate.", exists=True, dir_okay=False),
    out: Path = typer.Option(..., "--out", help="Output JSONL (resumable: done ids are "
                             "skipped, failed ones retried). A .summary.json is written beside it."),
    dataset: str | None = typer.Option(None, "--dataset", help="aokvqa, culturalvqa, scienceqa "
                                       "or sample; default: detected from the fields."),
    images: Path | None = typer.Option(None, "--images", help="Images folder (COCO layout or "
                                       "{id}.jpg).", file_okay=False),
    backend: Backend = typer.Option(Backend.openai, "--backend", help="openai: any "
                                    "OpenAI-compatible server; hf: a local Hugging Face VLM."),
    model: str | None = typer.Option(None, "--model", help="Model name (openai; default env "
                                     "MMBOUNDARY_ANNOTATE_MODEL, else gpt-4o) or folder (hf)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Server URL ending in /v1 "
                                        "(default env OPENAI_BASE_URL, else the OpenAI API). A "
                                        "user:password in it is used, never printed."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Name of the "
                                    "environment variable holding the API key (never printed)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Annotate the first N only."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the first prompt (image "
                                 "elided) and send nothing."),
    cache_dir: Path = typer.Option(DEFAULT_CACHE, "--cache-dir", help="Reply cache (a rerun of "
                                   "the same request costs nothing)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the cache."),
    prompts_dir: Path | None = typer.Option(None, "--prompts-dir", help="Folder with your own "
                                            "system.txt, generate.txt, filter.txt."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature."),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="Reply token limit per pass."),
    json_mode: bool = typer.Option(False, "--json-mode", help="Ask for response_format "
                                   "json_object (OpenAI, vLLM)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for one reply."),
    max_retries: int = typer.Option(5, "--max-retries", help="Retries on 429/5xx/timeouts."),
    abort_after: int = typer.Option(3, "--abort-after", min=1, help="Stop (exit code 2) after "
                                    "this many consecutive requests that every record would "
                                    "fail alike: 401/403 (key), 404 (model or URL), server "
                                    "unreachable or unavailable after --max-retries."),
    price_input: float | None = typer.Option(None, "--price-input", help="USD per 1M prompt "
                                             "tokens (for the cost summary)."),
    price_output: float | None = typer.Option(None, "--price-output", help="USD per 1M "
                                              "completion tokens."),
    image_max_side: int | None = typer.Option(None, "--image-max-side", help="Shrink images "
                                              "larger than this many pixels per side."),
    device: str = typer.Option("auto", "--device", help="hf backend: auto, cpu, cuda[:i]."),
    dtype: str = typer.Option("auto", "--dtype", help="hf backend: auto, float32, bfloat16."),
) -> None:
    """Annotate reference chains with an LLM: pass 1 writes image-level facts and reasoning steps
    ending in "So, the answer is X"; pass 2 removes redundant, irrelevant or wrong steps. Records
    to check by hand are flagged needs_review with reasons.

    Exit code 0 when at least one record was annotated (failed ones are retried by a rerun), 1
    when every attempted record failed, 2 when the input cannot be used or the server refused
    --abort-after requests in a row. --out must be a new file or an output of ours."""
    from mmboundary.annotate.annotate import AnnotationAborted
    from mmboundary.annotate.inputs import load_items, problem_summary
    from mmboundary.annotate.prompts import PromptSet
    from mmboundary.annotate.records import AnnotateConfig
    from mmboundary.cli.common import require_dir

    require_dir(images, "--images")
    items, loaded = load_items(data, dataset=dataset, images_dir=images, limit=limit)
    for line in problem_summary(loaded.problems):
        typer.echo(line, err=True)
    if not items:
        raise typer.BadParameter(f"{data}: no sample could be loaded", param_hint="--data")
    config = AnnotateConfig(
        temperature=temperature, max_tokens=max_tokens, json_mode=json_mode,
        concurrency=concurrency if backend is Backend.openai else 1, image_max_side=image_max_side,
        abort_after_auth_failures=abort_after, price_input_per_m=price_input,
        price_output_per_m=price_output)
    prompts = PromptSet.load(prompts_dir)
    model_name = _model_name(backend, model)
    if dry_run:
        _dry_run(items, model_name, base_url, backend, config, prompts)
        return
    if not any(item.sample.image for item in items):
        raise typer.BadParameter(f"no image found for any of the {len(items)} samples; pass "
                                 "--images DIR (the annotator must see the image)",
                                 param_hint="--images")
    chat = _make_backend(backend, model_name, base_url, api_key_env, timeout, max_retries,
                         concurrency, device, dtype)
    if not no_cache:
        from mmboundary.annotate.cache import CachedBackend, ReplyCache

        chat = CachedBackend(chat, ReplyCache(cache_dir))
    try:
        summary = _run(items, chat, out, prompts, config)
    except AnnotationAborted as err:
        from mmboundary.data.failures import EXIT_BAD_INPUT
        from mmboundary.data.redact import redact_text

        _print_summary(err.summary, out)
        typer.echo(f"error: {redact_text(str(err))}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _print_summary(summary, out)
    if summary.failed and not (summary.ok + summary.flagged + summary.skipped_done):
        from mmboundary.data.failures import NothingSucceededError

        reasons = ", ".join(f"{k}: {v}" for k, v in summary.reasons.items())
        raise NothingSucceededError(f"{out}: nothing succeeded: all {summary.failed} attempted "
                                    f"record(s) failed ({reasons})")


def _make_backend(backend: Backend, model: str, base_url: str | None, api_key_env: str,
                  timeout: float, max_retries: int, concurrency: int, device: str, dtype: str):
    if backend is Backend.hf:
        from mmboundary.annotate.hf_backend import HFChatBackend

        return HFChatBackend.from_pretrained(model, device=device, dtype=dtype)
    from mmboundary.annotate.client import DEFAULT_BASE_URL, OpenAIChatClient

    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    key = os.environ.get(api_key_env)
    if not key and url.rstrip("/") == DEFAULT_BASE_URL:
        raise typer.BadParameter(f"the OpenAI API needs a key: set the environment variable "
                                 f"{api_key_env}", param_hint="--api-key-env")
    return OpenAIChatClient(model, base_url=url, api_key=key, timeout_s=timeout,
                            max_retries=max_retries, max_connections=concurrency)


def _run(items, chat, out: Path, prompts, config):
    from rich.progress import Progress

    from mmboundary.annotate.annotate import annotate_items

    with Progress(transient=True) as progress:
        task = progress.add_task("annotating", total=len(items))

        def advance(record: dict) -> None:
            progress.advance(task)

        return annotate_items(items, chat, out, prompts=prompts, config=config,
                              on_record=advance,
                              on_start=lambda done, todo: progress.update(task, completed=done))


def register(app: typer.Typer) -> None:
    app.command("annotate")(annotate)
