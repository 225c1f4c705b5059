"""`mmboundary judge`: decide whether predicted steps are correct (`pairs`), and benchmark the step
judges on the authors' real chains (`bench`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

_CHECKOUT = Path(__file__).resolve().parents[3]
DEFAULT_CASES = _CHECKOUT / "benchmarks" / "judge_data" / "cases.jsonl"
DEFAULT_DATA = _CHECKOUT.parent / "shared" / "data" / "mmboundary" / "aokvqa_val_mmb.json"
PAIR_FIELDS = ("pred", "ref", "question", "gold_answer", "reference", "similarity")


def _judge_options(judge: str, model: str | None, base_url: str | None, api_key_env: str,
                   cache_dir: Path | None, settings: list[str]) -> dict[str, Any]:
    """Constructor options of the chosen judge from the command's flags and ``--set k=v``."""
    options: dict[str, Any] = {}
    if judge in {"nli", "llm"}:
        if model is None:
            raise typer.BadParameter(f"--judge {judge} needs --model (an NLI cross-encoder folder "
                                     "or an LLM model name / local folder)", param_hint="--model")
        options["model"] = model
    if judge == "llm":
        options.update(base_url=base_url, api_key_env=api_key_env, cache_dir=cache_dir)
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {setting!r}", param_hint="--set")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def _read_pairs(path: Path) -> list[tuple[str, Any]]:
    """(id, JudgeItem) per line of a pairs JSONL; InputError naming the line and the field."""
    from mmboundary.data.failures import InputError
    from mmboundary.judging.base import JudgeItem

    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as err:
            raise InputError(f"{path}:{number}: not a JSON object ({err})") from None
        ident = str(raw.get("id", number))
        for key in ("pred", "ref"):
            if not isinstance(raw.get(key), str):
                raise InputError(f"{path}:{number} (pair {ident}): field {key!r} must be a string")
        fields = {k: raw[k] for k in PAIR_FIELDS if raw.get(k) is not None}
        fields["reference"] = tuple(fields.get("reference", ()))
        items.append((ident, JudgeItem(**fields)))
    if not items:
        raise InputError(f"{path}: no pairs (one JSON object per line with 'pred' and 'ref')")
    return items


def pairs(
    pairs_file: Path = typer.Option(..., "--pairs", help="JSONL of pairs: 'pred' and 'ref' "
                                    "(required), 'id', 'question', 'gold_answer', 'reference' "
                                    "(the whole chain, a list), 'similarity' (optional).",
                                    exists=True, dir_okay=False),
    out: Path = typer.Option(..., "--out", help="JSONL to write: each pair with 'correct', "
                             "'score', 'reason' added, or 'error' when it got no verdict."),
    judge: str = typer.Option("assertions", "--judge", help="assertions (offline default), "
                              "similarity, exact, nli (--model FOLDER) or llm (--model NAME "
                              "[--base-url URL])."),
    model: str | None = typer.Option(None, "--model", help="NLI cross-encoder folder, or the LLM "
                                     "model name (a local folder with --set backend=hf)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL "
                                        "ending in /v1, for --judge llm (default env "
                                        "OPENAI_BASE_URL, else the OpenAI API)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment "
                                    "variable holding the API key (never printed)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Disk cache of LLM replies "
                                          "(a rerun sends nothing)."),
    settings: list[str] = typer.Option([], "--set", help="Other judge option as KEY=VALUE "
                                       "(JSON value), e.g. --set topic_floor=0.4; repeatable."),
) -> None:
    """Judge predicted steps against their aligned reference steps, one verdict per pair."""
    from mmboundary.data.failures import NothingSucceededError
    from mmboundary.judging.base import make_judge

    items = _read_pairs(pairs_file)
    chosen = make_judge(judge, **_judge_options(judge, model, base_url, api_key_env, cache_dir,
                                                settings))
    batch = [item for _, item in items]
    each = getattr(chosen, "judge_each", None)
    results = each(batch) if each is not None else chosen.judge(batch)
    failed = 0
    with out.open("w", encoding="utf-8") as handle:
        for (ident, item), result in zip(items, results, strict=True):
            record: dict[str, Any] = {"id": ident, "pred": item.pred, "ref": item.ref}
            if isinstance(result, Exception):
                failed += 1
                record["error"] = str(result)
                typer.echo(f"error: pair {ident}: {result}", err=True)
            else:
                record.update(correct=result.correct, score=result.score, reason=result.reason)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    typer.echo(f"{judge}: {len(items) - failed} of {len(items)} pairs judged "
               f"({sum(1 for r in results if not isinstance(r, Exception) and r.correct)} "
               f"correct) -> {out}")
    if failed == len(items):
        raise NothingSucceededError(f"judge {judge}: no pair got a verdict")


def bench(
    cases: Path = typer.Option(DEFAULT_CASES, "--cases", help="Benchmark cases JSONL "
                               "(benchmarks/judge_data/cases.jsonl of a checkout)."),
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="The authors' aokvqa_val_mmb.json "
                              "(the cases name their chains by record index)."),
    split: str = typer.Option("test", "--split", help="Half to print: test (default; the "
                              "assertions judge was designed on dev), dev or all."),
    judges: str = typer.Option("similarity,exact,assertions", "--judges", help="Offline judges "
                               "to run, comma-separated."),
    nli_model: str | None = typer.Option(None, "--nli-model", help="Also run the NLI judge "
                                         "with this cross-encoder folder."),
    llm_base_url: str | None = typer.Option(None, "--llm-base-url", help="Also run the LLM "
                                            "judge against this server."),
    llm_model: str | None = typer.Option(None, "--llm-model", help="Model name for the LLM "
                                         "judge (default gpt-4o-mini)."),
    out: Path | None = typer.Option(None, "--out", help="JSON of every number (all splits)."),
) -> None:
    """Precision and recall of "wrong" per kind of false step, and paraphrases kept, per judge."""
    from mmboundary.data.failures import InputError
    from mmboundary.judging.bench import run_benchmark

    for path, option in ((cases, "--cases"), (data, "--data")):
        if not path.is_file():
            raise InputError(f"{option} {path}: no such file")
    if split not in {"test", "dev", "all"}:
        raise typer.BadParameter("must be test, dev or all", param_hint="--split")
    run_benchmark(cases, data, split=split, judges=[j for j in judges.split(",") if j],
                  nli_model=nli_model, llm_base_url=llm_base_url, llm_model=llm_model, out=out,
                  echo=typer.echo)


def register(app: typer.Typer) -> None:
    judge_app = typer.Typer(help="Step judges: is a predicted step correct against its "
                            "reference step? (pairs, bench)", no_args_is_help=True)
    judge_app.command("pairs")(pairs)
    judge_app.command("bench")(bench)
    app.add_typer(judge_app, name="judge")
