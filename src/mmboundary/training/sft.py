"""Stage 1: the confidence-expression warm-up (supervised fine-tuning). METHOD.md section 5.

The vanilla model is fine-tuned with cross-entropy on the assistant turn only on its own responses,
each step now followed by the statement of its internal-confidence level (``sft_data``). Here:
TRL's ``SFTTrainer`` with LoRA (peft) by default or full fine-tuning; works on CPU (tiny models)
and under ``accelerate launch`` (multi-GPU: the gradient accumulation keeps the effective batch).

Loss mask: with ``loss_on="completion"`` (default) each record is split into prompt (user turn with
the image) and completion (the assistant turn), and TRL's vision collator sets the labels of every
prompt token to -100: L = -(1/|A|) sum_{t in A} log p(y_t | y_<t, image, prompt), A = assistant
tokens (including the end-of-turn token the chat template appends). With ``distill_weight`` > 0 a
KL term to the vanilla model on the content tokens is added (``training.distill``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mmboundary.training.config import SFTConfig

# Module-name fragments of vision towers / projectors / heads, excluded from LoRA and, with
# ``freeze_vision``, from full fine-tuning.
VISION_PARTS = ("visual", "vision", "multi_modal_projector", "connector", "merger", "image_newline")


def language_linear_modules(model: Any) -> list[str]:
    """Names of every ``nn.Linear`` of the language model (vision parts and lm_head excluded)."""
    import torch

    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)
             and not any(part in name for part in VISION_PARTS)
             and not name.endswith("lm_head")]
    if not names:
        raise ValueError(f"no language-model Linear layers found in {type(model).__name__}")
    return names


def _lora_config(config: SFTConfig, model: Any) -> Any:
    from peft import LoraConfig

    if config.lora_target_modules == "language-linear":
        targets: list[str] = language_linear_modules(model)
    else:
        targets = [t.strip() for t in config.lora_target_modules.split(",") if t.strip()]
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets,
                      task_type="CAUSAL_LM")


def _precision(config: SFTConfig, on_gpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) flags for the trainer (``bf16=None``: on a GPU that supports it)."""
    import torch

    if config.bf16 is None:
        bf16 = on_gpu and not config.fp16 and torch.cuda.is_bf16_supported()
        return bf16, config.fp16
    return config.bf16, config.fp16


def _on_gpu(config: SFTConfig) -> bool:
    import torch

    if config.use_cpu:
        return False
    if config.use_cpu is False and not torch.cuda.is_available():
        raise RuntimeError("SFTConfig.use_cpu=False but no CUDA device is visible")
    return torch.cuda.is_available()


def trainer_args(config: SFTConfig, run_dir: Path) -> Any:
    """TRL ``SFTConfig`` for ``config`` (CPU: ``use_cpu=True, bf16=False``, see PLATFORM.md)."""
    from trl import SFTConfig as TrlSFTConfig

    on_gpu = _on_gpu(config)
    bf16, fp16 = _precision(config, on_gpu)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = max(1, math.ceil(config.batch_size / (config.per_device_train_batch_size * world)))
    return TrlSFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        max_length=config.max_length, bf16=bf16, fp16=fp16, use_cpu=not on_gpu,
        assistant_only_loss=config.loss_on == "assistant",
        completion_only_loss=True if config.loss_on == "completion" else None,
        logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, seed=config.seed, report_to=config.report_to,
        remove_unused_columns=False, dataloader_pin_memory=on_gpu,
        # LoRA adapters sit on every language layer: each takes part in every forward pass
        ddp_find_unused_parameters=False if config.finetuning == "lora" else None,
        **({"gradient_checkpointing": True} if config.gradient_checkpointing else {}),
    )


