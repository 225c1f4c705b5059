"""Stage-1 SFT on a tiny offline VLM: the loss mask, the loss falling, statements learned."""

from __future__ import annotations

import json
import random
from dataclasses import fields
from pathlib import Path

import pytest

from mmboundary.data.schema import Response
from mmboundary.shapesworld.scenes import load_image, read_split, write_split
from mmboundary.text import StatementBank, StatementParser, default_bank
from mmboundary.text.steps import split_steps
from mmboundary.training.config import SFTConfig
from mmboundary.training.sft_data import build_sft

torch = pytest.importorskip("torch")

# Two statements per level (from the shipped bank): enough variety to need the level, few enough
# for a ~0.5M-parameter random model to learn them in a few dozen CPU steps.
SUB_BANK = StatementBank({k: v[:2] for k, v in default_bank().levels.items()})


@pytest.fixture(scope="module")
def sft_setup(tmp_path_factory):
    from mmboundary.models.tiny import DEFAULT_CORPUS, make_tiny

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("sft")
    data = write_split(root / "world", n=24, split="train", seed=0)
    samples = read_split(data)
    rng = random.Random(0)
    lines = []
    for sample in samples:
        text = " ".join(sample.reference.steps[-2:])  # two steps: the fact and the answer
        steps = split_steps(text)
        for step in steps:
            step.level, step.content_end = rng.randint(1, 5), step.end
        lines.append(Response(sample_id=sample.id, text=text, steps=steps).model_dump_json())
    (root / "est.jsonl").write_text("\n".join(lines) + "\n")
    out, _, records = build_sft(root / "est.jsonl", data, root / "sft", bank=SUB_BANK)
    corpus = [*DEFAULT_CORPUS, *SUB_BANK.statements,
              *(m["content"][-1]["text"] for r in records for m in r.messages)]
    model = make_tiny("llava", root / "tiny", seed=0, corpus=corpus, vocab_size=768,
                      image_size=32, patch_size=8)
    return root, model, out, records, samples


def tiny_config(root: Path, model: Path, dataset: Path, **kw) -> SFTConfig:
    return SFTConfig.from_dict({"preset": "tiny-cpu", "model": str(model),
                                "dataset": str(dataset), "output_dir": str(root / "run"), **kw})


def test_every_config_field_is_documented() -> None:
    from mmboundary.training.rl_config import RLConfig

    for cls in (SFTConfig, RLConfig):  # one config base: docs, validation on load
        assert set(cls.field_docs()) == {f.name for f in fields(cls)}, cls.__name__
    assert SFTConfig().learning_rate == 1e-4 and SFTConfig().batch_size == 16
    with pytest.raises(ValueError, match="unknown SFTConfig field"):
        SFTConfig.from_dict({"lr": 1})
    with pytest.raises(ValueError, match="num_epochs -> num_train_epochs"):
        SFTConfig.from_dict({"num_epochs": 1})


def test_sft_and_rl_spell_shared_fields_alike() -> None:
    """TRL's names in both stages (issue #14: they used to differ)."""
    from mmboundary.training.rl_config import RLConfig

    shared = {"learning_rate", "num_train_epochs", "per_device_train_batch_size", "lora_r",
              "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora", "seed",
              "max_steps", "logging_steps", "save_steps", "gradient_checkpointing", "report_to",
              "output_dir", "model"}
    assert shared <= {f.name for f in fields(SFTConfig)}
    assert shared <= {f.name for f in fields(RLConfig)}


def test_loss_is_on_the_assistant_turn_only(sft_setup) -> None:
    from mmboundary.training.sft import build_trainer

    root, model, dataset, records, _ = sft_setup
    trainer = build_trainer(tiny_config(root, model, dataset, output_dir=str(root / "mask")))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    tok = trainer.processing_class.tokenizer
    for row in range(3):
        labels = batch["labels"][row]
        kept = labels[labels != -100].tolist()
        target = records[row].messages[1]["content"][0]["text"]
        expected = tok(target + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        assert kept == expected  # exactly the assistant turn (with its end-of-turn token)
        ids = batch["input_ids"][row][labels != -100].tolist()
        assert ids == kept
        assert "Question:" not in tok.decode(kept)


def test_freeze_modules_keeps_the_named_layers_fixed(sft_setup) -> None:
    from mmboundary.training.sft import load_model_and_processor

    root, model, dataset, _, _ = sft_setup
    frozen, _ = load_model_and_processor(tiny_config(root, model, dataset, finetuning="full",
                                                     freeze_modules="layers.0., embed_tokens"))
    grads = {name: p.requires_grad for name, p in frozen.named_parameters()}
    assert not any(g for n, g in grads.items() if "layers.0." in n or "embed_tokens" in n)
    assert any(g for n, g in grads.items() if "layers.1." in n)
    assert not any(g for n, g in grads.items() if "vision" in n)  # freeze_vision as before
    with pytest.raises(ValueError, match=r"freeze_modules: \['layers.9.'\] match no parameter"):
        load_model_and_processor(tiny_config(root, model, dataset, finetuning="full",
                                             freeze_modules="layers.9."))


def test_sft_teaches_statements_and_the_loss_falls(sft_setup) -> None:
    """Measured (24 examples, batch 8, lr 3e-3, full fine-tuning, 60 steps): see the report."""
    from mmboundary.models.vlm import VLM
    from mmboundary.training.sft import train_sft

    root, model, dataset, _, samples = sft_setup
    path = train_sft(tiny_config(root, model, dataset, finetuning="full", max_steps=60))
    log = [e["loss"] for e in json.loads((root / "run" / "train_log.json").read_text())
           if "loss" in e]
    assert log[-1] < 0.5 * log[0], log
    vlm = VLM.from_pretrained(path, device="cpu")
    sub = samples[:8]
    gens = vlm.generate([vlm.prompt_text(s) for s in sub], [load_image(s) for s in sub],
                        max_new_tokens=64)
    parser = StatementParser()
    steps = [step for g in gens for step in parser.parse(g.text)]
    with_statement = sum(step.statement is not None for step in steps)
    print(f"loss {log}; steps with a statement: {with_statement}/{len(steps)}")
    print(*[g.text for g in gens], sep="\n")
    assert steps and with_statement / len(steps) >= 0.6, [g.text for g in gens]


def test_lora_saves_adapter_and_a_loadable_merged_model(sft_setup) -> None:
    from mmboundary.models.vlm import VLM
    from mmboundary.training.sft import train_sft

    root, model, dataset, _, samples = sft_setup
    out = root / "lora"
    path = train_sft(tiny_config(root, model, dataset, output_dir=str(out), max_steps=2))
    assert path == out / "model"
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert not any("vision" in t for t in adapter["target_modules"])  # language model only
    vlm = VLM.from_pretrained(path, device="cpu")
    gen = vlm.generate([vlm.prompt_text(samples[0])], [load_image(samples[0])], max_new_tokens=4)
    assert len(gen) == 1
