"""`mmboundary world make|pretrain|pretrain-clip|eval`: the ShapesWorld data set and its models."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.dataclass_options import library_default as default
from mmboundary.shapesworld.pretrain_clip import ClipPretrainConfig
from mmboundary.shapesworld.pretrain_vlm import PretrainConfig, WorldModelSpec
from mmboundary.shapesworld.scenes import make_samples, write_split

SPLIT_HELP = "Split: train, validation or test (scenes never overlap between splits)."


def _progress(total: int, label: str) -> tuple[Any, Any]:
    """A rich progress bar and a ``(step, logs)`` callback that advances it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[loss]}"), TimeRemainingColumn())
    task = bar.add_task(label, total=total, loss="")

    def callback(step: int, logs: dict[str, float]) -> None:
        bar.update(task, completed=step, loss=f"loss {logs['loss']:.3f}")

    return bar, callback


def _write_info(out: Path, info: dict[str, Any]) -> None:
    from mmboundary.data.io import write_json_atomic

    write_json_atomic(out / "checkpoint_info.json", info)


def _eval_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "records"}


def make(
    out: Path = typer.Option(..., "--out", help="Folder for images/ and <split>.json."),
    n: int = typer.Option(1000, "--n", help="Number of samples."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    seed: int = typer.Option(default(write_split, "seed"), "--seed",
                             help="World seed (same seed = same samples)."),
) -> None:
    """Write N ShapesWorld samples (PNG images + a Sample JSON that load_annotated reads)."""
    path = write_split(out, n, split, seed)
    typer.echo(f"wrote {n} {split} samples to {path}")


def pretrain(
    out: Path = typer.Option(..., "--out", help="Folder to save the world VLM in."),
    steps: int = typer.Option(default(PretrainConfig, "steps"), "--steps",
                              help="Training steps (one fresh batch each)."),
    seed: int = typer.Option(default(PretrainConfig, "seed"), "--seed",
                             help="Seed of the weights and of the world stream."),
    batch_size: int = typer.Option(default(PretrainConfig, "batch_size"), "--batch-size",
                                   help="Samples per step."),
    learning_rate: float = typer.Option(default(PretrainConfig, "learning_rate"), "--lr",
                                        help="Peak AdamW learning rate."),
    threads: int = typer.Option(default(PretrainConfig, "threads"), "--threads",
                                help="torch threads (1 is best on shared CPUs)."),
    eval_samples: int = typer.Option(1000, "--eval-samples",
                                     help="Held-out test samples for the accuracy (0 = skip)."),
    save_every: int = typer.Option(default(PretrainConfig, "save_every"), "--save-every",
                                   help="Also save out/step-N every N steps (0 = final only)."),
    vision_init: str = typer.Option("shipped", "--vision-init",
                                    help="World CLIP folder whose vision encoder initialises the "
                                         "VLM's: 'shipped' (the shipped world CLIP), a path, or "
                                         "'none' (random)."),
    init_from: Path = typer.Option(None, "--init-from",
                                   help="Continue training a saved world VLM (weights, tokenizer) "
                                        "instead of building a new one."),
    hidden_size: int = typer.Option(default(WorldModelSpec, "hidden_size"), "--hidden-size",
                                    help="Text model width of a new VLM."),
    num_layers: int = typer.Option(default(WorldModelSpec, "num_layers"), "--layers",
                                   help="Text model layers of a new VLM."),
    intermediate_size: int = typer.Option(default(WorldModelSpec, "intermediate_size"),
                                          "--intermediate-size",
                                          help="Text model MLP width of a new VLM."),
) -> None:
    """Pretrain the world VLM (LLaVA-style, ~0.6M parameters) on ShapesWorld reference chains.

    The training stream is the train split of world seed = --seed (fresh samples every step).
    The text model's size options build a larger (or smaller) new model; the vision encoder
    keeps the world CLIP's size, so --vision-init still applies. With --init-from the saved
    model's architecture is kept, and a size option is an error.
    """
    from mmboundary.shapesworld.pretrain_vlm import evaluate_world_vlm, pretrain_world_vlm
    from mmboundary.shapesworld.scenes import shipped_world_clip_path

    spec = WorldModelSpec(hidden_size=hidden_size, num_layers=num_layers,
                          intermediate_size=intermediate_size)
    if init_from is not None and spec != WorldModelSpec():
        raise typer.BadParameter("--init-from keeps the saved model's architecture; drop "
                                 "--hidden-size / --layers / --intermediate-size",
                                 param_hint="--init-from")
    vision = {"none": None, "shipped": None}.get(vision_init.lower(), vision_init)
    if vision_init.lower() == "shipped" and init_from is None:
        vision = str(shipped_world_clip_path())
    cfg = PretrainConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                         seed=seed, world_seed=seed, threads=threads, save_every=save_every,
                         vision_init=vision if init_from is None else None,
                         init_from=str(init_from) if init_from is not None else None,
                         spec=spec)
    bar, callback = _progress(steps, "pretrain VLM")
    with bar:
        info = pretrain_world_vlm(out, cfg, callback)
    info["command"] = shlex.join(["mmboundary", *sys.argv[1:]])
    if eval_samples > 0:
        typer.echo(f"evaluating on {eval_samples} test samples ...")
        result = evaluate_world_vlm(out, make_samples(eval_samples, seed, "test"), threads=threads)
        info["evaluation"] = {"split": "test", "world_seed": seed, **_eval_summary(result)}
    _write_info(out, info)
    typer.echo(json.dumps({k: info[k] for k in ("steps", "seconds", "final_loss")}))
    if "evaluation" in info:
        typer.echo(json.dumps(info["evaluation"]))


