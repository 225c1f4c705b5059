"""`mmboundary models make-tiny`: build tiny random-weight models offline (tests, demos)."""

from __future__ import annotations

from pathlib import Path

import typer


def make_tiny_command(
    out: Path = typer.Argument(..., help="Folder to save the model, tokenizer and processor in."),
    arch: str = typer.Option(
        "qwen2-vl", "--arch",
        help="Architecture: qwen2-vl, qwen2.5-vl, llava, llava-next, idefics3 or clip."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    hidden_size: int = typer.Option(64, "--hidden-size", help="Text model hidden size."),
    num_layers: int = typer.Option(2, "--num-layers", help="Text model layers."),
    image_size: int = typer.Option(64, "--image-size", help="Square image side in pixels."),
    patch_size: int = typer.Option(8, "--patch-size", help="Vision patch side in pixels."),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="Text file (one sentence a line) to train the BPE tokenizer on; "
        "default: a built-in English corpus."),
    vocab_size: int = typer.Option(512, "--vocab-size", help="BPE vocabulary size."),
) -> None:
    """Build a tiny random ARCH model (~0.2M parameters) with a byte-level BPE tokenizer."""
    from mmboundary.models.tiny import make_tiny

    sentences = None
    if corpus is not None:
        sentences = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    try:
        path = make_tiny(arch, out, seed=seed, corpus=sentences, vocab_size=vocab_size,
                         hidden_size=hidden_size, num_layers=num_layers, image_size=image_size,
                         patch_size=patch_size)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"saved tiny {arch} model to {path}")


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="Model utilities: build tiny offline models.",
                             no_args_is_help=True)
    models_app.command("make-tiny")(make_tiny_command)
    app.add_typer(models_app, name="models")
