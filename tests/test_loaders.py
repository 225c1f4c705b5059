"""Loaders on the authors' real files (A-OKVQA val 1152, CulturalVQA 800), broken copies, other
shapes (JSONL, dict by id, ScienceQA, our Sample JSON), images, HF round trip and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.data.formats import answer_form
from mmboundary.data.images import MissingImageError, load_image, resolve_image
from mmboundary.data.io import write_jsonl_atomic
from mmboundary.data.loaders import DataLoadError, load_annotated
from mmboundary.data.schema import ReferenceChain, Sample

NO_IMAGE_LEVEL = {
    "2oPzCyj5FjrKtBLjGZH2rF", "4H7KMfvPvCTSvtf8Uyp55D", "9R6ddmMNiye654hqqPZ2eE",
    "9fX9oZHdEtHPfWbHi4BhwA", "B89EaRFhsoHzAy55JKCZJJ", "EueF8ShbQJHpynE7TdNGRG",
    "HGUuQneRyMcmypY3dX7XUi", "NYcTJoQKwAGgyi4FB5gAt8", "PCU3paJyftQe8M3s4T6ZVd",
    "VKDkZzDN4KTFxGbh2KrgSf", "VZPbBERyU2LCkuew7SrWaw", "XR7dA6TKQiFc4QHMYwLDqP",
    "XSdfYndeSP25Dm2T5e5Bd4", "ciMU7f8NdZMAwQJDmPrmcH", "CuqeFPuPUXRxjKnTomsz4x",
    "3asRExdxmWQtJw4sv49AGZ", "CijjLDFS7tQM9TcoWMr2Ai",
}


@pytest.fixture(scope="module")
def aokvqa(shared_data):
    return load_annotated(shared_data / "aokvqa_val_mmb.json")


@pytest.fixture(scope="module")
def cultural(shared_data):
    return load_annotated(shared_data / "culturalvqa_mmb.json")


def _kinds(result) -> Counter:
    return Counter(p.kind for p in result.problems)


def test_real_aokvqa_loads_all_with_quirks_as_notices(aokvqa):
    assert aokvqa.dataset == "aokvqa" and aokvqa.records == 1152 and len(aokvqa.samples) == 1152
    assert aokvqa.errors == []
    missing = [p for p in aokvqa.problems if p.kind == "missing_image_level"]
    assert {p.record_id for p in missing} == NO_IMAGE_LEVEL and len(missing) == 17
    assert all(p.severity == "notice" and p.field == "keys_filtered.Image_level" for p in missing)
    assert _kinds(aokvqa) == Counter(answer_no_comma=162, no_answer_step=45,
                                     missing_image_level=17, duplicate_id=8, quoted_answer=5)
    # 5 question ids occur 2-3 times with different chains: renamed, none lost
    ids = [s.id for s in aokvqa.samples]
    assert len(set(ids)) == 1152
    assert [i for i in ids if i.startswith("chXZTHvYp7pFsdQhLyAC9F")] == [
        "chXZTHvYp7pFsdQhLyAC9F", "chXZTHvYp7pFsdQhLyAC9F#2", "chXZTHvYp7pFsdQhLyAC9F#3"]


def test_real_aokvqa_field_mapping(aokvqa):
    first = aokvqa.samples[0]
    assert first.id == "2Aq5RiEn7eyfWjEbpuYT2o" and first.image_id == "377368"
    assert first.choices == ["one", "ten", "nine", "thirty"] and first.correct_choice_idx == 3
    assert first.answers == ["thirty"] and first.gold_answer == "thirty"
    assert first.direct_answers.count("thirty") == 8 and len(first.direct_answers) == 10
    assert first.reference.reasoning_level[-1] == "So, the answer is thirty"
    assert first.reference.answer == "thirty" and len(first.reference.image_level) == 2
    assert first.meta["split"] == "val" and len(first.meta["rationales"]) == 3
    by_id = {s.id: s for s in aokvqa.samples}
    assert by_id["2oPzCyj5FjrKtBLjGZH2rF"].reference.image_level == []
    raw = load_annotated(aokvqa.path, reference="keys").samples[0].reference
    assert len(raw.image_level) == 3 and len(raw.reasoning_level) == 4


def test_real_culturalvqa_gold_from_last_reference_step(cultural):
    assert cultural.dataset == "culturalvqa" and len(cultural.samples) == 800
    assert cultural.errors == []
    assert _kinds(cultural) == Counter(no_answer_step=76, no_gold=76, quoted_answer=13,
                                       answer_no_comma=5)
    first = cultural.samples[0]
    assert first.id == "2" and first.image_id == "2" and first.choices is None
    # the reference chain says 'warm'; the model's general_output said 'hot' (kept, not gold)
    assert first.answers == ["warm"] and first.gold_answer == "warm"
    assert first.meta["general_output_answer"] == "hot"
    assert first.meta["general_output"].startswith("Thought: The image shows")
    assert sum(s.gold_answer is None for s in cultural.samples) == 76


def test_answer_forms_on_real_variants(aokvqa, cultural):
    forms = Counter(answer_form(s.reference).form for s in aokvqa.samples)
    assert forms == Counter(comma=945, no_comma=162, missing=45)
    assert sum(answer_form(s.reference).quoted for s in cultural.samples) == 13
    by_id = {s.id: s for s in aokvqa.samples}
    american = by_id["2oPzCyj5FjrKtBLjGZH2rF"].reference   # "So the answer is American"
    assert answer_form(american).form == "no_comma" and american.answer == "American"
    quoted = [s.reference.answer for s in aokvqa.samples if answer_form(s.reference).quoted]
    assert sorted(quoted) == ["No", "Toy Story", "i do", "love us", "was"]
    assert cultural.samples[0].reference.answer == "warm"  # from "So, the answer is 'warm'."


@pytest.fixture()
def broken_file(shared_data, tmp_path) -> Path:
    records = json.loads((shared_data / "aokvqa_val_mmb.json").read_text())[:6]
    records[1]["choices"] = "one, two"
    del records[2]["question"]
    records[3]["keys_filtered"] = ["not", "a", "chain"]
    records[4]["correct_choice_idx"] = 9
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def test_broken_records_are_named_errors_and_rest_loads(broken_file):
    result = load_annotated(broken_file)
    assert [s.id for s in result.samples] == ["2Aq5RiEn7eyfWjEbpuYT2o", "2LCLpdpD3yy2dgH5tQbcFe"]
    errors = {p.index: p for p in result.errors}
    assert sorted(errors) == [1, 2, 3, 4]
    assert errors[1].field == "choices" and "expected a list of strings, got str" in errors[1].message
    assert errors[2].field == "question" and errors[2].kind == "missing_field"
    assert errors[3].field == "keys_filtered" and "expected an object" in errors[3].message
    assert errors[4].field == "correct_choice_idx" and "[0, 4)" in errors[4].message
    text = str(errors[1])
    assert "broken.json" in text and "record 1" in text and "(id '" in text and "'choices'" in text
    with pytest.raises(DataLoadError, match="4 error"):
        result.raise_for_errors()


def test_truncated_json_reports_position_and_keeps_earlier_records(shared_data, tmp_path):
    text = json.dumps(json.loads((shared_data / "culturalvqa_mmb.json").read_text())[:5], indent=1)
    path = tmp_path / "cut.json"
    path.write_text(text[: int(len(text) * 0.7)])
    result = load_annotated(path)
    [error] = result.errors
    assert error.kind == "invalid_json" and error.field == "<json>" and error.index == 3
    assert "invalid JSON at line" in error.message and "column" in error.message
    assert [s.id for s in result.samples] == ["2", "4", "9"]


def test_jsonl_bad_lines_are_problems_others_load(shared_data, tmp_path):
    records = json.loads((shared_data / "culturalvqa_mmb.json").read_text())[:4]
    lines = [json.dumps(r) for r in records]
    lines[1] = lines[1][:50]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    result = load_annotated(path)
    assert [s.id for s in result.samples] == ["2", "9"]
    assert [(p.index, p.kind) for p in result.errors] == [(1, "invalid_line"), (3, "torn_line")]
    assert "line 2" in result.errors[0].message


def test_dict_by_id_scienceqa_shape(tmp_path):
    chain = {"Image_level": ["The map shows Ohio."], "Reasoning_level": ["So the answer is Ohio."]}
    data = {
        "5": {"question": "Which state is shown?", "choices": ["Utah", "Ohio"], "answer": 1,
              "hint": "Look at the map.", "image": "image.png", "lecture": "L", "solution": "S",
              "split": "test", "keys_filtered": chain},
        "8": {"question": "Which is a solid?", "choices": ["milk", "rock", "air"], "answer": "B",
              "hint": "", "image": None, "lecture": "", "solution": ""},
    }
    path = tmp_path / "sqa.json"
    path.write_text(json.dumps(data))
    result = load_annotated(path)
    assert result.dataset == "scienceqa" and result.errors == []
    first, second = result.samples
    assert (first.id, first.correct_choice_idx, first.answers) == ("5", 1, ["Ohio"])
    assert first.meta == {"hint": "Look at the map.", "lecture": "L", "solution": "S",
                          "split": "test", "image_file": "image.png"}
    assert first.image_id == "5" and first.reference.answer == "Ohio"
    assert (second.answers, second.image_id, second.reference) == (["rock"], None, None)
    assert {p.kind for p in result.notices} == {"answer_no_comma", "no_image", "no_reference"}
    (tmp_path / "test" / "5").mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "test" / "5" / "image.png")
    with_images = load_annotated(path, images_dir=tmp_path)
    assert with_images.samples[0].image == str(tmp_path / "test" / "5" / "image.png")


def test_own_sample_jsonl_round_trip(aokvqa, tmp_path):
    samples = aokvqa.samples[:20]
    path = tmp_path / "samples.jsonl"
    write_jsonl_atomic(path, samples)
    again = load_annotated(path)
    assert again.dataset == "sample" and again.samples == samples and again.errors == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "dataset": "d", "question": ""}) + "\n")
    [error] = load_annotated(bad).errors
    assert error.field == "question" and "at least 1 character" in error.message


def test_unknown_format_raises(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([{"foo": 1, "bar": 2}]))
    with pytest.raises(DataLoadError, match=r"cannot tell the dataset.*\['bar', 'foo'\]"):
        load_annotated(path)


def _jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), colour).save(path, format="JPEG")


def test_images_coco_and_id_layouts(aokvqa, cultural, shared_data, tmp_path):
    coco = tmp_path / "coco"
    _jpeg(coco / "val2017" / "000000377368.jpg", (255, 0, 0))
    path = resolve_image(aokvqa.samples[0], coco)
    assert path == coco / "val2017" / "000000377368.jpg"
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (6, 4) and img.getpixel((2, 2))[0] > 200
    flat = tmp_path / "flat"
    _jpeg(flat / "000000377368.jpg", (0, 255, 0))
    assert resolve_image("377368", flat) == flat / "000000377368.jpg"
    _jpeg(flat / "2.jpg", (0, 0, 255))
    assert resolve_image(cultural.samples[0], flat) == flat / "2.jpg"


def test_missing_image_named_never_substituted(shared_data, tmp_path):
    coco = tmp_path / "coco"
    _jpeg(coco / "val2017" / "000000377368.jpg", (255, 0, 0))
    records = json.loads((shared_data / "aokvqa_val_mmb.json").read_text())[:3]
    path = tmp_path / "three.json"
    path.write_text(json.dumps(records))
    result = load_annotated(path, images_dir=coco)
    assert [s.image is not None for s in result.samples] == [True, False, False]
    missing = [p for p in result.problems if p.kind == "missing_image"]
    assert [(p.index, p.severity) for p in missing] == [(1, "notice"), (2, "notice")]
    second = records[1]
    assert second["question_id"] in missing[0].message
    assert f"val2017/{second['image_id']:012d}.jpg" in missing[0].message
    strict = load_annotated(path, images_dir=coco, require_images=True)
    assert len(strict.samples) == 1 and [p.severity for p in strict.errors] == ["error"] * 2
    with pytest.raises(MissingImageError, match=r"record '2Aq5RiEn7eyfWjEbpuYT2o'"):
        resolve_image(result.samples[0].model_copy(update={"image": None}), tmp_path / "empty")


def test_hf_dataset_round_trip(aokvqa, cultural, tmp_path):
    from mmboundary.data.hf import from_hf_dataset, to_hf_dataset

    _jpeg(tmp_path / "377368.jpg", (10, 20, 30))
    with_image = aokvqa.samples[0].model_copy(update={"image": str(tmp_path / "377368.jpg")})
    samples = [with_image, *aokvqa.samples[1:3], *cultural.samples[:3],
               Sample(id="t", dataset="x", question="q?", reference=None)]
    ds = to_hf_dataset(samples)
    assert len(ds) == 7 and "image" in ds.column_names
    assert ds[0]["image"].size == (6, 4) and ds[1]["image"] is None
    assert from_hf_dataset(ds) == samples
    plain = to_hf_dataset(cultural.samples[:4])
    assert "image" not in plain.column_names and from_hf_dataset(plain) == cultural.samples[:4]
    assert ReferenceChain(**{"image_level": plain[0]["reference_image_level"],
                             "reasoning_level": plain[0]["reference_reasoning_level"]}).answer \
        == "warm"


def test_cli_stats_and_convert_on_real_files(shared_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "stats", str(shared_data / "aokvqa_val_mmb.json")])
    assert res.exit_code == 0, res.output
    assert "1152" in res.output and "17 records without Image_level" in res.output
    assert "2oPzCyj5FjrKtBLjGZH2rF" in res.output
    res = runner.invoke(app, ["data", "stats", str(shared_data / "culturalvqa_mmb.json"),
                              "--json"])
    stats = json.loads(res.output)
    assert stats["loaded"] == 800 and stats["answer_forms"] == {
        "comma": 719, "no_comma": 5, "missing": 76, "quoted": 13}
    assert stats["steps"]["reasoning_level"]["min"] == 2
    assert stats["steps"]["image_level"]["total"] == 1167
    out = tmp_path / "c.jsonl"
    res = runner.invoke(app, ["data", "convert", str(shared_data / "culturalvqa_mmb.json"),
                              str(out)])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 800
    assert load_annotated(out).samples == load_annotated(
        shared_data / "culturalvqa_mmb.json").samples


def test_cli_convert_refuses_broken_file(broken_file, tmp_path):
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["data", "convert", str(broken_file), str(out)])
    assert res.exit_code == 1 and not out.exists() and "4 error(s)" in res.output
    res = CliRunner().invoke(app, ["data", "convert", str(broken_file), str(out),
                                   "--allow-errors"])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 2
