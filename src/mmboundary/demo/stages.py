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
    """ShapesWorld train, validation and test splits (hash-disjoint scenes) with their PNGs under
    ``out/world``."""
    from mmboundary.shapesworld.scenes import write_split

    folder = config.out / "world"

    def run() -> dict[str, Any]:
        train = write_split(folder, config.n_train, "train", seed=config.seed)
        val = write_split(folder, config.n_val, "validation", seed=config.seed)
        test = write_split(folder, config.n_test, "test", seed=config.seed)
        return {"train": str(train), "validation": str(val), "test": str(test)}

    info = cached_stage(folder, config.fresh, run)
    if "validation" not in info:  # a world made before the validation split existed
        info["validation"] = str(write_split(folder, config.n_val, "validation", seed=config.seed))
        mark_done(folder, {k: v for k, v in info.items() if k != "cached"})
    return info


def vanilla_estimates(config: DemoConfig, world: dict[str, Any], vanilla: Path,
                      clip: Path) -> dict[str, Any]:
    """The vanilla model answers the train split; each step gets the four raw scores; the
    calibrator (normalisers + mean fusion + level cuts) is fitted on those steps."""
    folder = config.out / "estimate"

    def run() -> dict[str, Any]:
        from mmboundary.confidence import ConfidenceCalibrator, EstimateConfig, estimate_dataset
        from mmboundary.confidence.outputs import calibrator_path_for
        from mmboundary.models.clip import ClipScorer
        from mmboundary.models.similarity import default_similarity
        from mmboundary.models.vlm import VLM
        from mmboundary.shapesworld.scenes import read_split

        vlm = VLM.from_pretrained(vanilla, device="cpu", dtype="float32")
        samples = read_split(world["train"])
        out = folder / "train.jsonl"
        if config.fresh:  # the file resumes by sample id: --fresh must not reuse its lines
            out.unlink(missing_ok=True)
            calibrator_path_for(out).unlink(missing_ok=True)
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
    """The calibrator of the full method or of an estimation ablation (``w_max``, ``wo_<est>``),
    unfitted, with the configured level rule."""
    from mmboundary.confidence import ConfidenceCalibrator, LevelCuts
    from mmboundary.confidence.fusion import Fusion

    estimators = tuple(config.estimators)
    common = {"levels": LevelCuts(rule=config.level_rule), "answer_step": config.answer_step}
    if name.startswith("wo_") and name[3:] in estimators:
        return ConfidenceCalibrator(estimators=tuple(e for e in estimators if e != name[3:]),
                                    fusion=Fusion(config.fusion), **common)
    if name == "w_max":
        return ConfidenceCalibrator(estimators=estimators, fusion=Fusion("max"), **common)
    if name in ("mmboundary", "wo_ssmap"):  # w/o S-S mapping changes the statements only
        return ConfidenceCalibrator(estimators=estimators, fusion=Fusion(config.fusion), **common)
    raise ValueError(f"unknown calibrator variant {name!r}: expected mmboundary, w_max or "
                     f"wo_<estimator> with an estimator of {estimators}")


def step_rules() -> Any:
    """The one rule set the demo judges with (evaluation, constants, level labels)."""
    from mmboundary.judging.rules import RuleConfig, StepRules
    from mmboundary.models.similarity import default_similarity

    return StepRules(RuleConfig(), similarity=default_similarity())


def label_steps(samples: Any, responses: Any) -> list[list[float | None]]:
    """Each step's correctness against its sample's reference (the accuracy level rule's labels)."""
    return step_rules().step_labels(samples, [r.steps for r in responses])


