"""`mmboundary demo`: MMBoundary end to end on ShapesWorld, from the shipped world model to a report.

vanilla world VLM -> estimate (four estimators, calibrator) -> warm-up SFT -> RL (R_KA + R_EC +
R_CS) -> confidence-guided resampling, its setting chosen on validation (``demo.guided``) ->
every system and baseline answers the test split -> metrics -> report (Markdown, CSV, PNG,
HTML). Numbers are whatever the run gives; nothing is tuned on the test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mmboundary.demo.ablations import ablation_models
from mmboundary.demo.config import DemoConfig
from mmboundary.demo.diagnostics import diagnostics, report_parts
from mmboundary.demo.guided import check_guided_config, guided_decoding
from mmboundary.demo.stages import cached_stage, make_world, reinforce, vanilla_estimates, warmup

# Fields a resumed run may change: they add or redo their own stages (guided rows are added to
# a finished metrics stage, see _evaluate) or do not change results.
RESUMABLE_CHANGES = frozenset({"threads", "fresh", "guided", "diagnostics", "out_dir"})


def check_resume(config: DemoConfig) -> None:
    """Refuse to resume ``config.out`` when it was made with other settings.

    Finished stages are reused by folder; a run made with, say, another warm-up learning rate
    would otherwise mix its cached models into this run's table. ``fresh`` redoes every stage.
    A field the folder's record lacks was added after the folder was made; a new field's default
    keeps the old behaviour, so the default passes and any other value is a change."""
    from mmboundary.data.failures import InputError

    saved = config.out / "demo_config.json"
    if config.fresh or not saved.is_file():
        return
    old = json.loads(saved.read_text())
    new = json.loads(json.dumps(config.to_dict()))
    defaults = json.loads(json.dumps(DemoConfig().to_dict()))
    changed = [f"{key}: {old.get(key, '(not recorded)')!r} -> {new[key]!r}" for key in new
               if key not in RESUMABLE_CHANGES
               and old.get(key, defaults[key]) != new[key]]
    if changed:
        raise InputError(f"{config.out} was made with other settings ({'; '.join(changed)}); its "
                         "finished stages would be mixed into this run. Rerun with --fresh "
                         "(redo every stage) or choose another --out.")


def run_demo(config: DemoConfig, console: Console | None = None) -> Path:
    """Run every stage (resuming finished ones) and return the report folder."""
    import torch

    from mmboundary.shapesworld.scenes import shipped_world_clip_path, shipped_world_model_path

    console = console or Console()
    check_guided_config(config)  # before hours of training, not after
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    check_resume(config)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "demo_config.json").write_text(json.dumps(config.to_dict(), indent=1))
    vanilla = Path(config.vanilla_model) if config.vanilla_model else shipped_world_model_path()
    clip = Path(config.clip_model) if config.clip_model else shipped_world_clip_path()
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def stage(title: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        info = fn(*args, **kwargs)
        timings[title] = round(time.perf_counter() - t0, 1)
        console.print(f"{title}: done in {timings[title]} s" + (" (cached)" if info.get("cached") else ""))
        return info

    world = stage("1/6 ShapesWorld splits", make_world, config)
    est = stage("2/6 vanilla responses + internal confidence", vanilla_estimates, config, world,
                vanilla, clip)
    sft = stage("3/6 warm-up SFT (confidence expression)", warmup, config, world, est, vanilla)
    rl = stage("4/6 RL (R_KA + R_EC + R_CS)", reinforce, config, world, sft["model"],
               sft["calibrator"], clip)
    models = {"MMBoundary (ours: warm-up + RL)": rl["model"]}
    models.update(ablation_models(config, world, est, sft, vanilla, clip, stage))
    guided = (stage("4c/6 confidence-guided decoding (LEVEL, K chosen on validation)",
                    guided_decoding, config, world, rl["model"], vanilla, sft["calibrator"], clip)
              if config.guided else None)  # the Internal C row's calibrator for the vanilla model
    metrics = stage(f"5/6 evaluate systems and baselines on the {config.eval_split} split", _evaluate, config,
                    world, models, vanilla, sft["calibrator"], clip,
                    guided)
    diag = (stage("5b/6 diagnostics (stated vs internal level, linear probe)", diagnostics,
                  config, world, vanilla, est, sft, rl, models, clip)
            if config.diagnostics else None)
    report = stage("6/6 report", _report, config, world, metrics, rl, sft, timings, guided, diag)
    total = round(time.perf_counter() - start, 1)
    console.rule("[bold green]done")
    console.print(Path(report["markdown"]).read_text())
    console.print(f"Total {total} s. Report: {report['html']}")
    return Path(report["dir"])


def run_demo_seeds(config: DemoConfig, seeds: int, console: Console | None = None) -> Path:
    """``seeds`` full runs (seeds ``config.seed .. config.seed + seeds - 1``, each in
    ``out/seed-<k>``, resumable), then one report over all of them: every metric as mean +- sd
    over seeds, with each seed's own table kept. Returns the combined report folder."""
    from dataclasses import replace

    from mmboundary.demo.guided import guided_report
    from mmboundary.evaluation.report import write_report
    from mmboundary.shapesworld import read_split

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if seeds == 1:
        return run_demo(config, console)
    console = console or Console()
    files: list[str] = []  # metrics folders, one per seed
    guided: list[dict[str, Any]] = []  # each seed's guided stage
    for k in range(seeds):
        seed = config.seed + k
        console.rule(f"[bold]seed {seed} ({k + 1}/{seeds})")
        one = replace(config, seed=seed, out_dir=str(config.out / f"seed-{seed}"))
        run_demo(one, console)
        files.append(str(one.out / "metrics"))  # a folder: its evaluation results
        if config.guided:
            guided.append(_guided_info(one))
    folder = config.out / "report"
    tables, figures = guided_report(guided, folder) if guided else ([], {})
    if config.diagnostics:
        from mmboundary.demo.diagnostics import diagnostics_over_seeds

        infos = [json.loads((config.out / f"seed-{config.seed + k}" / "diagnostics" /
                             "diagnostics.json").read_text()) for k in range(seeds)]
        tables = [*tables, diagnostics_over_seeds(infos)]
    first = json.loads((config.out / f"seed-{config.seed}" / "world" / "done.json").read_text())
    paths = write_report(files, folder, title=f"MMBoundary demo on ShapesWorld, {seeds} seeds "
                         f"(mean +- sd)", notes={"seeds": [config.seed + k for k in range(seeds)],
                                                 "config": config.to_dict()}, published=False,
                         samples=read_split(first[config.eval_split]),  # the viewer's first run
                         tables=tables, figures=figures)
    console.rule("[bold green]all seeds done")
    console.print(Path(paths["markdown"]).read_text())
    console.print(f"Report over {seeds} seeds: {paths['html']}")
    return folder


