"""make_tiny: every architecture builds, saves and loads back through the normal loading path."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mmboundary.models.tiny import ARCHS, make_tiny

VLM_ARCHS = ["qwen2-vl", "llava", "idefics3"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_loads_through_auto_classes(arch, tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from mmboundary.models.vlm import load_processor

    path = tiny_model_dir(arch)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = load_processor(path, model.config.model_type)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 1_000_000
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[[Image.new("RGB", (70, 50), "red")]],
                    return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    assert logits.shape == (*enc["input_ids"].shape, len(processor.tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_llava_and_idefics3_load_with_auto_processor(arch, tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir(arch))
    assert processor.tokenizer.eos_token in ("<|im_end|>", "<end_of_utterance>")


def test_tokenizer_is_byte_level_and_round_trips(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llava"))
    for text in ["So, the answer is 'warm'.", "Ünïcödé ☃ 漢字 — but I can't be entirely sure",
                 "  two\nlines\t"]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tok.decode(enc["input_ids"]) == text
        # offsets tile the text (byte-level, untrimmed): consecutive, first 0, last len
        assert enc["offset_mapping"][0][0] == 0 and enc["offset_mapping"][-1][1] == len(text)
    assert "<image>" in tok.all_special_tokens
    assert len(tok("So, the answer is red.")["input_ids"]) < 10  # BPE merged the corpus words


def test_clip_text_ends_with_eos_and_scores(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    path = make_tiny("clip", tmp_path / "clip")
    model, processor = CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)
    enc = processor(text=["a red circle", "two blue squares"], images=[Image.new("RGB", (64, 64))],
                    padding=True, return_tensors="pt")
    eos = processor.tokenizer.eos_token_id
    for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=False):
        assert ids[mask.bool()][-1].item() == eos
    with torch.inference_mode():
        out = model(**enc)
    assert out.logits_per_image.shape == (1, 2)


def test_overrides_and_custom_corpus(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    corpus = ["There are two red circles.", "So, the answer is 2."] * 5
    path = make_tiny("llava", tmp_path / "m", corpus=corpus, vocab_size=300, hidden_size=96,
                     num_layers=1, image_size=32, patch_size=8)
    config = AutoConfig.from_pretrained(path)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (96, 1)
    assert config.vision_config.image_size == 32
    assert len(AutoTokenizer.from_pretrained(path)) <= 300
    assert json.loads((path / "processor_config.json").read_text())["patch_size"] == 8


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown arch 'gpt'"):
        make_tiny("gpt", tmp_path)
    with pytest.raises(ValueError, match="hidden_sise"):
        make_tiny("llava", tmp_path, hidden_sise=8)
    assert set(VLM_ARCHS) | {"clip"} <= set(ARCHS)


def test_cli_make_tiny(tmp_path):
    from typer.testing import CliRunner

    from mmboundary.cli import app

    out = tmp_path / "cli-model"
    result = CliRunner().invoke(app, ["models", "make-tiny", "--arch", "idefics3", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
