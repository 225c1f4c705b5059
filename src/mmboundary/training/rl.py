"""Stage 2: RL calibration with R_KA, R_EC and R_CS over TRL's GRPOTrainer (METHOD.md section 6).

The paper trains with PPO and GAE; TRL no longer ships PPO, so we use GRPO **(ours)**: per prompt a
group of ``num_generations`` completions, each scored by the weighted rewards
R = alpha R_KA + beta R_EC + gamma R_CS, advantages = the reward minus the group mean (scaled by the
group std), a KL term to the reference model (``kl_beta``). ``docs/RL.md`` explains what changes.

Dataset rows: ``{"prompt": [user turn with the image], "image": PIL, "sample": Sample JSON}``;
TRL hands ``sample`` and ``image`` to the rewards. The rewards share one ``StepAnalyzer``.
Outputs in ``output_dir``: ``model/`` (merged, loads with ``VLM.from_pretrained``),
``adapter/`` (LoRA runs), ``reward_log.jsonl`` (one line per logging step: every reward's mean and
std), ``heldout_log.jsonl`` (with ``eval_every``: ``training.heldout``), ``rl_config.yaml`` and
``rl_summary.json`` (first vs last logged reward means).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmboundary.data.io import read_jsonl, write_json_atomic
from mmboundary.data.schema import Sample
from mmboundary.judging.rules import StepRules
from mmboundary.training import rewards as R
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.step_analysis import StepAnalyzer

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def load_rl_samples(config: RLConfig) -> list[Sample]:
    """The training samples of ``train_file`` (any format ``data.loaders.load_annotated`` reads:
    the authors' annotated JSON, Sample JSON/JSONL, a ShapesWorld split), cut to ``max_samples``.
    Broken records are logged and skipped."""
    from mmboundary.data.loaders import load_annotated

    path = Path(config.train_file)
    if not path.is_file():
        raise FileNotFoundError(f"RLConfig.train_file: no file at {path}")
    loaded = load_annotated(path, images_dir=config.images_dir)
    for problem in loaded.errors:
        logger.warning("RL data: %s", problem)
    samples = loaded.samples
    samples = samples[: config.max_samples] if config.max_samples else samples
    if not samples:
        raise ValueError(f"RL: no training samples in {config.train_file}")
    return samples


def sample_image(sample: Sample, images_dir: str | None) -> Any:
    """The sample's PIL image from disk (``data.images``; a missing or broken one raises, naming
    the record)."""
    from mmboundary.data.images import load_image, resolve_image

    return load_image(resolve_image(sample, images_dir), sample.id)


def build_rl_dataset(samples: Sequence[Sample], images_dir: str | None,
                     instruction: str | None = None) -> Any:
    """A ``datasets.Dataset`` with ``prompt`` (chat messages), ``image`` and ``sample`` (JSON)."""
    from datasets import Dataset

    from mmboundary.models.prompts import build_messages, question_prompt

    rows = [{"prompt": build_messages(question_prompt(s, instruction)),
             "image": sample_image(s, images_dir),
             "sample": s.model_dump_json()} for s in samples]
    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Internal confidence i_t: confidence.InternalConfidenceScorer (the one scorer, shared with the
# "Internal C" baseline), on the level-value scale by default (METHOD.md section 6)
# ---------------------------------------------------------------------------------------------
def _build_internal(config: RLConfig, policy: Any, similarity: Any, parser: Any) -> Any:
    """The i_t scorer for R_CS (None when no calibrator is given).

    ``config.calibrator`` must be fitted on the scoring model's own steps (the warm-up model by
    default; ``internal_from="policy"`` scores with the policy, in eval mode, no gradients).
    i_t = the level value (2k - 1) / 10 of its fused C (``internal_scale="level"``) or C itself
    (``"raw"``, not recommended: see ``confidence.scorer``).
    """
    if config.calibrator is None:
        return None
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer

    calibrator = ConfidenceCalibrator.load(config.calibrator)
    if not calibrator.is_fitted:
        raise ValueError(f"RLConfig.calibrator: {config.calibrator} holds no fitted calibrator "
                         "(no normalisers or level cuts)")
    clip = None
    if "clips" in calibrator.estimators:
        if config.clip_model is None:
            raise ValueError(f"{config.calibrator}: the calibrator uses the CLIPS estimator; give "
                             "RLConfig.clip_model (a CLIP folder)")
        from mmboundary.models.clip import ClipScorer

        clip = ClipScorer.from_pretrained(config.clip_model, device="cpu")
    if config.internal_from == "policy":
        scorer_vlm = policy
    else:
        from mmboundary.models.vlm import VLM

        scorer_vlm = VLM.from_pretrained(config.internal_model or config.model, device=_device())
        scorer_vlm.model.requires_grad_(False)
    probe = None
    if config.probe is not None:
        from mmboundary.confidence.probe_teacher import StepProbe

        probe = StepProbe.load(config.probe)
    return InternalConfidenceScorer(
        scorer_vlm, calibrator, similarity=similarity, clip=clip, parser=parser,
        instruction=config.instruction, batch_size=config.internal_batch_size,
        image_loader=lambda sample: (sample_image(sample, config.images_dir), sample.id),
        scale=config.internal_scale, probe=probe)


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


# ---------------------------------------------------------------------------------------------
# Rewards as TRL sees them, and the reward log
# ---------------------------------------------------------------------------------------------
def build_reward_functions(config: RLConfig,
                           analyzer: StepAnalyzer) -> tuple[list[Any], list[float]]:
    """Reward callables + weights for TRL. R_KA, R_EC and the format score are always computed
    (cheap, shared analysis; logged even at weight 0 so ablations stay comparable); R_CS whenever
    an internal-confidence scorer exists. TRL logs each as ``rewards/<function name>/mean|std``."""
    funcs = [functools.partial(R.knowledge_accuracy_reward, analyzer=analyzer),
             functools.partial(R.expected_calibration_reward, analyzer=analyzer)]
    weights = [config.alpha, config.beta]
    if analyzer.internal is not None:
        funcs.append(functools.partial(R.confidence_self_calibration_reward, analyzer=analyzer,
                                       form=config.cs_form))
        weights.append(config.gamma)
    elif config.gamma > 0:
        raise ValueError("RL: gamma > 0 needs an internal-confidence scorer (RLConfig.calibrator)")
    funcs.append(functools.partial(R.format_reward, analyzer=analyzer))
    weights.append(config.format_weight)
    return funcs, weights


_LOGGED_PREFIXES = ("rewards/", "reward", "mmb/", "kl", "entropy", "completions/mean_length",
                    "learning_rate", "loss", "step_time",
                    "num_tokens")


def reward_log_callback(path: Path) -> Any:
    """A ``TrainerCallback`` appending each training log's reward statistics to ``path``."""
    from transformers import TrainerCallback

    class RewardLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
                   **kwargs: Any) -> None:
            if not logs or not state.is_world_process_zero or "train_runtime" in logs:
                return
            row = {"step": state.global_step,
                   **{k: v for k, v in logs.items() if k.startswith(_LOGGED_PREFIXES)}}
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    return RewardLog()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def grpo_args(config: RLConfig, reward_weights: list[float]) -> Any:
    """TRL ``GRPOConfig`` from an ``RLConfig`` (CPU: ``use_cpu``, fp32, no trackers)."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    use_cpu = (not cuda) if config.use_cpu is None else config.use_cpu
    bf16 = (not use_cpu and cuda and torch.cuda.is_bf16_supported()) if config.bf16 is None \
        else config.bf16
    return GRPOConfig(
        output_dir=str(Path(config.output_dir) / "trainer"), use_cpu=use_cpu, bf16=bf16,
        report_to=list(config.report_to), seed=config.seed,
        learning_rate=config.learning_rate, beta=config.kl_beta,
        num_generations=config.num_generations, reward_weights=reward_weights,
        scale_rewards=config.scale_rewards,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_completion_length=config.max_completion_length, temperature=config.temperature,
        top_p=config.top_p, max_steps=config.max_steps, num_train_epochs=config.num_train_epochs,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps > 0 else "no",
        save_steps=max(config.save_steps, 1), use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode, remove_unused_columns=False,
        gradient_checkpointing=config.gradient_checkpointing)


def _peft_config(config: RLConfig, model: Any) -> Any:
    if not config.use_lora:
        return None
    from peft import LoraConfig

    from mmboundary.training.sft import language_linear_modules

    targets = config.lora_target_modules
    if targets == "language-linear":
        targets = language_linear_modules(model)
    elif isinstance(targets, str):
        raise ValueError(f"RLConfig.lora_target_modules: 'language-linear' or a list of module "
                         f"names, got {targets!r}")
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(targets),
                      task_type="CAUSAL_LM")


def _save_final(trainer: Any, processor: Any, config: RLConfig) -> Path:
    """Save ``adapter/`` (LoRA) and the merged ``model/``; returns the loadable model folder.
    Every process calls it (``save_model`` gathers ZeRO-3 shards); only the main one writes, and
    the merge reads the saved adapter (``training.sft.merge_lora_adapter``)."""
    from mmboundary.training.sft import merge_lora_adapter, record_save

    out, main = Path(config.output_dir), trainer.is_world_process_zero()
    lora = hasattr(trainer.accelerator.unwrap_model(trainer.model), "merge_and_unload")
    target = out / ("adapter" if lora and not config.merge_lora else "model")
    trainer.save_model(str(out / "adapter" if lora else target))
    if main:
        if lora and config.merge_lora:
            dtype = next(trainer.accelerator.unwrap_model(trainer.model).parameters()).dtype
            merge_lora_adapter(config.model, out / "adapter", dtype).save_pretrained(target)
        processor.save_pretrained(target)
        record_save(out, target)
    trainer.accelerator.wait_for_everyone()
    return target


def train_rl(config: RLConfig, heldout_metrics: Any = None) -> Path:
    """Run stage 2 and return the folder of the trained model (see module docstring).

    ``heldout_metrics``: with ``config.eval_every`` > 0, the evaluation metrics of the held-out
    answers besides the rewards (``training.heldout.HeldoutMetrics``, e.g.
    ``evaluation.heldout.heldout_metrics``)."""
    config.check_ready()
    from trl import GRPOTrainer

    from mmboundary.models.similarity import load_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.text import StatementParser

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "reward_log.jsonl"
    if int(os.environ.get("RANK", "0")) == 0:  # the main process logs and saves
        config.to_yaml(out / "rl_config.yaml")
        log_path.unlink(missing_ok=True)
        (out / "saves.jsonl").unlink(missing_ok=True)
        (out / "heldout_log.jsonl").unlink(missing_ok=True)

    samples = load_rl_samples(config)
    dataset = build_rl_dataset(samples, config.images_dir, config.instruction)
    dtype = "float32" if config.bf16 is False or _device() == "cpu" else "auto"
    policy = VLM.from_pretrained(config.model, device="cpu", dtype=dtype)
    similarity = load_similarity(config.similarity)
    parser = StatementParser(similarity=similarity, mode=config.statement_mode)
    rules = StepRules(config.rules(), similarity=similarity)
    analyzer = StepAnalyzer(parse=parser.parse, rules=rules,
                            internal=_build_internal(config, policy, similarity, parser))
    funcs, weights = build_reward_functions(config, analyzer)
    callbacks = [reward_log_callback(log_path)]
    if config.eval_every > 0:  # held-out curves (training.heldout)
        from mmboundary.training.heldout import heldout_evaluation

        callbacks.append(heldout_evaluation(config, policy, analyzer, funcs,
                                            out / "heldout_log.jsonl", heldout_metrics).callback())
    trainer_class, extra = GRPOTrainer, {}
    if config.credit == "step":  # training.step_credit: R_EC / R_CS go to the statements alone
        from mmboundary.training.step_credit import step_credit_trainer_class

        trainer_class = step_credit_trainer_class()
        extra = {"analyzer": analyzer, "beta": config.beta, "gamma": config.gamma,
                 "cs_form": config.cs_form}
        weights = [w if f.func not in (R.expected_calibration_reward,
                                       R.confidence_self_calibration_reward) else 0.0
                   for f, w in zip(funcs, weights, strict=True)]
    trainer = trainer_class(model=policy.model, reward_funcs=funcs,
                            args=grpo_args(config, weights), train_dataset=dataset,
                            processing_class=policy.processor,
                            peft_config=_peft_config(config, policy.model), callbacks=callbacks,
                            **extra)
    logger.info("RL: %d samples, rewards %s, weights %s, credit %s", len(samples),
                [f.func.__name__ for f in funcs], weights, config.credit)
    paid_wrong = -R.correctness_incentive(weights[0], weights[1], 0.1, 1)
    if paid_wrong > 0:  # docs/RL.md, "What the weighted sum pays for a right step"
        logger.info("RL: at alpha %.3g, beta %.3g a step stated at level 1 (0.1) earns %.3g / T "
                    "more reward when it is wrong (alpha >= 1.6 beta removes this)",
                    weights[0], weights[1], paid_wrong)
    trainer.train()
    path = _save_final(trainer, policy.processor, config)
    if trainer.is_world_process_zero():
        write_json_atomic(out / "rl_summary.json", summarize_reward_log(log_path))
    return path


def summarize_reward_log(path: Path) -> dict[str, Any]:
    """First vs last logged mean of every ``rewards/*/mean`` (and the total ``reward``)."""
    rows = list(read_jsonl(path)) if path.is_file() else []
    keys = sorted({k for r in rows for k in r if k == "reward" or k.endswith("/mean")})
    summary: dict[str, Any] = {"logged_steps": len(rows)}
    for key in keys:
        values = [r[key] for r in rows if key in r]
        summary[key] = {"first": values[0], "last": values[-1], "mean": float(np.mean(values))}
    return summary