def pretrain_clip(
    out: Path = typer.Option(..., "--out", help="Folder to save the world CLIP in."),
    steps: int = typer.Option(default(ClipPretrainConfig, "steps"), "--steps",
                              help="Training steps (one fresh batch each)."),
    seed: int = typer.Option(default(ClipPretrainConfig, "seed"), "--seed",
                             help="Seed of the weights and of the world stream."),
    batch_size: int = typer.Option(default(ClipPretrainConfig, "batch_size"), "--batch-size",
                                   help="Image-text pairs per step."),
    threads: int = typer.Option(default(ClipPretrainConfig, "threads"), "--threads",
                                help="torch threads."),
    eval_samples: int = typer.Option(1000, "--eval-samples",
                                     help="Held-out test images for the cosine signal (0 = skip)."),
) -> None:
    """Pretrain the world CLIP contrastively on (image, image-level fact) pairs."""
    from mmboundary.shapesworld.pretrain_clip import evaluate_world_clip, pretrain_world_clip

    cfg = ClipPretrainConfig(steps=steps, batch_size=batch_size, seed=seed, world_seed=seed,
                             threads=threads)
    bar, callback = _progress(steps, "pretrain CLIP")
    with bar:
        info = pretrain_world_clip(out, cfg, callback)
    info["command"] = shlex.join(["mmboundary", *sys.argv[1:]])
    if eval_samples > 0:
        info["evaluation"] = {"split": "test", "world_seed": seed, **evaluate_world_clip(
            out, make_samples(eval_samples, seed, "test"), seed=seed)}
    _write_info(out, info)
    typer.echo(json.dumps(info.get("evaluation", {"final_loss": info["final_loss"]})))


def evaluate(
    model: Path = typer.Option(None, "--model",
                               help="World VLM or CLIP folder (default: the shipped VLM)."),
    n: int = typer.Option(1000, "--n", help="Number of held-out samples."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    seed: int = typer.Option(default(make_samples, "seed"), "--seed",
                             help="World seed of the evaluation samples."),
    out: Path = typer.Option(None, "--out", help="Also write the summary + per-sample records "
                                                 "(JSON) here."),
    threads: int = typer.Option(default(PretrainConfig, "threads"), "--threads",
                                help="torch threads (as pretraining's: 1 is best on shared CPUs)."),
) -> None:
    """Accuracy of a world VLM (by question kind and format), or the signal of a world CLIP."""
    from mmboundary.shapesworld.pretrain_clip import evaluate_world_clip
    from mmboundary.shapesworld.pretrain_vlm import evaluate_world_vlm
    from mmboundary.shapesworld.scenes import shipped_world_model_path

    model = model or shipped_world_model_path()
    config = json.loads((Path(model) / "config.json").read_text())
    samples = make_samples(n, seed, split)
    if config.get("model_type") == "clip":
        result: dict[str, Any] = evaluate_world_clip(model, samples, seed=seed)
    else:
        result = evaluate_world_vlm(model, samples, threads=threads)
    if out is not None:
        from mmboundary.data.io import write_json_atomic

        write_json_atomic(out, result)
    typer.echo(json.dumps(_eval_summary(result), indent=1))


def register(app: typer.Typer) -> None:
    world_app = typer.Typer(help="ShapesWorld: make data, pretrain and evaluate its VLM and CLIP.",
                            no_args_is_help=True)
    world_app.command("make")(make)
    world_app.command("pretrain")(pretrain)
    world_app.command("pretrain-clip")(pretrain_clip)
    world_app.command("eval")(evaluate)
    app.add_typer(world_app, name="world")
