"""The stage 2 (RL calibration) configuration: one dataclass, mirrored by ``configs/rl_*.yaml``.

Every field has a documented default; METHOD.md "(ours)" choices are fields, not constants.
Reward weights follow the paper's names: R = alpha R_KA + beta R_EC + gamma R_CS; the KL
coefficient of GRPO (TRL's ``beta``) is called ``kl_beta`` here to keep the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmboundary.training.config_base import ConfigBase

#: Ablations of METHOD.md section 6 and what each changes.
ABLATIONS: dict[str, str] = {
    "wo_ka": "w/o R_KA: alpha = 0",
    "wo_ec": "w/o R_EC: beta = 0",
    "wo_cs": "w/o R_CS: gamma = 0",
    "drl": "DRL: RL straight from the vanilla model (no warm-up); `model` must be the vanilla "
           "model, which then also scores internal confidence",
}


@dataclass
class RLConfig(ConfigBase):
    """Stage 2: GRPO over the warm-up model with the calibration rewards (METHOD.md section 6).

    Data: ``train_file``, any file ``data.loaders.load_annotated`` reads (the authors' JSON, a
    ``.jsonl`` of Samples, a ShapesWorld split from ``mmboundary world make``).
    """

    # --- models and data ---------------------------------------------------------------------
    model: str = ""
    """Folder of the policy's starting point: the stage 1 warm-up model (vanilla for DRL)."""
    output_dir: str = "runs/rl"
    """Where the final model, ``reward_log.jsonl`` and ``rl_config.yaml`` are written."""
    train_file: str | None = None
    """Samples to train on: ``.jsonl`` (one Sample per line) or a ShapesWorld split ``.json``."""
    images_dir: str | None = None
    """Folder the samples' images are resolved in (``data.images.resolve_image``)."""
    max_samples: int | None = None
    """Use only the first N samples (None = all)."""
    instruction: str | None = None
    """Prompt instruction (None = ``models.prompts`` default; must match the warm-up's)."""

    # --- rewards -----------------------------------------------------------------------------
    alpha: float = 1.0
    """Weight of R_KA (knowledge accuracy); 0 = ablation w/o R_KA."""
    beta: float = 1.0
    """Weight of R_EC (expected calibration); 0 = ablation w/o R_EC."""
    gamma: float = 1.0
    """Weight of R_CS (confidence self-calibration); 0 = ablation w/o R_CS."""
    cs_form: str = "abs"
    """R_CS's per-step distance (ours, the form is ours in METHOD.md too): "abs" = 1 - mean_t
    |e_t - i_t| (METHOD.md section 6), "squared" = 1 - mean_t (e_t - i_t)^2
    (``rewards.cs_distance``: |.| pays a policy unsure of i_t to state its median level, the
    middle one; (.)^2 its mean)."""
    statement_mode: Literal["statement", "numeric"] = "statement"
    """How the policy states confidence: bank statements, or "(confidence 0.7)" (the ablation
    w/o S-S mapping); the parser of e_t and of the content i_t scores."""
    format_weight: float = 0.0
    """Weight of the format reward (statement share + answer step) (ours); 0 = off."""
    judge: str = "auto"
    """Step judge for a_t on datasets judged by meaning (``judging.rules.RuleConfig.judge``: auto =
    the offline assertions judge; similarity, nli, llm); exact-match datasets use exact. The same
    rule set evaluation uses."""
    judge_options: dict[str, Any] = field(default_factory=dict)
    """Options of the step judge (nli: ``model``; llm: ``model``, ``base_url``)."""
    step_tau: float | None = None
    """Similarity judge threshold (None = ``judging.simple.DEFAULT_STEP_TAU``)."""
    answer_tau: float | None = None
    """Open-answer threshold (None = ``text.matching.DEFAULT_ANSWER_TAU``)."""

    def rules(self) -> Any:
        """The :class:`~mmboundary.judging.rules.RuleConfig` these fields describe."""
        from mmboundary.judging.rules import RuleConfig

        thresholds = {k: v for k, v in (("tau", self.step_tau), ("answer_tau", self.answer_tau))
                      if v is not None}
        return RuleConfig(judge=self.judge, judge_options=dict(self.judge_options), **thresholds)
    similarity: str | None = None
    """Similarity model folder for a_t (None = offline all-MiniLM-L6-v2)."""
    internal_from: Literal["warmup", "policy"] = "warmup"
    """Who scores i_t: the frozen warm-up model (ours, default) or the policy being trained."""
    internal_model: str | None = None
    """Frozen scorer folder for ``internal_from="warmup"`` (None = ``model``)."""
    calibrator: str | None = None
    """Fitted ``ConfidenceCalibrator`` JSON (normalisers + fusion + level cuts) for i_t, fitted on
    the steps of the model that scores i_t (the warm-up model by default; ``mmboundary estimate``
    on its own responses writes it); needed if gamma > 0."""
    probe: str | None = None
    """A fitted ``confidence.probe_teacher.StepProbe`` JSON of the model that scores i_t (ours,
    optional): i_t = the level value of the probe on that model's hidden state at the step's
    last content token instead of C's level (``InternalConfidenceScorer(probe=...)``; the demo's
    ``sft_teacher="probe"``). Needs ``calibrator`` and ``internal_scale="level"``."""
    internal_scale: Literal["level", "raw"] = "level"
    """i_t on the statements' scale: the level value (2k - 1) / 10 of the fused C (default,
    METHOD.md section 6), or the raw fused C ("raw"; not recommended: it rewards always stating
    the middle level)."""
    clip_model: str | None = None
    """CLIP folder for the U_CLIPS estimator (needed only if the calibrator uses ``clips``)."""
    internal_batch_size: int = 8
    """Completions per teacher-forced scoring pass of the internal-confidence model."""

    # --- GRPO --------------------------------------------------------------------------------
    num_generations: int = 3
    """Completions per prompt (the group); paper hint: 3 samples per prompt."""
    learning_rate: float = 1e-5
    """Paper hint: 1e-5."""
    kl_beta: float = 0.04
    """KL coefficient to the reference (TRL ``beta``; TRL's own default is 0.0) (ours)."""
    max_steps: int = 200
    """Optimizer steps (-1 = run ``num_train_epochs``)."""
    num_train_epochs: float = 1.0
    """Epochs when ``max_steps`` is -1."""
    per_device_train_batch_size: int = 6
    """Completions per device per step; with ``gradient_accumulation_steps`` the generation
    batch must be a multiple of ``num_generations``."""
    gradient_accumulation_steps: int = 1
    """Gradient accumulation steps."""
    max_completion_length: int = 128
    """Most new tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    scale_rewards: str = "group"
    """TRL advantage scaling: "group" (GRPO), "batch" or "none" (Dr. GRPO)."""
    credit: str = "completion"
    """Who gets which reward (ours): "completion" = GRPO's one advantage per completion from
    the weighted sum (the default); "step" = content tokens from alpha R_KA (+ format) only,
    each statement's tokens from its own step's R_EC / R_CS terms (``training.step_credit``)."""
    seed: int = 0
    """Seed of the trainer (sampling, LoRA init, data order)."""
    logging_steps: int = 1
    """Log the rewards' mean and std every N steps."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory for 7B models; TRL turns it on
    by default, which only slows small models down)."""
    save_steps: int = 0
    """Intermediate checkpoints every N steps (0 = only the final model)."""

    # --- held-out curves (training.heldout; not TRL's eval_steps, which scores sampled
    # rollouts of an eval dataset) -----------------------------------------------------------
    eval_every: int = 0
    """Every N optimizer steps (and before the first and after the last) the policy answers
    ``eval_file``'s questions greedily; mean R_KA, R_EC, R_CS (the training rewards) and, where
    the caller gives them, evaluation metrics (Acc, MECE, step AUROC) go to
    ``heldout_log.jsonl`` (0 = off)."""
    eval_file: str | None = None
    """Held-out samples (any format ``train_file`` takes), e.g. a validation split."""
    eval_samples: int = 64
    """Use the first N held-out samples (0 = all)."""
    eval_batch_size: int = 16
    """Questions per greedy generation batch of the held-out evaluation."""

    # --- LoRA --------------------------------------------------------------------------------
    use_lora: bool = True
    """LoRA adapters (peft) on the language model; False = full fine-tuning."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: str | list[str] = "language-linear"
    """Modules that get adapters: "language-linear" = every Linear of the language model
    (vision tower, projector and lm_head excluded; as stage 1), or a list of module names."""
    merge_lora: bool = True
    """Merge the adapters into the weights at the end (the saved model loads with
    ``VLM.from_pretrained``); False also saves the bare adapter in ``adapter/``."""

    # --- hardware ----------------------------------------------------------------------------
    use_vllm: bool = False
    """Generate rollouts with vLLM (TRL ``use_vllm``; GPU only, ``pip install trl[vllm]``)."""
    vllm_mode: Literal["colocate", "server"] = "colocate"
    """vLLM in the training process ("colocate") or a ``trl vllm-serve`` server ("server")."""
    bf16: bool | None = None
    """bfloat16 training (None = on when CUDA supports it)."""
    use_cpu: bool | None = None
    """Force CPU (None = when no CUDA device is present)."""
    report_to: list[str] = field(default_factory=list)
    """Trackers ("wandb", "tensorboard", "trackio"); none by default."""
    ablation: str | None = None
    """One of ``ABLATIONS``: wo_ka, wo_ec, wo_cs (zero that reward's weight) or drl (a label: RL
    from the vanilla model, given as ``model``); None = full method."""

    def __post_init__(self) -> None:
        if self.ablation is not None:
            if self.ablation not in ABLATIONS:
                raise ValueError(f"RLConfig.ablation: expected one of {sorted(ABLATIONS)}, got "
                                 f"{self.ablation!r}")
            zeroed = {"wo_ka": "alpha", "wo_ec": "beta", "wo_cs": "gamma"}.get(self.ablation)
            if zeroed is not None:
                setattr(self, zeroed, 0.0)
        if self.internal_from not in ("warmup", "policy"):
            raise ValueError(f"RLConfig.internal_from: expected 'warmup' or 'policy', got "
                             f"{self.internal_from!r}")
        if self.statement_mode not in ("statement", "numeric"):
            raise ValueError(f"RLConfig.statement_mode: expected 'statement' or 'numeric', got "
                             f"{self.statement_mode!r}")
        if self.internal_scale not in ("level", "raw"):
            raise ValueError(f"RLConfig.internal_scale: expected 'level' or 'raw', got "
                             f"{self.internal_scale!r}")
        if self.eval_every < 0 or self.eval_samples < 0 or self.eval_batch_size < 1:
            raise ValueError(f"RLConfig: eval_every and eval_samples must be >= 0 and "
                             f"eval_batch_size >= 1, got {self.eval_every}, "
                             f"{self.eval_samples}, {self.eval_batch_size}")
        from mmboundary.training.rewards import CS_FORMS
        from mmboundary.training.step_credit import CREDITS

        if self.cs_form not in CS_FORMS:
            raise ValueError(f"RLConfig.cs_form: expected one of {list(CS_FORMS)}, got "
                             f"{self.cs_form!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"RLConfig.credit: expected one of {list(CREDITS)}, got "
                             f"{self.credit!r}")
        if self.num_generations < 2:
            raise ValueError(f"RLConfig.num_generations: GRPO needs >= 2 per group, got "
                             f"{self.num_generations}")
        weights = (self.alpha, self.beta, self.gamma, self.format_weight)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"RLConfig: reward weights alpha, beta, gamma, format_weight must be "
                             f">= 0 with one > 0, got {weights}")

    def check_ready(self) -> None:
        """Errors a run would hit late, raised before any model is loaded."""
        if not self.model:
            raise ValueError("RLConfig.model: give the warm-up model folder (vanilla for DRL)")
        if not Path(self.model).is_dir():
            raise FileNotFoundError(f"RLConfig.model: no model folder at {self.model}")
        if self.train_file is None:
            raise ValueError("RLConfig.train_file: give the training samples (e.g. a ShapesWorld "
                             "split from `mmboundary world make`)")
        if self.eval_every > 0 and (self.eval_file is None or not Path(self.eval_file).is_file()):
            raise FileNotFoundError(f"RLConfig.eval_file: eval_every={self.eval_every} needs a "
                                    f"held-out sample file, got {self.eval_file!r}")
        if self.probe is not None and (self.calibrator is None or self.internal_scale != "level"):
            raise ValueError("RLConfig.probe: the probe's levels need a calibrator (its "
                             "estimators score the steps) and internal_scale='level'")
        if self.gamma > 0 and self.calibrator is None:
            raise ValueError("RLConfig.calibrator: R_CS (gamma > 0) needs the fitted confidence "
                             "calibrator JSON of the warm-up model (`mmboundary estimate` writes "
                             "it), or gamma = 0 (ablation wo_cs)")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(f"RLConfig: per_device_train_batch_size x gradient_accumulation_steps "
                             f"= {batch} must be a multiple of num_generations "
                             f"({self.num_generations})")

