"""Pretrain the ShapesWorld VLM: a small LLaVA-style model that writes reference chains (the world
CLIP, whose image-text cosine carries signal for U_CLIPS, is in ``shapesworld.pretrain_clip``).

The VLM sees exactly the prompt the pipeline uses (``question_prompt(sample)`` in the model's chat
template, image first) and is trained with cross-entropy on the assistant turn only: the whole
reference chain (image-level facts, reasoning, "So, the answer is X.") plus the end-of-turn token,

    L = -(1/|R|) sum_{t in R} log p(y_t | image, prompt, y_<t),   R = response tokens.

Training samples stream from the ShapesWorld train split (a fresh batch every step, no repeats),
so the only knob for "how well it knows the world" is the number of steps (ours: stop while it
still errs, so step-level confidence has something to calibrate).

"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmboundary.data.schema import Sample
from mmboundary.shapesworld.scenes import WorldConfig, make_sample, make_samples, render

if TYPE_CHECKING:
    from mmboundary.shapesworld.pretrain_clip import ClipPretrainConfig

Progress = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class WorldModelSpec:
    """Architecture of the world VLM (``make_tiny("llava", ...)`` overrides) and its tokenizer.

    Defaults (ours): PLATFORM.md's measured 0.58M-parameter LLaVA (CLIP vision 64-dim, 2 layers,
    patch 8 = 64 image tokens; Qwen2 text 128-dim, 2 layers) with a 768-token BPE trained on world
    sentences, prompts and confidence statements.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 64
    patch_size: int = 8
    vocab_size: int = 768

    def overrides(self) -> dict[str, int]:
        """The ``make_tiny`` keyword overrides (everything but the vocabulary size)."""
        return {k: v for k, v in asdict(self).items() if k != "vocab_size"}


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the world VLM (defaults: ours, measured in benchmarks/world_pretrain.md).

    ``threads``: torch threads; 1 is fastest on a shared 2-core machine (2 threads were 3x slower
    per step under load 7). ``save_every``: also save intermediate checkpoints in ``out_dir/step-N`` (0 = final only).
    """

    steps: int = 1800
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    world_seed: int = 0
    threads: int = 1
    corpus_samples: int = 2000
    save_every: int = 0
    vision_init: str | None = None
    init_from: str | None = None
    spec: WorldModelSpec = field(default_factory=WorldModelSpec)
    world: WorldConfig = field(default_factory=WorldConfig)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` when ``threads > 0``."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def world_corpus(n_samples: int = 2000, seed: int = 0, world: WorldConfig | None = None
                 ) -> list[str]:
    """Tokenizer corpus: prompts and chain steps of train samples + the confidence statements."""
    from importlib import resources

    from mmboundary.models.prompts import question_prompt

    corpus: list[str] = []
    for sample in make_samples(n_samples, seed, "train", world):
        corpus.append(question_prompt(sample))
        corpus.extend(sample.reference.steps if sample.reference else [])
    bank = json.loads(resources.files("mmboundary").joinpath("resources/statements.json")
                      .read_text())
    for statements in bank["levels"].values():
        corpus.extend(f"{s}." for s in statements)
    return corpus


def response_text(sample: Sample) -> str:
    """The target response: the reference chain's steps joined by single spaces."""
    if sample.reference is None or not sample.reference.steps:
        raise ValueError(f"sample {sample.id}: no reference chain to train on")
    return " ".join(sample.reference.steps)


def chat_prompt(processor: Any, sample: Sample) -> str:
    """The pipeline's prompt for ``sample`` rendered by the model's chat template."""
    from mmboundary.models.prompts import build_messages, question_prompt

    return processor.apply_chat_template(build_messages(question_prompt(sample)),
                                         add_generation_prompt=True, tokenize=False)


def collate(processor: Any, samples: list[Sample]) -> dict[str, Any]:
    """Right-padded batch of prompt + response + EOS; ``labels`` = -100 except on the response.

    Prompt ids come from the processor (image tokens expanded), response ids from the tokenizer
    alone (as the model will write them), so training sees the same tokens generation does.
    """
    import torch

    tok = processor.tokenizer
    prompts = processor(images=[render(s) for s in samples],
                        text=[chat_prompt(processor, s) for s in samples], return_tensors="pt",
                        padding=True)
    responses = tok([response_text(s) for s in samples], add_special_tokens=False)["input_ids"]
    rows, starts = [], []
    for ids, mask, resp in zip(prompts["input_ids"], prompts["attention_mask"], responses,
                               strict=True):
        prompt_ids = ids[mask.bool()].tolist()
        starts.append(len(prompt_ids))
        rows.append(prompt_ids + list(resp) + [tok.eos_token_id])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        labels[i, start: len(row)] = input_ids[i, start: len(row)]
    return {"input_ids": input_ids, "attention_mask": attention,
            "pixel_values": prompts["pixel_values"], "labels": labels}


def response_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token cross-entropy over the response tokens (``labels != -100``).

    The LM head runs on the response positions only (the prompt's ~130 positions need no
    logits), which saves about a fifth of a training step.
    """
    import torch

    labels = batch["labels"]
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=batch["pixel_values"]).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _lr_lambda(cfg: PretrainConfig | ClipPretrainConfig) -> Callable[[int], float]:
    """Linear warm-up then linear decay to 10% of the peak learning rate."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 1.0 - 0.9 * min(1.0, frac)
    return factor


