"""Pretrain the ShapesWorld CLIP: a small CLIP whose image-text cosine carries signal (for U_CLIPS).

It is trained with the symmetric InfoNCE loss of Radford et al. (2021) on (image, one image-level
fact about one of its objects) pairs, drawn from a fresh train-split stream every step:

    L = (CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2,   I, T = unit-norm embeddings, s = exp(tau).

``evaluate_world_clip`` measures the signal: AUROC of cos(image, fact) for true vs false facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Sample
from mmboundary.shapesworld.pretrain_vlm import Progress, set_threads, train_loop, world_corpus
from mmboundary.shapesworld.scenes import WorldConfig, describe, make_samples, render, where


@dataclass(frozen=True)
class ClipPretrainConfig:
    """Contrastive pretraining of the world CLIP (defaults: ours; ``make_tiny("clip")`` sizes)."""

    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    world_seed: int = 0
    threads: int = 1
    corpus_samples: int = 2000
    hidden_size: int = 64
    num_layers: int = 2
    vision_hidden_size: int = 64
    patch_size: int = 8
    vocab_size: int = 768
    world: WorldConfig = field(default_factory=WorldConfig)


def clip_pair(sample: Sample, rng: random.Random) -> tuple[Any, str]:
    """(image, the image-level fact about one of its objects, chosen by ``rng``)."""
    obj = rng.choice(sample.meta["scene"])
    return render(sample), describe(obj, sample.meta["render"]["size"])


def false_fact(sample: Sample, rng: random.Random) -> str:
    """An image-level fact that is false for the sample's scene (no object has that colour,
    shape and location phrase), drawn by ``rng``."""
    from mmboundary.shapesworld.scenes import COLORS, SHAPES

    size = sample.meta["render"]["size"]
    true = {describe(o, size) for o in sample.meta["scene"]}
    phrases = sorted({where({"x": x, "y": y}, size) for x in (0, size // 2, size - 1)
                      for y in (0, size // 2, size - 1)})
    while True:
        text = f"There is a {rng.choice(list(COLORS))} {rng.choice(SHAPES)} {rng.choice(phrases)}."
        if text not in true:
            return text


def pretrain_world_clip(out_dir: str | Path, cfg: ClipPretrainConfig | None = None,
                        progress: Progress | None = None) -> dict[str, Any]:
    """Build ``make_tiny("clip")`` with the world tokenizer, train it with symmetric InfoNCE on
    (image, fact) pairs from the train split, save it (fp32); return the training log."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from mmboundary.models.tiny import make_tiny

    cfg = cfg or ClipPretrainConfig()
    set_threads(cfg.threads)
    corpus = world_corpus(cfg.corpus_samples, cfg.world_seed, cfg.world)
    out = make_tiny("clip", out_dir, seed=cfg.seed, corpus=corpus, vocab_size=cfg.vocab_size,
                    hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                    vision_hidden_size=cfg.vision_hidden_size, patch_size=cfg.patch_size,
                    image_size=cfg.world.image_size, intermediate_size=2 * cfg.hidden_size)
    processor = CLIPProcessor.from_pretrained(out)
    model = CLIPModel.from_pretrained(out, dtype=torch.float32)
    rng = random.Random(f"clip/{cfg.seed}")

    def step_loss(step: int) -> Any:
        samples = make_samples(cfg.batch_size, cfg.world_seed, "train", cfg.world,
                               start=step * cfg.batch_size)
        images, texts = zip(*(clip_pair(s, rng) for s in samples), strict=True)
        batch = processor(images=list(images), text=list(texts), return_tensors="pt",
                          padding=True)
        return model(**batch, return_loss=True).loss

    return train_loop(model, processor, Path(out), cfg, step_loss, progress)


def evaluate_world_clip(model_path: str | Path, samples: list[Sample], seed: int = 0
                        ) -> dict[str, float]:
    """Signal of the CLIP cosine on held-out samples: one true fact and one false fact per image.

    ``auroc`` = AUROC of cos(image, fact) for true vs false facts; ``pair_accuracy`` = share of
    images whose true fact scores above their false fact; mean cosines of each group.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from mmboundary.models.clip import ClipScorer

    scorer = ClipScorer.from_pretrained(model_path, device="cpu")
    rng = random.Random(f"clip-eval/{seed}")
    images, true_texts, false_texts = [], [], []
    for sample in samples:
        image, text = clip_pair(sample, rng)
        images.append(image)
        true_texts.append(text)
        false_texts.append(false_fact(sample, rng))
    keys = [s.id for s in samples]
    pos = scorer.cosine(images, true_texts, keys=keys)
    neg = scorer.cosine(images, false_texts, keys=keys)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return {"auroc": round(float(roc_auc_score(labels, np.r_[pos, neg])), 4),
            "pair_accuracy": round(float(np.mean(pos > neg)), 4),
            "mean_cos_true": round(float(pos.mean()), 4),
            "mean_cos_false": round(float(neg.mean()), 4), "n": len(samples)}
