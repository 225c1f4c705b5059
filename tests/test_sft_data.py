"""Stage-1 SFT data: targets with statements, the TRL dataset, the LLaMA-Factory export."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mmboundary.data.schema import Response
from mmboundary.shapesworld.scenes import read_split, write_split
from mmboundary.text import StatementParser, default_bank, level_to_value
from mmboundary.text.steps import split_steps
from mmboundary.training.llamafactory import (
    DATASET_INFO_ENTRY,
    IMAGE_TOKEN,
    export_llamafactory,
    validate_sharegpt,
)
from mmboundary.training.sft_data import (
    build_sft,
    build_sft_records,
    load_sft_dataset,
    response_with_confidence,
    to_prompt_completion,
)

BANK = default_bank()


def constructed_estimates(samples, seed: int = 0) -> list[Response]:
    """Responses = the reference chains, each step given a level (as estimate output would)."""
    rng = random.Random(seed)
    out = []
    for sample in samples:
        text = " ".join(sample.reference.steps)
        steps = split_steps(text)
        for step in steps:
            step.level, step.content_end = rng.randint(1, 5), step.end
        out.append(Response(sample_id=sample.id, text=text, steps=steps))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("world")
    data = write_split(root, n=6, split="train", seed=3)
    return data, read_split(data)


def test_response_with_confidence_inserts_after_every_step() -> None:
    text = "The image shows a cat.  It is black, with total certainty.\nSo, the answer is cat."
    steps = split_steps(text)
    steps[1].content_end = steps[1].start + len("It is black")
    steps[1].statement = "with total certainty"
    for step, level in zip(steps, (1, 3, 5), strict=True):
        step.level = level
    target, levels = response_with_confidence(Response(sample_id="a", text=text, steps=steps),
                                              random.Random(0))
    assert levels == [1, 3, 5]
    parts = split_steps(target)
    assert "  " in target and "\n" in target  # the whitespace between steps is kept
    parsed = StatementParser().detect([p.text for p in parts])
    assert [d.level for d in parsed] == [1, 3, 5]  # exact bank matches: no model needed
    assert "with total certainty, " not in target  # the old statement was replaced
    assert target.startswith("The image shows a cat, ") and target.endswith(".")
    numeric, _ = response_with_confidence(Response(sample_id="a", text=text, steps=steps),
                                          random.Random(0), mode="numeric")
    assert numeric == ("The image shows a cat (confidence 0.1).  It is black (confidence 0.5).\n"
                       "So, the answer is cat (confidence 0.9).")


def test_missing_level_is_an_error_naming_the_step() -> None:
    steps = split_steps("One. Two.")
    steps[0].level = 2
    with pytest.raises(ValueError, match=r"response 'x': step 1 \('Two.'\) has no 'level'"):
        response_with_confidence(Response(sample_id="x", text="One. Two.", steps=steps),
                                 random.Random(0))


def test_records_are_seeded_per_sample_and_skip_failures(world) -> None:
    data, samples = world
    estimates = constructed_estimates(samples)
    estimates.append(Response(sample_id=samples[0].id, text="", meta={"error": "oom"}))
    records, summary = build_sft_records(estimates, samples, images_dir=data.parent, seed=5)
    again, _ = build_sft_records(list(reversed(estimates[:-1])), samples,
                                 images_dir=data.parent, seed=5)
    assert summary.records == 6 and summary.skipped_failed == 1
    assert {r.id: r.messages for r in records} == {r.id: r.messages for r in again}
    first = records[0]
    user, assistant = first.messages
    assert user["role"] == "user" and user["content"][0]["type"] == "image"
    assert user["content"][1]["text"].startswith(f"Question: {samples[0].question}")
    target = assistant["content"][0]["text"]
    values = [d.value for d in StatementParser().detect([s.text for s in split_steps(target)])]
    assert values == [level_to_value(k) for k in first.levels]
    with pytest.raises(KeyError, match="has no sample in the data file"):
        build_sft_records(estimates[:1], samples[1:], images_dir=data.parent)


def test_build_sft_writes_a_trl_dataset_with_images(world, tmp_path) -> None:
    data, samples = world
    est = tmp_path / "est.jsonl"
    est.write_text("".join(r.model_dump_json() + "\n" for r in constructed_estimates(samples)))
    out, summary, records = build_sft(est, data, tmp_path / "sft", seed=1)
    assert summary.steps == sum(len(r.levels) for r in records)
    dataset = load_sft_dataset(out)
    assert dataset.column_names == ["id", "messages", "images"] and len(dataset) == 6
    row = dataset[0]
    assert row["images"][0].size == (64, 64)
    assert row["messages"][1]["content"][0]["text"] == records[0].messages[1]["content"][0]["text"]
    pc = to_prompt_completion(row)
    assert [m["role"] for m in pc["prompt"]] == ["user"]
    assert pc["completion"][0]["role"] == "assistant"
    lines = (out / "records.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["images"] == records[0].images
    assert json.loads((out / "summary.json").read_text())["records"] == 6


def test_llamafactory_export_follows_their_format(world, tmp_path) -> None:
    data, samples = world
    records, _ = build_sft_records(constructed_estimates(samples), samples, images_dir=data.parent)
    yaml_path = export_llamafactory(records, tmp_path / "lf", dataset_name="mmb")
    root = yaml_path.parent
    rows = json.loads((root / "mmb.json").read_text())
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["mmb"] == {"file_name": "mmb.json", **DATASET_INFO_ENTRY}
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert set(row) == {"messages", "images"}
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        user = row["messages"][0]["content"]
        assert user.count(IMAGE_TOKEN) == len(row["images"]) == 1 and user.startswith(IMAGE_TOKEN)
        assert row["messages"][1]["content"] == record.messages[1]["content"][0]["text"]
        assert all((root / p).is_file() and not Path(p).is_absolute() for p in row["images"])
    config = yaml.safe_load(yaml_path.read_text())
    assert config["dataset"] == "mmb" and config["stage"] == "sft"
    assert config["dataset_dir"] == str(root) == config["media_dir"]
    assert config["learning_rate"] == 1e-4
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 16


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "images": ["x.png"]}, "0 <image> tokens but 1 images"),
    ({"messages": [{"role": "assistant", "content": "<image>q"},
                   {"role": "user", "content": "a"}], "images": ["x.png"]},
     "message 0 has role 'assistant', expected 'user'"),
    ({"messages": [{"role": "user", "content": "<image>q"}], "images": ["x.png"]},
     "user/assistant pairs"),
])
def test_validate_sharegpt_rejects_bad_rows(row, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_sharegpt(row)


def test_build_sft_cli(world, tmp_path) -> None:
    from typer.testing import CliRunner

    from mmboundary.cli import app

    data, samples = world
    est = tmp_path / "est.jsonl"
    est.write_text("".join(r.model_dump_json() + "\n" for r in constructed_estimates(samples)))
    result = CliRunner().invoke(app, ["build-sft", "--estimates", str(est), "--data", str(data),
                                      "--out", str(tmp_path / "o"), "--mode", "numeric",
                                      "--llamafactory", str(tmp_path / "lf")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "lf" / "mmboundary_sft.json").read_text())
    assert "(confidence 0." in rows[0]["messages"][1]["content"]
    assert (tmp_path / "lf" / "mmboundary_sft_sft.yaml").is_file()


def test_build_sft_cli_random_levels(world, tmp_path) -> None:
    """``--random-levels``: the records state the levels ``random_levels`` draws (by --seed and
    sample id), the same content, and the summary counts those levels."""
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.training.sft_data import random_levels

    data, samples = world
    responses = constructed_estimates(samples)
    est = tmp_path / "est.jsonl"
    est.write_text("".join(r.model_dump_json() + "\n" for r in responses))
    for name, extra in (("given", []), ("random", ["--random-levels"])):
        result = CliRunner().invoke(app, ["build-sft", "--estimates", str(est), "--data",
                                          str(data), "--out", str(tmp_path / name), "--seed", "4",
                                          *extra])
        assert result.exit_code == 0, result.output
    given, drawn = ([json.loads(line) for line in (tmp_path / name / "records.jsonl").open()]
                    for name in ("given", "random"))
    expected = {r.sample_id: [s.level for s in r.steps] for r in random_levels(responses, 4)}
    assert [r["levels"] for r in drawn] == [expected[r["id"]] for r in drawn]
    assert [r["levels"] for r in drawn] != [r["levels"] for r in given]
    summary = json.loads((tmp_path / "random" / "summary.json").read_text())
    assert summary["levels"] == {str(k): v for k, v in sorted(
        Counter(level for r in drawn for level in r["levels"]).items())}