def _guided_info(config: DemoConfig) -> dict[str, Any]:
    """A finished run's guided stage (its ``done.json``); an error naming it when missing."""
    from mmboundary.demo.guided import guided_folder
    from mmboundary.demo.stages import stage_done

    info = stage_done(guided_folder(config))
    if info is None:
        raise ValueError(f"{guided_folder(config)}/done.json: the guided stage of this run did "
                         "not finish (DemoConfig.guided is on)")
    return info


def _evaluate(config: DemoConfig, world: dict[str, Any], models: dict[str, str], vanilla: Path,
              calibrator: str, clip: Path,
              guided: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every system on ``config.eval_split``; the constant baselines fitted on validation;
    ``calibrator``: the Internal C row's, the warm-up's (fitted on the vanilla model's own train
    steps with the configured level rule: the levels the warm-up teaches);
    ``guided``: the guided stage's info, whose two guided rows are evaluated like the others
    (a finished metrics stage without them is redone)."""
    from mmboundary.demo.guided import guided_predictions, guided_settings, lacks_rows

    if config.eval_split not in ("test", "validation"):
        raise ValueError(f"DemoConfig.eval_split: expected 'test' or 'validation', got "
                         f"{config.eval_split!r}")
    folder = config.out / ("metrics" if config.eval_split == "test" else "metrics-validation")

    def run() -> dict[str, Any]:
        from mmboundary.data.io import write_json_atomic
        from mmboundary.demo.stages import step_rules
        from mmboundary.demo.systems import slug, system_predictions
        from mmboundary.evaluation.evaluate import EvalConfig, evaluate_predictions
        from mmboundary.shapesworld.scenes import read_split

        rules = step_rules()
        constants = _validation_constants(config, world, vanilla, rules)
        samples = read_split(world[config.eval_split])
        preds = system_predictions(config, samples, models, vanilla, calibrator, clip,
                                   constants, rules, split=config.eval_split)
        if guided is not None:
            from mmboundary.text import default_parser

            preds.update(guided_predictions(guided, default_parser()))
        files = {}
        label = f"ShapesWorld ({config.eval_split})"
        for name, responses in preds.items():
            result = evaluate_predictions(samples, responses, rules.similarity, system=name,
                                          dataset=label, rules=rules,
                                          config=EvalConfig(seed=config.seed))
            path = folder / f"{slug(name)}.json"
            write_json_atomic(path, result.to_dict())
            files[name] = str(path)
        return {"files": files, "constants": constants,
                **({"guided": guided_settings(guided)} if guided is not None else {})}

    return cached_stage(folder, config.fresh or lacks_rows(folder, guided), run)


def _validation_constants(config: DemoConfig, world: dict[str, Any], vanilla: Path,
                          rules: Any) -> dict[str, float]:
    """The constant baselines' values, fitted on the validation split at the granularity each is
    scored on: the vanilla model's answer accuracy (for ECE) and its aligned-step accuracy (for
    MECE), both judged by the one rule set."""
    from mmboundary.demo.systems import vanilla_responses
    from mmboundary.evaluation.evaluate import EvalConfig, evaluate_predictions
    from mmboundary.shapesworld.scenes import read_split

    val = read_split(world["validation"])
    responses = vanilla_responses(config, val, vanilla, config.out / "predictions-validation")
    result = evaluate_predictions(val, responses, rules.similarity, rules=rules,
                                  config=EvalConfig(bootstrap=0, parse="none"))
    judged = [r.answer_correct for r in result.samples if r.answer_correct is not None]
    step = result.metrics.get("step_accuracy")
    if not judged or step is None:
        raise ValueError("cannot fit the constant baselines: the vanilla model's validation "
                         f"responses have no judged answer or aligned step ({result.counts})")
    return {"answer": sum(judged) / len(judged), "step": float(step)}


def _report(config: DemoConfig, world: dict[str, Any], metrics: dict[str, Any],
            rl: dict[str, Any], sft: dict[str, Any], timings: dict[str, float],
            guided: dict[str, Any] | None = None,
            diag: dict[str, Any] | None = None) -> dict[str, Any]:
    from mmboundary.demo.guided import guided_report
    from mmboundary.evaluation.report import write_report
    from mmboundary.shapesworld import read_split

    folder = config.out / "report"
    tables, figures = guided_report([guided], folder) if guided is not None else ([], {})
    if sft.get("discrimination"):  # a warm-up stage fitted with the steps' correctness
        from mmboundary.evaluation.diagnostics import estimator_table

        tables.append(estimator_table(sft["discrimination"], sft.get("fusion")))
    diag_tables, diag_figures = report_parts(diag, Path(rl["model"]).parent / "heldout_log.jsonl")
    notes = {"seed": config.seed, "split": config.eval_split,
             "constants (fitted on validation)": metrics.get("constants"),
             "config": config.to_dict(), "stage_seconds": timings,
             "rl_rewards": rl.get("rewards"), "sft": {k: sft.get(k) for k in ("records", "levels",
                                                                              "loss", "fusion",
                                                                              "discrimination")},
             "guided (chosen on validation)": metrics.get("guided")}
    curve = _reward_curve_png(Path(rl["model"]).parent / "reward_log.jsonl")
    (folder / "rl_rewards.png").parent.mkdir(parents=True, exist_ok=True)
    (folder / "rl_rewards.png").write_bytes(curve)
    paths = write_report(list(metrics["files"].values()), folder, title="MMBoundary demo on "
                         "ShapesWorld", notes=notes, published=False,
                         figures={"RL training: mean reward per GRPO step": curve, **figures,
                                  **diag_figures},
                         samples=read_split(world[config.eval_split]),
                         tables=tables + diag_tables)
    return {"dir": str(folder), **{k: str(v) for k, v in paths.items()}}


def _reward_curve_png(log: Path) -> bytes:
    """Each reward's mean per logged GRPO step (from the RL stage's ``reward_log.jsonl``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmboundary.data.io import read_jsonl

    rows = list(read_jsonl(log))
    names = {"reward": "total R", "rewards/knowledge_accuracy_reward/mean": "R_KA",
             "rewards/expected_calibration_reward/mean": "R_EC",
             "rewards/confidence_self_calibration_reward/mean": "R_CS"}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key, label in names.items():
        points = [(i + 1, float(r[key])) for i, r in enumerate(rows) if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker=".", linewidth=1)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean over the step's completions")
    ax.legend(fontsize=8, ncol=4)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
