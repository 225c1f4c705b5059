"""The demo's training stages: world splits, vanilla estimates, warm-up SFT (and its ablation
variants), RL. Each stage writes into its own folder and a ``done.json``; a rerun skips it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmboundary.demo.config import DemoConfig


def stage_done(folder: Path) -> dict[str, Any] | None:
    marker = folder / "done.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


def mark_done(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    from mmboundary.data.io import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "done.json", info)
    return info


def cached_stage(folder: Path, fresh: bool, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run`` unless ``folder/done.json`` exists (and not ``fresh``); time it."""
    info = None if fresh else stage_done(folder)
    if info is not None:
        info["cached"] = True
        return info
    start = time.perf_counter()
    info = run()
    info["seconds"] = round(time.perf_counter() - start, 1)
    return mark_done(folder, info)


def make_world(config: DemoConfig) -> dict[str, Any]:
    """ShapesWorld train and test splits with their PNGs under ``out/world``."""
    from mmboundary.data.shapes import write_split

    folder = config.out / "world"

    def run() -> dict[str, Any]:
        train = write_split(folder, config.n_train, "train", seed=config.seed)
        test = write_split(folder, config.n_test, "test", seed=config.seed)
        return {"train": str(train), "test": str(test)}

    return cached_stage(folder, config.fresh, run)


def vanilla_estimates(config: DemoConfig, world: dict[str, Any], vanilla: Path,
                      clip: Path) -> dict[str, Any]:
    """The vanilla model answers the train split; each step gets the four raw scores; the
    calibrator (normalisers + mean fusion + level cuts) is fitted on those steps."""
    folder = config.out / "estimate"

    def run() -> dict[str, Any]:
        from mmboundary.confidence import ConfidenceCalibrator, EstimateConfig, estimate_dataset
        from mmboundary.confidence.outputs import calibrator_path_for
        from mmboundary.data.shapes import read_split
        from mmboundary.models.clip import ClipScorer
        from mmboundary.models.similarity import default_similarity
        from mmboundary.models.vlm import VLM

        vlm = VLM.from_pretrained(vanilla, device="cpu", dtype="float32")
        samples = read_split(world["train"])
        out = folder / "train.jsonl"
        summary = estimate_dataset(
            vlm, samples, out, similarity=default_similarity(),
            clip=ClipScorer.from_pretrained(clip, device="cpu"),
            template=ConfidenceCalibrator(estimators=tuple(config.estimators)),
            config=EstimateConfig(estimators=tuple(config.estimators),
                                  max_new_tokens=config.max_new_tokens,
                                  batch_size=config.batch_size, parse_statements=False),
            progress=True)
        return {"estimates": str(out), "calibrator": str(calibrator_path_for(out)),
                "written": summary.written, "failed": summary.failed}

    return cached_stage(folder, config.fresh, run)


def calibrator_variant(name: str, config: DemoConfig) -> Any:
    """The calibrator of the full method or of an estimation ablation (``w_max``, ``wo_<est>``)."""
    from mmboundary.confidence import ConfidenceCalibrator
    from mmboundary.confidence.fusion import Fusion

    estimators = tuple(config.estimators)
    if name.startswith("wo_") and name[3:] in estimators:
        return ConfidenceCalibrator(estimators=tuple(e for e in estimators if e != name[3:]))
    if name == "w_max":
        return ConfidenceCalibrator(estimators=estimators, fusion=Fusion("max"))
    if name == "mmboundary":
        return ConfidenceCalibrator(estimators=estimators)
    raise ValueError(f"unknown calibrator variant {name!r}: expected mmboundary, w_max or "
                     f"wo_<estimator> with an estimator of {estimators}")


def warmup(config: DemoConfig, world: dict[str, Any], estimates: dict[str, Any], vanilla: Path,
           variant: str = "mmboundary") -> dict[str, Any]:
    """Stage 1: statements from the variant's levels on the vanilla responses, then SFT."""
    folder = config.out / f"sft-{variant}"

    def run() -> dict[str, Any]:
        from mmboundary.confidence.outputs import apply_calibrator, failed
        from mmboundary.data.io import read_responses, write_jsonl_atomic
        from mmboundary.training.config import SFTConfig
        from mmboundary.training.sft import train_sft
        from mmboundary.training.sft_data import build_sft

        responses = read_responses(estimates["estimates"])
        ok = [r for r in responses if not failed(r)]
        calibrator = calibrator_variant(variant, config)
        calibrator.fit([s.raw_scores for r in ok for s in r.steps])
        apply_calibrator(ok, calibrator)
        leveled = folder / "estimates.jsonl"
        write_jsonl_atomic(leveled, [r.model_dump(mode="json") for r in ok])
        calibrator.save(folder / "calibrator.json")
        data_dir, summary, _ = build_sft(leveled, world["train"], folder / "data", seed=config.seed)
        sft = SFTConfig.from_dict({"preset": "tiny-cpu"}, model=str(vanilla),
                                  dataset=str(data_dir), output_dir=str(folder / "run"),
                                  finetuning=config.sft_finetuning, learning_rate=config.sft_lr,
                                  num_epochs=config.sft_epochs, seed=config.seed,
                                  batch_size=16, per_device_batch_size=16)
        model = train_sft(sft)
        return {"model": str(model), "calibrator": str(folder / "calibrator.json"),
                "records": summary.records, "levels": summary.levels,
                "loss": _loss_curve(folder / "run" / "train_log.json")}

    return cached_stage(folder, config.fresh, run)


def _loss_curve(path: Path) -> dict[str, float]:
    logs = [row["loss"] for row in json.loads(path.read_text()) if "loss" in row]
    return {"first": logs[0], "last": logs[-1]} if logs else {}


def reinforce(config: DemoConfig, world: dict[str, Any], start_model: str, calibrator: str,
              clip: Path, name: str = "rl") -> dict[str, Any]:
    """Stage 2: GRPO with R_KA + R_EC + R_CS from ``start_model`` (i_t by the frozen start)."""
    folder = config.out / name

    def run() -> dict[str, Any]:
        from mmboundary.training.rl import train_rl
        from mmboundary.training.rl_config import RLConfig

        rl = RLConfig(model=start_model, output_dir=str(folder / "run"),
                      train_file=world["train"], max_samples=config.n_rl,
                      calibrator=calibrator, clip_model=str(clip),
                      num_generations=config.rl_generations,
                      per_device_train_batch_size=config.rl_batch,
                      learning_rate=config.rl_lr, kl_beta=config.rl_kl_beta,
                      temperature=config.rl_temperature,
                      max_steps=config.rl_steps, max_completion_length=config.max_new_tokens,
                      use_lora=False, seed=config.seed, use_cpu=True, bf16=False,
                      internal_batch_size=config.batch_size)
        model = train_rl(rl)
        summary = json.loads((folder / "run" / "rl_summary.json").read_text())
        return {"model": str(model), "rewards": summary}

    return cached_stage(folder, config.fresh, run)
