"""Export the stage-1 SFT set to LLaMA-Factory (the paper trained there), without needing it.

LLaMA-Factory's multimodal sharegpt format (its ``data/README.md``, "Multimodal Image Dataset" with
the OpenAI-style tags): a JSON list of ``{"messages": [{"role": "user", "content": "<image>..."},
{"role": "assistant", "content": "..."}], "images": ["images/x.png"]}``; user turns at odd
positions, assistant at even; the number of ``<image>`` tokens equals the number of images. The
dataset is registered in ``dataset_info.json`` (``formatting: sharegpt``, column and tag names), and
a training YAML (LoRA SFT, the paper's lr 1e-4 and batch 16) points ``dataset_dir``/``media_dir`` at
the export folder. Images are copied into ``<dir>/images`` so the folder is self-contained.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmboundary.training.sft_data import SFTRecord

IMAGE_TOKEN = "<image>"
DATASET_INFO_ENTRY = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
             "assistant_tag": "assistant"},
}


def _flatten(content: Any) -> tuple[str, int]:
    """A message's content as LLaMA-Factory text (images -> ``<image>``) and its image count."""
    if isinstance(content, str):
        return content, content.count(IMAGE_TOKEN)
    parts, n_images = [], 0
    for item in content:
        if item["type"] == "image":
            parts.append(IMAGE_TOKEN)
            n_images += 1
        elif item["type"] == "text":
            parts.append(item["text"] or "")
        else:
            raise ValueError(f"unsupported content type {item['type']!r} (expected image or text)")
    return "".join(parts), n_images


def to_sharegpt(record: SFTRecord, image_paths: list[str]) -> dict[str, Any]:
    """One record in LLaMA-Factory's sharegpt (OpenAI tags) form; validated."""
    messages = []
    for message in record.messages:
        text, _ = _flatten(message["content"])
        messages.append({"role": message["role"], "content": text})
    out = {"messages": messages, "images": image_paths}
    validate_sharegpt(out, where=f"record {record.id!r}")
    return out


def validate_sharegpt(row: dict[str, Any], where: str = "record") -> None:
    """LLaMA-Factory's rules: alternating user/assistant turns starting with the user and ending
    with the assistant; non-empty string contents; ``<image>`` count == ``len(images)``."""
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2 or len(messages) % 2:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of user/assistant pairs")
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(f"{where}: message {i} has role {message.get('role')!r}, expected "
                             f"{expected!r} (user turns at odd positions, assistant at even)")
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            raise ValueError(f"{where}: message {i} needs a non-empty string 'content'")
    images = row.get("images", [])
    n_tokens = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if not isinstance(images, list) or n_tokens != len(images):
        raise ValueError(f"{where}: {n_tokens} {IMAGE_TOKEN} tokens but {len(images)} images; "
                         "LLaMA-Factory needs them equal")


def training_yaml(dataset_dir: Path, dataset_name: str, model: str, template: str,
                  output_dir: str, finetuning_type: str = "lora") -> str:
    """LLaMA-Factory SFT YAML with the paper's hyperparameters (lr 1e-4, effective batch 16)."""
    import yaml

    config = {
        "model_name_or_path": model, "trust_remote_code": True,
        "stage": "sft", "do_train": True, "finetuning_type": finetuning_type,
        **({"lora_rank": 8, "lora_target": "all"} if finetuning_type == "lora" else {}),
        "freeze_vision_tower": True,
        "dataset": dataset_name, "dataset_dir": str(dataset_dir), "media_dir": str(dataset_dir),
        "template": template, "cutoff_len": 2048, "overwrite_cache": True,
        "output_dir": output_dir, "logging_steps": 10, "save_steps": 500, "plot_loss": True,
        "report_to": "none",
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
        "learning_rate": 1.0e-4, "num_train_epochs": 3.0, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1, "bf16": True,
    }
    header = ("# LLaMA-Factory stage-1 (confidence-expression warm-up) config written by mmboundary.\n"
              "# Run: llamafactory-cli train <this file>. Effective batch = 2 x 8 = 16 on one GPU\n"
              "# (divide gradient_accumulation_steps by the number of GPUs).\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def export_llamafactory(records: Sequence[SFTRecord], out_dir: str | Path, *,
                        dataset_name: str = "mmboundary_sft", model: str = "Qwen/Qwen2-VL-7B-Instruct",
                        template: str = "qwen2_vl", output_dir: str = "saves/mmboundary-sft",
                        finetuning_type: str = "lora") -> Path:
    """Write ``<out>/<name>.json``, ``<out>/dataset_info.json`` (merged into an existing one),
    ``<out>/images/`` and ``<out>/<name>_sft.yaml``; returns the YAML path."""
    import json

    from mmboundary.data.io import write_json_atomic

    out = Path(out_dir).resolve()
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for record in records:
        rel = []
        for k, src in enumerate(record.images):
            name = f"{record.id}_{k}{Path(src).suffix or '.png'}".replace("/", "_")
            shutil.copyfile(src, out / "images" / name)
            rel.append(f"images/{name}")
        rows.append(to_sharegpt(record, rel))
    write_json_atomic(out / f"{dataset_name}.json", rows)
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[dataset_name] = {"file_name": f"{dataset_name}.json", **DATASET_INFO_ENTRY}
    write_json_atomic(info_path, info)
    yaml_path = out / f"{dataset_name}_sft.yaml"
    yaml_path.write_text(training_yaml(out, dataset_name, model, template, output_dir,
                                       finetuning_type))
    return yaml_path
