"""Stage-1 SFT on a tiny offline VLM: the loss mask, the loss falling, statements learned; the
warm-up's content terms (training.distill): statement tokens, the statement-free teacher batch,
the KL by hand, a training run that logs them."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import fields
from pathlib import Path

import pytest

from mmboundary.data.schema import Response
from mmboundary.shapesworld.scenes import load_image, read_split, write_split
from mmboundary.text import StatementBank, StatementParser, default_bank, default_parser
from mmboundary.text.steps import split_steps
from mmboundary.training.config import SFTConfig
from mmboundary.training.distill import content_kl, statement_token_mask, teacher_inputs
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


# -- the content terms (training.distill) ------------------------------------------------------
def _batch(setup, rows=4):
    from mmboundary.training.sft import build_trainer

    root, model, dataset, records, _ = setup
    trainer = build_trainer(tiny_config(root, model, dataset, output_dir=str(root / "distill")))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(rows)])
    return trainer, batch, records[:rows]


def _plain(record) -> str:
    """The record's response as the vanilla model wrote it: statements out, stops kept."""
    parser = default_parser()
    text = record.messages[1]["content"][0]["text"]
    return " ".join(text[s.start:s.content_end] + text[s.start:s.end].rstrip()[-1]
                    for s in parser.parse(text))


def test_statement_mask_marks_exactly_the_statements(sft_setup) -> None:
    trainer, batch, records = _batch(sft_setup)
    tok = trainer.processing_class.tokenizer
    parser = default_parser()
    mask = statement_token_mask(tok, batch["input_ids"], batch["labels"], parser)
    assert not mask[batch["labels"] == -100].any()  # never in the prompt
    for row, record in enumerate(records):
        text = record.messages[1]["content"][0]["text"]
        statements = [s.statement for s in parser.parse(text)]
        said = tok.decode(batch["input_ids"][row][mask[row]])
        # the statements with the comma or space before them, nothing else
        assert said.replace(",", " ").split() == " ".join(statements).replace(",", " ").split()
        content = (batch["labels"][row] != -100) & ~mask[row]
        assert tok.decode(batch["input_ids"][row][content], skip_special_tokens=True).strip() \
            == _plain(record)


def test_teacher_batch_is_the_plain_response_and_its_logits_match_a_separate_pass(
        sft_setup) -> None:
    """Cross-check: the teacher's rows are the prompt + the statement-free response, tokenised as
    the tokenizer would tokenise that text, and its logits at each kept token equal those of an
    independent single-row forward pass of that text."""
    trainer, batch, records = _batch(sft_setup)
    tok = trainer.processing_class.tokenizer
    mask = statement_token_mask(tok, batch["input_ids"], batch["labels"], default_parser())
    t_inputs, index = teacher_inputs(batch, ~mask, tok.pad_token_id, tok.padding_side)
    assert "labels" not in t_inputs and torch.equal(t_inputs["pixel_values"], batch["pixel_values"])
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(**t_inputs).logits
    for row, record in enumerate(records):
        kept = (index[row] >= 0).nonzero().flatten()
        assert torch.equal(t_inputs["input_ids"][row, index[row, kept]], batch["input_ids"][row, kept])
        valid = t_inputs["attention_mask"][row].bool()
        ids = t_inputs["input_ids"][row][valid]
        prompt = tok.decode(batch["input_ids"][row][(batch["labels"][row] == -100)
                                                  & batch["attention_mask"][row].bool()])
        expected = tok(prompt + _plain(record) + "<|im_end|>\n", add_special_tokens=False)
        assert ids.tolist() == expected["input_ids"]
        with torch.no_grad():
            alone = model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
                          pixel_values=batch["pixel_values"][row:row + 1]).logits[0]
        assert torch.allclose(logits[row][valid], alone, atol=1e-4)