def load_model_and_processor(config: SFTConfig, frozen_copy: bool = False) -> tuple[Any, Any]:
    """The vanilla model (fp32 on CPU, bf16 on a bf16 GPU) and its processor (``frozen_copy``:
    the distillation teacher, no parameter trainable)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mmboundary.models.vlm import load_processor

    path = Path(config.model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"SFTConfig.model: no config.json in {path} (a local model folder "
                                "is expected; nothing is downloaded)")
    model_type = AutoConfig.from_pretrained(path).model_type
    bf16, fp16 = _precision(config, _on_gpu(config))
    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    processor = load_processor(path, model_type)
    if frozen_copy:
        return model.eval().requires_grad_(False), processor
    if config.finetuning == "full" and config.freeze_vision:
        for name, param in model.named_parameters():
            if any(part in name for part in VISION_PARTS):
                param.requires_grad_(False)
    fragments = [f.strip() for f in config.freeze_modules.split(",") if f.strip()]
    if config.finetuning == "full" and fragments:
        names = [name for name, _ in model.named_parameters()]
        unmatched = [f for f in fragments if not any(f in name for name in names)]
        if unmatched:
            raise ValueError(f"SFTConfig.freeze_modules: {unmatched} match no parameter of "
                             f"{type(model).__name__} (e.g. {names[:3]})")
        for name, param in model.named_parameters():
            if any(f in name for f in fragments):
                param.requires_grad_(False)
    return model, processor


def prepare_dataset(config: SFTConfig) -> Any:
    """The saved SFT dataset, split into prompt/completion when ``loss_on="completion"``; with
    ``content_only_dataset`` that set appended, every record flagged by a ``content_only``
    column (0 / 1)."""
    from mmboundary.training.sft_data import load_sft_dataset, to_prompt_completion

    dataset = load_sft_dataset(config.dataset)
    if config.content_only_dataset:
        from datasets import concatenate_datasets

        extra = load_sft_dataset(config.content_only_dataset)
        if set(extra.column_names) != set(dataset.column_names):
            raise ValueError(f"SFTConfig.content_only_dataset: columns {sorted(extra.column_names)}"
                             f" differ from the dataset's {sorted(dataset.column_names)}")
        dataset = concatenate_datasets([
            dataset.add_column("content_only", [0] * len(dataset)),
            extra.select_columns(dataset.column_names).cast(dataset.features)
            .add_column("content_only", [1] * len(extra))])
    if config.loss_on == "completion":
        dataset = dataset.map(to_prompt_completion, remove_columns=["messages"])
    return dataset


def build_trainer(config: SFTConfig) -> Any:
    """An ``SFTTrainer`` ready to ``train()`` (exposed for tests that inspect the collator)."""
    from trl import SFTTrainer

    run_dir = Path(config.output_dir)
    model, processor = load_model_and_processor(config)
    args = trainer_args(config, run_dir)
    with args.main_process_first(desc="SFT dataset"):  # one process maps, the others read it
        dataset = prepare_dataset(config)
    if config.trainable != "model":
        _train_statement_rows_only(config, model, processor, run_dir)
    kwargs = dict(model=model, args=args, train_dataset=dataset, processing_class=processor,
                  peft_config=_lora_config(config, model) if config.finetuning == "lora" else None)
    if config.distill_weight <= 0 and config.content_weight == 1.0 \
            and not config.content_only_dataset:
        return SFTTrainer(**kwargs)
    from mmboundary.text.statement_parser import default_parser
    from mmboundary.training.distill import distill_trainer_class

    teacher = None if config.finetuning == "lora" or config.distill_weight <= 0 else \
        load_model_and_processor(config, frozen_copy=True)[0]
    return distill_trainer_class()(**kwargs, distill_weight=config.distill_weight,
                                   content_weight=config.content_weight, teacher=teacher,
                                   content_only=bool(config.content_only_dataset),
                                   parser=default_parser(dataset_mode(config.dataset)))


def _train_statement_rows_only(config: SFTConfig, model: Any, processor: Any,
                               run_dir: Path) -> None:
    """``trainable: statement-rows`` / ``statement-choice-rows``: freeze ``model`` but the output
    rows of the set's statement-only tokens (all, or where statements part;
    ``training.statement_rows``); the chosen tokens go to
    ``run_dir/statement_rows.json``."""
    from mmboundary.text.statement_parser import default_parser
    from mmboundary.training.sft_data import load_sft_dataset
    from mmboundary.training.statement_rows import assistant_texts, restrict_to_rows, statement_rows

    tokenizer = getattr(processor, "tokenizer", processor)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = statement_rows(assistant_texts(load_sft_dataset(config.dataset)), tokenizer,
                          default_parser(dataset_mode(config.dataset)),
                          choice_only=config.trainable == "statement-choice-rows")
    restrict_to_rows(model, rows.trained)
    (run_dir / "statement_rows.json").write_text(json.dumps({
        "trained": {str(t): tokenizer.convert_ids_to_tokens(t) for t in rows.trained},
        "shared_with_content": {str(t): tokenizer.convert_ids_to_tokens(t) for t in rows.shared},
    }, indent=1))


def dataset_mode(dataset: str | Path) -> str:
    """How the SFT dataset states confidence (``statement`` or ``numeric``, from its
    ``summary.json``; ``statement`` for a dataset without one): the statement tokens the content
    terms leave out are found by the parser of that mode."""
    summary = Path(dataset) / "summary.json"
    if not summary.is_file():
        return "statement"
    mode = json.loads(summary.read_text()).get("mode", "statement")
    if mode not in ("statement", "numeric"):
        raise ValueError(f"{summary}: mode {mode!r} is neither 'statement' nor 'numeric'")
    return mode


def merge_lora_adapter(base: str | Path, adapter: str | Path, dtype: Any = None) -> Any:
    """The base model with the LoRA adapter saved in ``adapter`` merged into its weights.

    Merged from the files, not from the trainer's model: under DeepSpeed ZeRO-3 (or FSDP) a
    process holds only a shard of the weights, so only the saved adapter is whole."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def record_save(run_dir: Path, path: Path) -> None:
    """Append who saved ``path`` to ``run_dir/saves.jsonl``: the process rank, the number of
    processes and accelerate's distributed type. Under ``accelerate launch`` only the main
    process saves, so a run leaves one line (the multi-process walk-through checks it)."""
    from accelerate import PartialState

    state = PartialState()
    row = {"path": str(path), "rank": state.process_index, "world_size": state.num_processes,
           "distributed_type": str(state.distributed_type).split(".")[-1]}
    with (run_dir / "saves.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _save(trainer: Any, config: SFTConfig, run_dir: Path) -> Path:
    """Save the adapter (LoRA) and the merged / fully tuned model with its processor.

    Every process calls this (``save_model`` gathers sharded weights); only the main process
    writes files."""
    processor, main = trainer.processing_class, trainer.is_world_process_zero()
    model_dir = run_dir / ("adapter" if config.finetuning == "lora" and not config.merge_lora
                           else "model")
    if config.finetuning == "lora":
        trainer.save_model(str(run_dir / "adapter"))
        if main and config.merge_lora:
            dtype = next(trainer.accelerator.unwrap_model(trainer.model).parameters()).dtype
            merge_lora_adapter(config.model, run_dir / "adapter", dtype).save_pretrained(
                str(model_dir))
    else:
        trainer.save_model(str(model_dir))
    if main:
        processor.save_pretrained(str(model_dir))
        record_save(run_dir, model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def train_sft(config: SFTConfig) -> Path:
    """Run stage-1 SFT; returns the folder of the trained model (merged for LoRA with ``merge``;
    the adapter folder otherwise). Also writes ``train_log.json`` (loss per logging step),
    ``sft_config.json`` and ``saves.jsonl`` (who saved) under ``config.output_dir``. Under
    ``accelerate launch`` every process trains and returns the same path; the main process
    writes."""
    if not config.model or not config.dataset:
        raise ValueError("SFTConfig needs 'model' (vanilla model folder) and 'dataset' "
                         "(output folder of mmboundary build-sft)")
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(config)
    trainer.train()
    if trainer.is_world_process_zero():
        (run_dir / "saves.jsonl").unlink(missing_ok=True)
        (run_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        (run_dir / "sft_config.json").write_text(json.dumps(config.to_dict(), indent=1))
    return _save(trainer, config, run_dir)