def warmup(config: DemoConfig, world: dict[str, Any], estimates: dict[str, Any], vanilla: Path,
           variant: str = "mmboundary") -> dict[str, Any]:
    """Stage 1: statements from the variant's levels on the vanilla responses, then SFT."""
    folder = config.out / f"sft-{variant}"

    def run() -> dict[str, Any]:
        from mmboundary.confidence import InternalConfidenceScorer
        from mmboundary.confidence.outputs import failed
        from mmboundary.data.io import read_responses, write_jsonl_atomic
        from mmboundary.training.config import SFTConfig
        from mmboundary.training.sft import train_sft
        from mmboundary.training.sft_data import build_sft

        responses = read_responses(estimates["estimates"])
        ok = [r for r in responses if not failed(r)]
        labels, chains = None, None
        probe = config.sft_teacher == "probe" and variant == "mmboundary"
        calibrator = calibrator_variant(variant, config)
        if calibrator.needs_labels or probe:
            from mmboundary.shapesworld.scenes import read_split

            by_id = {s.id: s for s in read_split(world["train"])}
            chains = label_steps([by_id[r.sample_id] for r in ok], ok)
        if calibrator.needs_labels:
            labels = [y for chain in chains for y in chain]
        calibrator = calibrator.fit(
            [s.raw_scores for r in ok for s in r.steps], labels, [len(r.steps) for r in ok])
        InternalConfidenceScorer(None, calibrator).calibrate(ok)  # raw scores are in the file
        teacher = None
        if probe:
            teacher = _probe_teacher(config, world, ok, vanilla, chains)
            from mmboundary.data.io import write_json_atomic

            write_json_atomic(folder / "probe_teacher.json", teacher)
        leveled = folder / "estimates.jsonl"
        write_jsonl_atomic(leveled, [r.model_dump(mode="json") for r in ok])
        calibrator.save(folder / "calibrator.json")
        from mmboundary.text.statements import default_bank

        bank = (default_bank().subset(config.statements_per_level)
                if config.statements_per_level else None)
        mode = "numeric" if variant == "wo_ssmap" else "statement"
        data_dir, summary, _ = build_sft(leveled, world["train"], folder / "data", seed=config.seed,
                                         mode=mode,
                                         bank=bank)
        augment = None
        if config.sft_augment:  # the same records, random levels, trained on content only
            augment, _, _ = build_sft(leveled, world["train"], folder / "data-random-levels",
                                      seed=config.seed, mode=mode, bank=bank, levels="random")
        sft = SFTConfig.from_dict({"preset": "tiny-cpu"}, model=str(vanilla),
                                  dataset=str(data_dir), output_dir=str(folder / "run"),
                                  content_only_dataset=str(augment or ""),
                                  finetuning=config.sft_finetuning, learning_rate=config.sft_lr,
                                  distill_weight=config.sft_distill,
                                  content_weight=config.sft_content_weight,
                                  num_train_epochs=config.sft_epochs, seed=config.seed,
                                  batch_size=16, per_device_train_batch_size=16)
        model = train_sft(sft)
        return {"model": str(model), "calibrator": str(folder / "calibrator.json"),
                "records": summary.records, "levels": summary.levels,
                **({"content_only_dataset": str(augment)} if augment else {}),
                "level_rule": calibrator.levels.rule,
                "fusion": calibrator.fusion.to_dict(),
                "discrimination": calibrator.discrimination_,
                "loss": _loss_curve(folder / "run" / "train_log.json"),
                **({"teacher": "probe", "probe_teacher": teacher} if teacher else {})}

    return cached_stage(folder, config.fresh, run)


def _probe_teacher(config: DemoConfig, world: dict[str, Any], responses: list, vanilla: Path,
                   labels: list[list[float | None]]) -> dict[str, Any]:
    """``sft_teacher == "probe"``: each step of the vanilla model's train answers gets the level
    of a cross-fitted linear probe on its hidden state (``confidence.probe_teacher``), in place;
    ``labels``: each step's correctness, per response. Returns what was done (cuts, level
    counts, the probe's cross-fitted AUROC)."""
    from mmboundary.confidence.probe_teacher import step_states, teach_probe_levels
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, read_split

    by_id = {s.id: s for s in read_split(world["train"])}
    vlm = VLM.from_pretrained(vanilla, device="cpu", dtype="float32")
    states = step_states(vlm, [by_id[r.sample_id] for r in responses], responses, load_image,
                         batch_size=config.batch_size)
    return teach_probe_levels(responses, states, labels, seed=config.seed).to_dict()


def _loss_curve(path: Path) -> dict[str, float]:
    logs = [row["loss"] for row in json.loads(path.read_text()) if "loss" in row]
    return {"first": logs[0], "last": logs[-1]} if logs else {}