def test_content_kl_by_hand() -> None:
    # batch 1, length 4, vocabulary 2; tokens 2 and 3 are in the assistant turn, 2 a statement
    labels = torch.tensor([[-100, -100, 1, 0]])
    statement = torch.tensor([[False, False, True, False]])
    student = torch.zeros(1, 4, 2)
    student[0, 2] = torch.tensor([0.0, math.log(3.0)])  # predicts token 3: p = (1/4, 3/4)
    teacher = torch.zeros(1, 3, 2)  # the statement token removed: token 3 sits at teacher pos 2
    teacher[0, 1] = torch.tensor([math.log(3.0), 0.0])  # p = (3/4, 1/4)
    index = torch.tensor([[0, 1, -1, 2]])
    kl, n = content_kl(student, teacher, labels, statement, index)
    expected = 0.75 * math.log(0.75 / 0.25) + 0.25 * math.log(0.25 / 0.75)
    assert n == 1 and kl.item() == pytest.approx(expected, abs=1e-6)
    same, _ = content_kl(student, student, labels, torch.zeros_like(statement),
                         torch.tensor([[0, 1, 2, 3]]))
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="no teacher position"):
        content_kl(student, teacher, labels, statement, torch.tensor([[0, 1, -1, 0]]))


def test_distilled_warm_up_trains_logs_its_terms_and_keeps_the_teacher(sft_setup) -> None:
    from mmboundary.training.sft import build_trainer, train_sft

    root, model, dataset, _, _ = sft_setup
    config = tiny_config(root, model, dataset, finetuning="full", max_steps=4, logging_steps=1,
                         distill_weight=2.0, content_weight=3.0,
                         output_dir=str(root / "distilled"))
    trainer = build_trainer(config)
    before = {n: p.clone() for n, p in trainer.teacher.named_parameters()}
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in trainer.teacher.named_parameters())
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 4
    for entry in logs:
        assert entry["distill_kl"] > 0 and entry["content_tokens"] > 0
        # loss = content-weighted cross-entropy + 2 * KL (both logged as batch means)
        assert entry["loss"] == pytest.approx(entry["cross_entropy"] + 2.0 * entry["distill_kl"],
                                              rel=1e-3)
    path = train_sft(config)
    assert (path / "config.json").is_file()
    assert json.loads((root / "distilled" / "sft_config.json").read_text())["distill_weight"] == 2.0
    with pytest.raises(ValueError, match="distill_weight must be >= 0"):
        tiny_config(root, model, dataset, distill_weight=-1.0)