def build_world_vlm(out_dir: str | Path, cfg: PretrainConfig) -> Path:
    """A random-weight world VLM with the world tokenizer (``make_tiny("llava", ...)``)."""
    from mmboundary.models.tiny import make_tiny

    corpus = world_corpus(cfg.corpus_samples, cfg.world_seed, cfg.world)
    return make_tiny("llava", out_dir, seed=cfg.seed, corpus=corpus,
                     vocab_size=cfg.spec.vocab_size, **cfg.spec.overrides())


def init_vision_from_clip(model: Any, clip_path: str | Path) -> None:
    """Copy a CLIP's vision transformer into a LLaVA model's vision tower (shapes must match)."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_path)
    tower = model.model.vision_tower  # transformers 5: CLIPVisionModel holds the layers itself
    tower = getattr(tower, "vision_model", tower)
    try:
        tower.load_state_dict(clip.vision_model.state_dict())
    except RuntimeError as err:
        raise ValueError(f"vision_init: the CLIP at {clip_path} does not match the VLM's vision "
                         f"tower (vision_hidden_size, vision_layers, patch_size): {err}") from err


def train_loop(model: Any, processor: Any, out: Path, cfg: PretrainConfig | ClipPretrainConfig,
               step_loss: Callable[[int], Any], progress: Progress | None,
               save_every: int = 0) -> dict[str, Any]:
    """AdamW + warm-up/linear decay + grad-norm clip 1.0 over ``step_loss(step)``; saves to
    ``out`` (and ``out/step-N`` every ``save_every`` steps); returns the training log."""
    import torch

    torch.manual_seed(cfg.seed)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                              weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _lr_lambda(cfg))
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        loss = step_loss(step)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        losses.append(float(loss.detach()))
        if save_every and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
            model.save_pretrained(out / f"step-{step + 1}")
            processor.save_pretrained(out / f"step-{step + 1}")
        if progress is not None:
            progress(step + 1, {"loss": losses[-1], "lr": sched.get_last_lr()[0]})
    seconds = time.perf_counter() - start
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, cfg.steps), 4),
            "first_loss": losses[0] if losses else None,
            "final_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": json.loads(json.dumps(asdict(cfg), default=list))}


def pretrain_world_vlm(out_dir: str | Path, cfg: PretrainConfig | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Build (or copy ``init_from``) and pretrain the world VLM, save it (fp32) to ``out_dir``;
    return the training log. Step k trains on train-split samples ``k*B .. k*B+B-1`` of
    ``cfg.world_seed``.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = cfg or PretrainConfig()
    set_threads(cfg.threads)
    if cfg.init_from is not None:
        out = Path(out_dir)
        shutil.copytree(cfg.init_from, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("step-*", "checkpoint_info.json"))
    else:
        out = build_world_vlm(out_dir, cfg)
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    if cfg.vision_init is not None:
        init_vision_from_clip(model, cfg.vision_init)

    def step_loss(step: int) -> Any:
        samples = [make_sample(step * cfg.batch_size + j, "train", cfg.world_seed, cfg.world)
                   for j in range(cfg.batch_size)]
        return response_loss(model, collate(processor, samples))

    return train_loop(model, processor, out, cfg, step_loss, progress, cfg.save_every)


# -------------------------------------------------------------------------------- evaluation
def final_answer(text: str) -> str | None:
    """X of the response's last step "So, the answer is X." (None when it states no answer)."""
    from mmboundary.data.schema import extract_answer
    from mmboundary.text.steps import split_steps

    steps = split_steps(text)
    return extract_answer(steps[-1].text) if steps else None


def evaluate_world_vlm(model_path: str | Path, samples: list[Sample], batch_size: int = 64,
                       max_new_tokens: int = 96, threads: int = 2) -> dict[str, Any]:
    """Greedy answer accuracy of a world VLM through ``VLM.generate`` (the pipeline's path).

    Accuracy = mean over samples of ``judge_answer(sample, final_answer(response), None)`` (the
    samples' ``answer_mode``: "choice" or "exact"); also per question kind and per format (mc /
    open). Returns the rates and the per-sample records.
    """
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image
    from mmboundary.text.matching import judge_answer

    set_threads(threads)
    vlm = VLM.from_pretrained(model_path, device="cpu", dtype="float32")
    generations = vlm.generate([vlm.prompt_text(s) for s in samples],
                               [load_image(s) for s in samples], max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
    records = []
    for sample, gen in zip(samples, generations, strict=True):
        answer = final_answer(gen.text)
        records.append({"id": sample.id, "kind": sample.meta.get("kind"),
                        "format": sample.meta.get("format"), "answer": answer,
                        "gold": sample.gold_answer, "correct": judge_answer(sample, answer, None).score == 1.0,
                        "text": gen.text})
    return {"accuracy": _rate(records), "n": len(records),
            "by_kind": _grouped(records, "kind"), "by_format": _grouped(records, "format"),
            "records": records}


def _rate(records: list[dict[str, Any]]) -> float:
    return round(sum(r["correct"] for r in records) / max(1, len(records)), 4)


def _grouped(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(record)
    return {k: _rate(v) for k, v in sorted(groups.items())}
