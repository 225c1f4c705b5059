"""World VLM / CLIP pretraining: a 5-step smoke run that lowers the loss and saves a model VLM
loads; the training batch masks everything but the response; the shipped checkpoints load and
beat chance."""

from __future__ import annotations

import json

import pytest
import torch

from mmboundary.shapesworld.pretrain_clip import (
    ClipPretrainConfig,
    evaluate_world_clip,
    pretrain_world_clip,
)
from mmboundary.shapesworld.pretrain_vlm import (
    PretrainConfig,
    WorldModelSpec,
    build_world_vlm,
    collate,
    evaluate_world_vlm,
    final_answer,
    init_vision_from_clip,
    pretrain_world_vlm,
    response_loss,
    response_text,
)
from mmboundary.shapesworld.scenes import (
    make_samples,
    shipped_world_clip_path,
    shipped_world_model_path,
)
from mmboundary.text.matching import normalize_vqa_answer

TINY = WorldModelSpec(hidden_size=32, intermediate_size=64, vision_hidden_size=32,
                      vocab_size=400)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _loss(path, samples) -> float:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return float(response_loss(model, collate(AutoProcessor.from_pretrained(path), samples)))


def test_collate_trains_on_the_response_only(tmp_path) -> None:
    from transformers import AutoProcessor

    cfg = PretrainConfig(corpus_samples=50, spec=TINY)
    processor = AutoProcessor.from_pretrained(build_world_vlm(tmp_path, cfg))
    samples = make_samples(3, seed=0, split="train")
    batch = collate(processor, samples)
    tok = processor.tokenizer
    for row, sample in enumerate(samples):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tok.decode(labelled) == response_text(sample) + tok.eos_token
        # the 64 image tokens and the prompt carry no loss
        image_id = tok.convert_tokens_to_ids("<image>")
        assert (batch["input_ids"][row] == image_id).sum() == 64
        assert not (batch["labels"][row] == image_id).any()
    assert response_text(samples[0]).endswith(f"So, the answer is {samples[0].gold_answer}.")


def test_pretrain_smoke_lowers_loss_and_saves_a_loadable_vlm(tmp_path) -> None:
    from mmboundary.models.vlm import VLM

    cfg = PretrainConfig(steps=5, batch_size=4, learning_rate=1e-2, warmup_steps=1,
                         corpus_samples=50, spec=TINY)
    held_out = make_samples(8, seed=0, split="validation")
    before = _loss(build_world_vlm(tmp_path / "init", cfg), held_out)  # same seed = same init
    info = pretrain_world_vlm(tmp_path / "trained", cfg)
    after = _loss(tmp_path / "trained", held_out)
    assert info["steps"] == 5 and info["parameters"] < 200_000
    assert before > 5.0  # ~ln(400) for random weights
    assert after < before - 1.0, (before, after)
    vlm = VLM.from_pretrained(tmp_path / "trained", device="cpu")
    result = evaluate_world_vlm(tmp_path / "trained", held_out[:2], max_new_tokens=8)
    assert result["n"] == 2 and set(result["by_kind"]) <= {"count", "color", "position", "exist"}
    assert vlm.model.config.model_type == "llava"


def test_final_answer_reads_the_last_step() -> None:
    assert final_answer("There is a red circle. So, the answer is red.") == "red"
    assert final_answer("There is a red circle.") is None


def test_clip_smoke_and_false_facts(tmp_path) -> None:
    import random

    from mmboundary.shapesworld.pretrain_clip import false_fact
    from mmboundary.shapesworld.scenes import describe

    sample = make_samples(1, seed=0, split="test")[0]
    fact = false_fact(sample, random.Random(0))
    assert fact not in {describe(o, 64) for o in sample.meta["scene"]}
    cfg = ClipPretrainConfig(steps=3, batch_size=8, corpus_samples=50, hidden_size=32,
                             vision_hidden_size=32, vocab_size=400)
    info = pretrain_world_clip(tmp_path / "clip", cfg)
    assert info["steps"] == 3
    signal = evaluate_world_clip(tmp_path / "clip", make_samples(10, seed=0, split="test"))
    assert 0.0 <= signal["auroc"] <= 1.0 and signal["n"] == 10
    # its vision encoder can initialise a VLM's vision tower (same sizes)
    from transformers import AutoModelForImageTextToText, CLIPModel

    vlm = AutoModelForImageTextToText.from_pretrained(
        build_world_vlm(tmp_path / "vlm", PretrainConfig(corpus_samples=50, spec=TINY)))
    clip = CLIPModel.from_pretrained(tmp_path / "clip")
    key = "embeddings.patch_embedding.weight"
    assert not torch.equal(vlm.model.vision_tower.state_dict()[key],
                           clip.vision_model.state_dict()[key])
    init_vision_from_clip(vlm, tmp_path / "clip")
    assert torch.equal(vlm.model.vision_tower.state_dict()[key],
                       clip.vision_model.state_dict()[key])


def test_shipped_vlm_beats_the_image_blind_ceiling() -> None:
    """The best image-blind policy (most frequent answer per question text, fitted on 20,000
    train samples) scores 0.407 on the test split (benchmarks/world_pretrain.md); the shipped
    model measured 0.587 on 1000 test samples (0.55 on these 200; sd ~0.035). We require 0.45:
    above the blind ceiling by more than one sd, below the measured accuracy by nearly four."""
    path = shipped_world_model_path()
    info = json.loads((path / "checkpoint_info.json").read_text())
    assert info["evaluation"]["n"] >= 1000
    assert 0.5 <= info["evaluation"]["accuracy"] <= 0.8  # knows the world, imperfectly
    samples = make_samples(200, seed=123, split="test")
    result = evaluate_world_vlm(path, samples, batch_size=50, threads=1)
    assert result["accuracy"] >= 0.45, result["by_kind"]
    assert result["by_kind"]["color"] > 0.35  # blind ceiling 0.256
    for sample, record in zip(samples, result["records"], strict=True):  # independent re-check
        answer = record["answer"]
        if answer is None:
            assert not record["correct"]
        elif sample.choices is None:
            golds = {normalize_vqa_answer(a) for a in sample.answers}
            assert record["correct"] == (normalize_vqa_answer(answer) in golds)
        elif normalize_vqa_answer(answer) in map(normalize_vqa_answer, sample.choices):
            assert record["correct"] == (normalize_vqa_answer(answer)
                                         == normalize_vqa_answer(sample.gold_answer))


def test_shipped_clip_cosine_carries_signal() -> None:
    path = shipped_world_clip_path()
    signal = evaluate_world_clip(path, make_samples(100, seed=123, split="test"), seed=1)
    assert signal["auroc"] >= 0.65, signal
    assert signal["mean_cos_true"] > signal["mean_cos_false"]