def test_distillation_with_lora_uses_the_base_weights_as_teacher(sft_setup) -> None:
    """With LoRA no second model is loaded: the teacher is the student with its adapters off, so
    at the start (LoRA B = 0) the KL is that of the statements' context alone, and it is the
    same as with a separately loaded vanilla teacher."""
    from mmboundary.training.sft import build_trainer

    root, model, dataset, _, _ = sft_setup
    lora = build_trainer(tiny_config(root, model, dataset, distill_weight=1.0,
                                     output_dir=str(root / "distill-lora")))
    full = build_trainer(tiny_config(root, model, dataset, distill_weight=1.0, finetuning="full",
                                     output_dir=str(root / "distill-full")))
    assert lora.teacher is None and full.teacher is not None
    batch = lora.data_collator([lora.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        lora.model.eval()
        full.model.eval()
        lora.compute_loss(lora.model, dict(batch))
        full.compute_loss(full.model, dict(batch))
    kl_lora = lora._metrics["eval"]["distill_kl"][-1]
    kl_full = full._metrics["eval"]["distill_kl"][-1]
    assert kl_lora > 0 and kl_lora == pytest.approx(kl_full, rel=1e-4)


def test_numeric_datasets_mark_their_numbers_as_statements(sft_setup) -> None:
    """The w/o S-S mapping ablation states "(confidence 0.7)": the content terms must leave those
    tokens out (read from the dataset's summary.json), not pull them to the vanilla model."""
    from mmboundary.training.sft import build_trainer, dataset_mode

    root, model, _, _, _ = sft_setup
    out, _, records = build_sft(root / "est.jsonl", root / "world" / "train.json",
                                root / "sft-numeric", mode="numeric")
    assert dataset_mode(out) == "numeric" and dataset_mode(root / "nowhere") == "statement"
    trainer = build_trainer(tiny_config(root, model, out, distill_weight=1.0,
                                        output_dir=str(root / "numeric")))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tok = trainer.processing_class.tokenizer
    mask = statement_token_mask(tok, batch["input_ids"], batch["labels"],
                                trainer.statement_parser)
    for row, record in enumerate(records[:2]):
        said = tok.decode(batch["input_ids"][row][mask[row]])
        text = record.messages[1]["content"][0]["text"]
        assert said.split() == " ".join(re.findall(r"\(confidence [\d.]+\)", text)).split()


def test_random_levels_keep_the_content_and_draw_per_sample() -> None:
    from mmboundary.training.sft_data import random_levels

    responses = [Response(sample_id=f"q{i}", text="There are 2 circles. So, the answer is 2.",
                          steps=split_steps("There are 2 circles. So, the answer is 2."))
                 for i in range(40)]
    for r in responses:
        for step in r.steps:
            step.level = 3
    drawn = random_levels(responses, seed=7)
    for original, copy in zip(responses, drawn, strict=True):
        rng = random.Random(f"7:random-levels:{original.sample_id}")
        assert [s.level for s in copy.steps] == [rng.randint(1, 5) for _ in copy.steps]
        assert [s.text for s in copy.steps] == [s.text for s in original.steps]
        assert all(s.level == 3 for s in original.steps)  # copies, the input is untouched
    assert {s.level for r in drawn for s in r.steps} == {1, 2, 3, 4, 5}
    # by sample id, not by position: the same response draws the same levels anywhere
    assert [s.level for s in random_levels(responses[::-1], seed=7)[0].steps] == \
        [s.level for s in drawn[-1].steps]


def test_content_only_rows_train_no_statement_token(sft_setup, tmp_path) -> None:
    """``content_only_dataset``: the set is appended with a ``content_only`` flag, and the loss
    of a batch equals, by hand, the cross-entropy mean over the tokens trained: every assistant
    token of a normal row, only the content tokens of a flagged row."""
    from mmboundary.training.sft import build_trainer

    root, model, dataset, _, _ = sft_setup
    extra, _, _ = build_sft(root / "est.jsonl", root / "world" / "train.json", tmp_path / "rand",
                            bank=SUB_BANK, levels="random", seed=3)
    trainer = build_trainer(tiny_config(root, model, dataset, output_dir=str(tmp_path / "run"),
                                        content_only_dataset=str(extra)))
    data = trainer.train_dataset
    n = len(data) // 2
    assert data["content_only"] == [0] * n + [1] * n and data["id"][:n] == data["id"][n:]
    batch = trainer.data_collator([dict(data[0]), dict(data[n + 1])])
    assert batch["content_only"].tolist() == [False, True]
    labels = batch["labels"]
    tok = trainer.processing_class.tokenizer
    statement = statement_token_mask(tok, batch["input_ids"], labels, default_parser())
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(**{k: v for k, v in batch.items()
                                  if k not in ("labels", "content_only")}).logits
    shift = labels[:, 1:]
    per = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(),
                                            shift.clamp(min=0), reduction="none")
    trained = (shift != -100)
    trained[1] &= ~statement[1, 1:]  # the flagged row: content tokens only
    assert statement[1, 1:][shift[1] != -100].any()  # it had statement tokens to leave out
    expected = per[trained].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # a set with other columns is refused, naming them
    from mmboundary.training.sft import prepare_dataset
    from mmboundary.training.sft_data import load_sft_dataset

    bad = tmp_path / "bad"
    load_sft_dataset(extra).rename_column("id", "record").save_to_disk(str(bad / "hf"))
    with pytest.raises(ValueError, match="content_only_dataset: columns"):
        prepare_dataset(tiny_config(root, model, dataset, content_only_dataset=str(bad)))
