"""Re-teaching statements with only the output rows of statement-only tokens trainable
(``SFTConfig.trainable = "statement-rows"``, ``training.statement_rows``): which tokens, that
nothing else moves, that content logits stay as they were, and the config's refusals."""

from __future__ import annotations

import json

import pytest

from mmboundary.text import default_parser
from mmboundary.training.config import SFTConfig
from mmboundary.training.statement_rows import restrict_to_rows, statement_rows

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def world_tokenizer():
    from transformers import AutoTokenizer

    from mmboundary.shapesworld.scenes import shipped_world_model_path

    return AutoTokenizer.from_pretrained(shipped_world_model_path())


def _ids(tokenizer, *words):
    return {tokenizer.convert_tokens_to_ids(w) for w in words}


def test_rows_are_the_statement_tokens_the_content_never_uses(world_tokenizer) -> None:
    tok = world_tokenizer
    texts = ["There is a green square, but this is just a guess. So, the answer is green, "
             "with total certainty.",
             "There are 2 circles in total, but I'm not sure. So, the answer is 2, but I'm not sure."]
    rows = statement_rows(texts, tok, default_parser())
    # by hand: the statements are ", but this is just a guess", ", with total certainty" and
    # ", but I'm not sure"; the content uses ",", "Ġis", "Ġa" and "Ġtotal" too
    assert set(rows.trained) == _ids(tok, "Ġb", "ut", "Ġthis", "Ġju", "st", "Ġguess", "Ġwith",
                                     "Ġcertainty", "ĠI", "'m", "Ġnot", "Ġsure")
    assert set(rows.shared) == _ids(tok, ",", "Ġis", "Ġa", "Ġtotal")
    # where the statements part: after "," ("b" / "with") and after ", but" ("this" / "I");
    # "'m" only ever follows "I" here, so it is a continuation
    choice = statement_rows(texts, tok, default_parser(), choice_only=True)
    assert set(choice.trained) == _ids(tok, "Ġb", "Ġwith", "Ġthis", "ĠI") and not choice.shared
    with pytest.raises(ValueError, match="no token occurs only in statements"):
        statement_rows(["There is a green square."], tok, default_parser())


def test_training_moves_only_those_rows_and_content_logits_stay(world_tokenizer) -> None:
    """One optimizer step on a cross-entropy over every position: every parameter but the chosen
    rows of the output embedding is bit-identical, so are the logits of every other token at
    every position (the content's logits), while the chosen tokens' logits moved."""
    from transformers import AutoModelForImageTextToText

    from mmboundary.shapesworld.scenes import shipped_world_model_path

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(shipped_world_model_path())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = sorted(_ids(world_tokenizer, "Ġb", "ut", "Ġguess"))
    restrict_to_rows(model, rows)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["lm_head.weight"]
    ids = torch.tensor([world_tokenizer.encode("There is a green square, but this is just a guess.")])
    with torch.no_grad():
        logits0 = model(input_ids=ids).logits
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:])
    loss.backward()
    optim.step()
    for name, param in model.named_parameters():
        if name != "lm_head.weight":
            assert torch.equal(param, before[name]), name
    changed = (model.lm_head.weight != before["lm_head.weight"]).any(dim=1).nonzero().flatten()
    assert changed.tolist() == rows
    with torch.no_grad():
        logits1 = model(input_ids=ids).logits
    others = [v for v in range(logits1.shape[-1]) if v not in rows]
    assert torch.equal(logits1[..., others], logits0[..., others])
    assert not torch.equal(logits1[..., rows], logits0[..., rows])


def test_config_refuses_what_would_move_other_weights() -> None:
    with pytest.raises(ValueError, match="needs finetuning='full' and weight_decay=0"):
        SFTConfig(trainable="statement-rows")  # LoRA is the default
    with pytest.raises(ValueError, match="needs finetuning='full' and weight_decay=0"):
        SFTConfig(trainable="statement-choice-rows", finetuning="full", weight_decay=0.01)
    with pytest.raises(ValueError, match="trainable must be"):
        SFTConfig(trainable="rows")
    assert SFTConfig(trainable="statement-rows", finetuning="full").trainable == "statement-rows"


def test_restrict_refuses_ids_outside_the_vocabulary() -> None:
    from transformers import AutoModelForImageTextToText

    from mmboundary.shapesworld.scenes import shipped_world_model_path

    model = AutoModelForImageTextToText.from_pretrained(shipped_world_model_path())
    with pytest.raises(ValueError, match=r"token ids \[768\] outside the vocabulary \(768\)"):
        restrict_to_rows(model, [3, 768])


def test_json_of_a_run_names_the_rows(tmp_path, world_tokenizer) -> None:
    """``train_sft`` with ``trainable: statement-rows`` on the shipped world model: the saved
    model differs from it only in the rows listed in ``statement_rows.json``."""
    from safetensors.torch import load_file

    from mmboundary.data.schema import Response
    from mmboundary.shapesworld.scenes import read_split, shipped_world_model_path, write_split
    from mmboundary.text import StatementBank, default_bank
    from mmboundary.text.steps import split_steps
    from mmboundary.training.sft import train_sft
    from mmboundary.training.sft_data import build_sft

    torch.set_num_threads(2)
    data = write_split(tmp_path / "world", n=16, split="train", seed=0)
    lines = []
    for i, sample in enumerate(read_split(data)):
        text = " ".join(sample.reference.steps[-2:])
        steps = split_steps(text)
        for j, step in enumerate(steps):
            step.level, step.content_end = 1 + (i + j) % 5, step.end
        lines.append(Response(sample_id=sample.id, text=text, steps=steps).model_dump_json())
    (tmp_path / "est.jsonl").write_text("\n".join(lines) + "\n")
    bank = StatementBank({k: v[:1] for k, v in default_bank().levels.items()})
    out, _, _ = build_sft(tmp_path / "est.jsonl", data, tmp_path / "sft", bank=bank)
    base = shipped_world_model_path()
    path = train_sft(SFTConfig.from_dict({"preset": "tiny-cpu"}, model=str(base), dataset=str(out),
                                         output_dir=str(tmp_path / "run"), finetuning="full",
                                         trainable="statement-rows", max_steps=4))
    named = json.loads((tmp_path / "run" / "statement_rows.json").read_text())
    rows = sorted(int(t) for t in named["trained"])
    assert rows and not set(rows) & {int(t) for t in named["shared_with_content"]}
    old, new = load_file(base / "model.safetensors"), load_file(path / "model.safetensors")
    for name, value in old.items():
        if name.endswith("lm_head.weight"):
            changed = (new[name] != value).any(dim=1).nonzero().flatten().tolist()
            assert changed and set(changed) <= set(rows)
        else:
            assert torch.equal(new[name], value), name
