"""`mmboundary demo`: MMBoundary end to end on ShapesWorld, from the shipped world model to a report.

vanilla world VLM -> estimate (four estimators, calibrator) -> warm-up SFT -> RL (R_KA + R_EC +
R_CS) -> every system and baseline answers the test split -> metrics -> report (Markdown, CSV,
PNG, HTML). Numbers are whatever the run gives; nothing is tuned on the test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mmboundary.demo.config import DemoConfig
from mmboundary.demo.stages import cached_stage, make_world, reinforce, vanilla_estimates, warmup

ABLATION_NAMES = {
    "wo_rl": "MMBoundary w/o RL (warm-up only)",
    "w_max": "MMBoundary w U_Max (w/o RL)",
    "wo_lnlp": "MMBoundary w/o U_LNLP (w/o RL)",
    "wo_mte": "MMBoundary w/o U_MTE (w/o RL)",
    "wo_tokensar": "MMBoundary w/o U_TSAR (w/o RL)",
    "wo_clips": "MMBoundary w/o U_CLIPS (w/o RL)",
}


def run_demo(config: DemoConfig, console: Console | None = None) -> Path:
    """Run every stage (resuming finished ones) and return the report folder."""
    import torch

    from mmboundary.shapesworld.scenes import shipped_world_clip_path, shipped_world_model_path

    console = console or Console()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
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
    for ablation in config.ablations:
        if ablation == "wo_rl":
            models[ABLATION_NAMES[ablation]] = sft["model"]
        elif ablation == "drl":
            drl = stage("4b/6 DRL baseline (RL without warm-up)", reinforce, config, world,
                        str(vanilla), est["calibrator"], clip, name="drl")
            models["DRL (RL without warm-up)"] = drl["model"]
        else:
            variant = stage(f"3b/6 warm-up variant {ablation}", warmup, config, world, est,
                            vanilla, variant=ablation)
            models[ABLATION_NAMES[ablation]] = variant["model"]
    metrics = stage(f"5/6 evaluate systems and baselines on the {config.eval_split} split", _evaluate, config,
                    world, models, vanilla, est, clip)
    report = stage("6/6 report", _report, config, world, metrics, rl, sft, timings)
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

    from mmboundary.evaluation.report import write_report
    from mmboundary.shapesworld import read_split

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if seeds == 1:
        return run_demo(config, console)
    console = console or Console()
    files: list[str] = []  # metrics folders, one per seed
    for k in range(seeds):
        seed = config.seed + k
        console.rule(f"[bold]seed {seed} ({k + 1}/{seeds})")
        one = replace(config, seed=seed, out_dir=str(config.out / f"seed-{seed}"))
        run_demo(one, console)
        files.append(str(one.out / "metrics"))  # a folder: its evaluation results
    folder = config.out / "report"
    first = json.loads((config.out / f"seed-{config.seed}" / "world" / "done.json").read_text())
    paths = write_report(files, folder, title=f"MMBoundary demo on ShapesWorld, {seeds} seeds "
                         f"(mean +- sd)", notes={"seeds": [config.seed + k for k in range(seeds)],
                                                 "config": config.to_dict()}, published=False,
                         samples=read_split(first[config.eval_split]))  # the viewer's first run
    console.rule("[bold green]all seeds done")
    console.print(Path(paths["markdown"]).read_text())
    console.print(f"Report over {seeds} seeds: {paths['html']}")
    return folder


def _evaluate(config: DemoConfig, world: dict[str, Any], models: dict[str, str], vanilla: Path,
              est: dict[str, Any], clip: Path) -> dict[str, Any]:
    """Every system on ``config.eval_split``; the constant baselines fitted on validation."""
    if config.eval_split not in ("test", "validation"):
        raise ValueError(f"DemoConfig.eval_split: expected 'test' or 'validation', got "
                         f"{config.eval_split!r}")
    folder = config.out / ("metrics" if config.eval_split == "test" else "metrics-validation")

    def run() -> dict[str, Any]:
        from mmboundary.data.io import write_json_atomic
        from mmboundary.demo.systems import slug, system_predictions
        from mmboundary.evaluation.evaluate import EvalConfig, evaluate_predictions
        from mmboundary.judging.rules import RuleConfig, StepRules
        from mmboundary.models.similarity import default_similarity
        from mmboundary.shapesworld.scenes import read_split

        rules = StepRules(RuleConfig(), similarity=default_similarity())
        constants = _validation_constants(config, world, vanilla, rules)
        samples = read_split(world[config.eval_split])
        preds = system_predictions(config, samples, models, vanilla, est["calibrator"], clip,
                                   constants, rules, split=config.eval_split)
        files = {}
        label = f"ShapesWorld ({config.eval_split})"
        for name, responses in preds.items():
            result = evaluate_predictions(samples, responses, rules.similarity, system=name,
                                          dataset=label, rules=rules,
                                          config=EvalConfig(seed=config.seed))
            path = folder / f"{slug(name)}.json"
            write_json_atomic(path, result.to_dict())
            files[name] = str(path)
        return {"files": files, "constants": constants}

    return cached_stage(folder, config.fresh, run)


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
            rl: dict[str, Any], sft: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    from mmboundary.evaluation.report import write_report
    from mmboundary.shapesworld import read_split

    folder = config.out / "report"
    notes = {"seed": config.seed, "split": config.eval_split,
             "constants (fitted on validation)": metrics.get("constants"),
             "config": config.to_dict(), "stage_seconds": timings,
             "rl_rewards": rl.get("rewards"), "sft": {k: sft.get(k) for k in ("records", "levels",
                                                                              "loss")}}
    curve = _reward_curve_png(Path(rl["model"]).parent / "reward_log.jsonl")
    (folder / "rl_rewards.png").parent.mkdir(parents=True, exist_ok=True)
    (folder / "rl_rewards.png").write_bytes(curve)
    paths = write_report(list(metrics["files"].values()), folder, title="MMBoundary demo on "
                         "ShapesWorld", notes=notes, published=False,
                         figures={"RL training: mean reward per GRPO step": curve},
                         samples=read_split(world[config.eval_split]))
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
