"""Training configs: dataclasses whose every field has a documented default, loadable from YAML.

``SFTConfig`` (stage 1, confidence-expression warm-up). Defaults are the paper's for 7B models
(LLaMA-Factory, LoRA, lr 1e-4, batch 16); ``SFT_PRESETS`` holds named overrides (``tiny-cpu`` for
the offline tiny models). The YAML files in ``configs/sft_*.yaml`` mirror these fields.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal


@dataclass
class SFTConfig:
    """Stage-1 SFT. Effective batch = ``per_device_batch_size x gradient accumulation x GPUs``;
    the accumulation is derived from ``batch_size`` so the paper's 16 holds on any device count."""

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
    lora_targets: str = "language-linear"
    """``language-linear``: every Linear layer of the language model (vision tower, projector
    and lm_head excluded, like LLaMA-Factory's ``lora_target: all`` with a frozen vision tower);
    or a comma-separated list of module-name suffixes (``q_proj,v_proj``)."""
    freeze_vision: bool = True
    """Full fine-tuning only: keep the vision tower and projector frozen."""
    learning_rate: float = 1e-4
    """Peak learning rate (paper: 1e-4)."""
    batch_size: int = 16
    """Effective batch size (paper: 16)."""
    per_device_batch_size: int = 2
    """Examples per device per forward pass."""
    num_epochs: float = 3.0
    """Training epochs (LLaMA-Factory's example default; the paper does not say)."""
    max_steps: int = -1
    """If > 0, stop after this many optimizer steps (overrides ``num_epochs``)."""
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
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """``auto``: bf16 on a GPU that supports it, fp32 on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``cpu`` forces ``use_cpu=True``; ``auto`` uses a GPU when one is visible."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (useful for 7B models)."""
    merge: bool = True
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
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise ValueError("batch_size and per_device_batch_size must be >= 1")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SFTConfig:
        """Read a YAML file (a ``preset:`` key applies ``SFT_PRESETS`` first), then overrides."""
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of SFTConfig fields")
        return cls.from_dict(raw, where=str(path), **overrides)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config", **overrides: Any) -> SFTConfig:
        """Build from a mapping (unknown keys are an error naming them)."""
        raw = dict(raw)
        preset = raw.pop("preset", None)
        values = dict(SFT_PRESETS[preset]) if preset else {}
        if preset and preset not in SFT_PRESETS:
            raise ValueError(f"{where}: unknown preset {preset!r}; expected {sorted(SFT_PRESETS)}")
        values.update(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown SFTConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def with_preset(self, name: str) -> SFTConfig:
        """A copy with a named preset's values applied."""
        if name not in SFT_PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected {sorted(SFT_PRESETS)}")
        return replace(self, **SFT_PRESETS[name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SFT_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting for 7B models (the dataclass defaults).
    "paper-7b": {},
    # Offline tiny models on 2 CPU cores: full precision, small batches, a high LR so a ~1M
    # parameter random model learns the statement format in a few dozen steps.
    "tiny-cpu": {"device": "cpu", "precision": "fp32", "batch_size": 8,
                 "per_device_batch_size": 8, "learning_rate": 3e-3, "lora_r": 16,
                 "lora_alpha": 32, "lora_dropout": 0.0, "warmup_ratio": 0.0,
                 "lr_scheduler": "constant", "max_length": 512, "logging_steps": 5,
                 "save_steps": 10_000, "save_total_limit": 1, "num_epochs": 30.0},
}


def field_docs(cls: type = SFTConfig) -> dict[str, str]:
    """Each field's documentation (the string literal after it in the source), for ``--help``."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(
                getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[union-attr]
    return docs


def defaults(cls: type = SFTConfig) -> dict[str, Any]:
    """Default value of each field."""
    out = {}
    for f in fields(cls):
        out[f.name] = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    return out
