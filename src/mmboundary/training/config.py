"""Training configs: dataclasses whose every field has a documented default, loadable from YAML.

``SFTConfig`` (stage 1, confidence-expression warm-up). Defaults are the paper's for 7B models
(LLaMA-Factory, LoRA, lr 1e-4, batch 16); ``SFT_PRESETS`` holds named overrides (``tiny-cpu`` for
the offline tiny models). The YAML files in ``configs/sft_*.yaml`` mirror these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mmboundary.training.config_base import ConfigBase


@dataclass
class SFTConfig(ConfigBase):
    """Stage-1 SFT. Effective batch = ``per_device_train_batch_size x gradient accumulation x
    GPUs``; the accumulation is derived from ``batch_size`` so the paper's 16 holds on any device
    count. Field names are TRL's where TRL has one (``ConfigBase``)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}  # filled below: SFT_PRESETS
    RENAMED: ClassVar[dict[str, str]] = {
        "lora_targets": "lora_target_modules", "num_epochs": "num_train_epochs",
        "per_device_batch_size": "per_device_train_batch_size", "merge": "merge_lora",
        "precision": "bf16 / fp16 (TRL's flags: auto = bf16: null, bf16 = bf16: true, fp16 = "
                     "fp16: true, fp32 = bf16: false)",
        "device": "use_cpu (TRL's flag: cpu = use_cpu: true, cuda = use_cpu: false, auto = "
                  "use_cpu: null)"}

    model: str = ""
    """Path of the vanilla model folder (the model whose own responses make the dataset)."""
    dataset: str = ""
    """Output folder of ``mmboundary build-sft`` (its ``hf/`` dataset is read)."""
    output_dir: str = "runs/sft"
    """Where checkpoints (``checkpoints/``), the adapter (``adapter/``), the merged or fully
    fine-tuned model (``model/``) and ``train_log.json`` are written."""
    finetuning: Literal["lora", "full"] = "lora"
    """``lora`` (peft, default; the paper's LLaMA-Factory runs use LoRA) or ``full``."""
    lora_r: int = 8
    """LoRA rank (LLaMA-Factory's default ``lora_rank: 8``)."""
    lora_alpha: int = 16
    """LoRA scaling alpha (2 x rank)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: str = "language-linear"
    """``language-linear``: every Linear layer of the language model (vision tower, projector
    and lm_head excluded, like LLaMA-Factory's ``lora_target: all`` with a frozen vision tower);
    or a comma-separated list of module-name suffixes (``q_proj,v_proj``)."""
    freeze_vision: bool = True
    """Full fine-tuning only: keep the vision tower and projector frozen."""
    freeze_modules: str = ""
    """Full fine-tuning only: comma-separated fragments of parameter names to keep frozen as well
    (e.g. ``layers.0.,embed_tokens``: the lower language layers that read the image); a fragment
    matching no parameter is an error."""
    learning_rate: float = 1e-4
    """Peak learning rate (paper: 1e-4)."""
    batch_size: int = 16
    """Effective batch size (paper: 16)."""
    per_device_train_batch_size: int = 2
    """Examples per device per forward pass."""
    num_train_epochs: float = 3.0
    """Training epochs (LLaMA-Factory's example default; the paper does not say)."""
    max_steps: int = -1
    """If > 0, stop after this many optimizer steps (overrides ``num_train_epochs``)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule (transformers name)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_length: int | None = 2048
    """Truncate prompt + response to this many tokens (``None``: no truncation)."""
    loss_on: Literal["completion", "assistant"] = "completion"
    """Loss on the assistant turn only: ``completion`` = messages split into prompt/completion and
    TRL's completion-only masking (works with any chat template); ``assistant`` = TRL's
    ``assistant_only_loss`` (needs a template with generation markers)."""
    distill_weight: float = 0.0
    """Weight of the content distillation term (ours, ``training.distill``): KL from the vanilla
    model (run without the statements) to the model on every content token of the assistant turn,
    so the warm-up teaches statements without moving the content. 0 = off (plain cross-entropy).
    It needs both models' full logits at the content tokens (TRL's fused loss is not used): on a
    7B model lower ``per_device_train_batch_size`` and raise the accumulation."""
    content_weight: float = 1.0
    """Weight of the cross-entropy on content tokens relative to statement tokens (ours,
    ``training.distill``; statement tokens found by the statement parser). 1 = plain SFT."""
    content_only_dataset: str = ""
    """A second SFT set (``build-sft`` output) mixed into ``dataset`` and trained on its content
    tokens only: its statement tokens (found by the one statement parser) get weight 0 (ours,
    ``training.distill``). Meant for the warm-up's own records with uniformly random levels
    (``build-sft --random-levels``, ``DemoConfig.sft_augment``): the content after a step is
    taught under every statement, so that it depends less on which one was said. ``""`` =
    none."""
    trainable: Literal["model", "statement-rows", "statement-choice-rows"] = "model"
    """What the warm-up trains. ``model``: the LoRA adapters or the full model (``finetuning``).
    ``statement-rows`` (ours, ``training.statement_rows``): only the output-embedding rows of the
    tokens that occur in the set's statements and never in its content, everything else frozen:
    every content token's logit is unchanged at every position, so the model's content can move
    only where a statement changes (as later context) or a statement token overtakes a content
    token. ``statement-choice-rows``: only those of them where the set's statements part (", but
    **this** ..." / ", but **I** ..."), not the tokens that continue a chosen statement. Meant
    for a model that already states confidence (a warm-up or RL model) whose statements are
    re-taught another teacher's levels. Needs ``finetuning: full`` and ``weight_decay: 0``
    (decay would move the frozen rows)."""
    bf16: bool | None = None
    """bfloat16 training (TRL ``bf16``; None = on when the GPU supports it, off on CPU)."""
    fp16: bool = False
    """float16 mixed precision (TRL ``fp16``; GPUs without bfloat16)."""
    use_cpu: bool | None = None
    """Train on the CPU (TRL ``use_cpu``; None = when no CUDA device is visible; False with no
    CUDA device is an error)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (useful for 7B models)."""
    merge_lora: bool = True
    """LoRA only: also save the adapter merged into the base model (``model/``), loadable by
    ``VLM.from_pretrained``."""
    logging_steps: int = 10
    """Log the loss every this many steps."""
    save_steps: int = 500
    """Save a checkpoint every this many steps."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    seed: int = 0
    """Seed for data order and initialisation of the LoRA weights."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers (``[]`` = none; e.g. ``["wandb"]``)."""

    def __post_init__(self) -> None:
        if self.finetuning not in ("lora", "full"):
            raise ValueError(f"finetuning must be 'lora' or 'full', got {self.finetuning!r}")
        if self.loss_on not in ("completion", "assistant"):
            raise ValueError(f"loss_on must be 'completion' or 'assistant', got {self.loss_on!r}")
        if self.batch_size < 1 or self.per_device_train_batch_size < 1:
            raise ValueError("SFTConfig: batch_size and per_device_train_batch_size must be >= 1")
        if self.fp16 and self.bf16:
            raise ValueError("SFTConfig: bf16 and fp16 are exclusive; set one")
        if self.content_weight < 0:
            raise ValueError(f"SFTConfig.content_weight must be >= 0, got {self.content_weight}")
        if self.distill_weight < 0:
            raise ValueError(f"SFTConfig.distill_weight must be >= 0, got {self.distill_weight}")
        if self.trainable not in ("model", "statement-rows", "statement-choice-rows"):
            raise ValueError("SFTConfig.trainable must be 'model', 'statement-rows' or "
                             f"'statement-choice-rows', got {self.trainable!r}")
        if self.trainable != "model" and (self.finetuning != "full" or self.weight_decay != 0):
            raise ValueError(f"SFTConfig.trainable={self.trainable!r} needs finetuning='full' "
                             f"and weight_decay=0 (got {self.finetuning!r}, {self.weight_decay})")
        if self.use_cpu and (self.fp16 or self.bf16):
            raise ValueError("SFTConfig: use_cpu trains in float32; bf16 and fp16 need a GPU")


SFT_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting for 7B models (the dataclass defaults).
    "paper-7b": {},
    # Offline tiny models on 2 CPU cores: full precision, small batches, a high LR so a ~1M
    # parameter random model learns the statement format in a few dozen steps.
    "tiny-cpu": {"use_cpu": True, "bf16": False, "batch_size": 8,
                 "per_device_train_batch_size": 8, "learning_rate": 3e-3, "lora_r": 16,
                 "lora_alpha": 32, "lora_dropout": 0.0, "warmup_ratio": 0.0,
                 "lr_scheduler": "constant", "max_length": 512, "logging_steps": 5,
                 "save_steps": 10_000, "save_total_limit": 1, "num_train_epochs": 30.0},
}
SFTConfig.PRESETS = SFT_PRESETS