def start_model_calibrator(config: DemoConfig, world: dict[str, Any], start_model: str,
                           clip: Path, path: Path, variant: str = "mmboundary") -> dict[str, Any]:
    """The calibrator of the model that scores R_CS's i_t (METHOD.md section 6).

    The RL start model answers the first ``rl_calibrator_samples`` train questions (0 =
    ``n_rl``, the RL prompts) greedily, the one ``InternalConfidenceScorer`` scores the content
    of its steps, and the calibrator (the full method's estimators, normalisers, fusion and
    level rule; a warm-up ``variant``'s estimators and fusion) is fitted on those steps and saved
    to ``path``. Returns its path and the level counts of the fitted steps."""
    from mmboundary.confidence import InternalConfidenceScorer
    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.similarity import default_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import read_split
    from mmboundary.text.statement_parser import default_parser

    if config.rl_calibrator_samples < 0:
        raise ValueError(f"DemoConfig.rl_calibrator_samples: expected >= 0 (0 = n_rl), got "
                         f"{config.rl_calibrator_samples}")
    samples = read_split(world["train"])[: config.rl_calibrator_samples or config.n_rl]
    scorer = InternalConfidenceScorer(
        VLM.from_pretrained(start_model, device="cpu", dtype="float32"),
        calibrator_variant(variant, config),
        similarity=default_similarity(), clip=ClipScorer.from_pretrained(clip, device="cpu"),
        batch_size=config.batch_size,
        parser=default_parser("numeric" if variant == "wo_ssmap" else "statement"))
    probe = config.sft_teacher == "probe" and variant == "mmboundary"
    calibrator = scorer.fit_calibrator(
        samples, max_new_tokens=config.max_new_tokens,
        label_steps=label_steps if scorer.calibrator.needs_labels or probe else None,
        probe=probe, seed=config.seed)
    calibrator.save(path)
    probe_info = {}
    if probe:  # i_t = the start model's own probe, the teacher its statements were taught from
        probe_path = scorer.probe.save(path.with_name("probe.json"))
        probe_info = {"probe": str(probe_path), "probe_fit": scorer.probe.info}
    answer = getattr(calibrator, "answer_levels_", None)  # answer_step other than "own"
    return {"calibrator": str(path), "samples": len(samples),
            "failed": len(scorer.errors), "levels": calibrator.levels_.counts_,
            **({"answer_levels": answer.counts_} if answer is not None else {}), **probe_info}


def reinforce(config: DemoConfig, world: dict[str, Any], start_model: str, calibrator: str,
              clip: Path, name: str = "rl", rl_ablation: str | None = None,
              variant: str = "mmboundary") -> dict[str, Any]:
    """Stage 2: GRPO with R_KA + R_EC + R_CS from ``start_model`` (i_t by the frozen start).

    ``rl_ablation``: ``RLConfig.ablation`` (``wo_ka``, ``wo_ec``, ``wo_cs``: that reward's weight
    0); ``variant``: the warm-up variant the start model comes from (its estimators score
    i_t; ``wo_ssmap`` states numbers).

    i_t's calibrator: with ``config.rl_calibrator == "start_model"`` (default) one fitted on the
    start model's own steps (``start_model_calibrator``); with ``"given"`` the ``calibrator``
    passed in (the warm-up's, fitted on the vanilla model)."""
    folder = config.out / name
    if config.rl_calibrator not in ("start_model", "given"):
        raise ValueError(f"DemoConfig.rl_calibrator: expected 'start_model' or 'given', got "
                         f"{config.rl_calibrator!r}")

    def run() -> dict[str, Any]:
        from mmboundary.training.rl import train_rl
        from mmboundary.training.rl_config import RLConfig

        fitted = None
        if config.rl_calibrator == "start_model":
            fitted = start_model_calibrator(config, world, start_model, clip,
                                            folder / "calibrator.json", variant)
        rl = RLConfig(model=start_model, output_dir=str(folder / "run"),
                      train_file=world["train"], max_samples=config.n_rl,
                      calibrator=fitted["calibrator"] if fitted else calibrator,
                      probe=fitted.get("probe") if fitted else None,
                      clip_model=str(clip), num_generations=config.rl_generations,
                      per_device_train_batch_size=config.rl_batch,
                      learning_rate=config.rl_lr, kl_beta=config.rl_kl_beta,
                      alpha=config.rl_weights[0], beta=config.rl_weights[1],
                      gamma=config.rl_weights[2], credit=config.rl_credit,
                      cs_form=config.rl_cs_form,
                      temperature=config.rl_temperature,
                      max_steps=config.rl_steps, max_completion_length=config.max_new_tokens,
                      use_lora=False, seed=config.seed, use_cpu=True, bf16=False,
                      internal_batch_size=config.batch_size, eval_every=config.rl_eval_every,
                      eval_file=world["validation"], eval_samples=config.rl_eval_samples,
                      eval_batch_size=config.batch_size,
                      statement_mode="numeric" if variant == "wo_ssmap" else "statement",
                      ablation=rl_ablation)
        from mmboundary.evaluation.heldout import heldout_metrics

        model = train_rl(rl, heldout_metrics=heldout_metrics)
        summary = json.loads((folder / "run" / "rl_summary.json").read_text())
        return {"model": str(model), "rewards": summary, "calibrator": rl.calibrator,
                "calibrator_fit": fitted}

    return cached_stage(folder, config.fresh, run)
