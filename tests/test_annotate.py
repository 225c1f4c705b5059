"""Reference-chain annotation: parsing, the OpenAI-compatible client against a local fake server
(retries, timeouts, 401/404, cache, resumption, flags, key hygiene), the CLI, and the local HF
backend on a tiny random model."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_annotate.fake_server import FakeChatServer, Reply
from PIL import Image

from mmboundary.annotate.annotate import AnnotationAborted, annotate_items, summary_path
from mmboundary.annotate.cache import CachedBackend, ReplyCache
from mmboundary.annotate.client import (
    ChatError,
    ChatRequest,
    ImagePayload,
    OpenAIChatClient,
    backoff_delay,
    parse_retry_after,
)
from mmboundary.annotate.prompts import (
    ChainParseError,
    answer_agrees,
    answer_key,
    parse_chain_reply,
)
from mmboundary.annotate.records import AnnotateConfig, AnnotationItem, annotation_of
from mmboundary.data.loaders import load_annotated
from mmboundary.data.schema import Sample

FIXTURES = Path(__file__).parent / "fixtures_annotate"
SECRET = "sk-test-Zq9SECRETkey1234567890"


def user_text(body: dict[str, Any]) -> str:
    return next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")


# Recorded replies per question (generate pass, filter pass) and the gold answers.
RECORDED = json.loads((FIXTURES / "replies.json").read_text())
SCRIPT = {q: (r["generate"], r["filter"]) for q, r in RECORDED["replies"].items()}
GOLD = RECORDED["gold"]


def scripted(body: dict[str, Any], n: int) -> Reply:
    text = user_text(body)
    question = next(q for q in SCRIPT if q in text)
    generate, filtered = SCRIPT[question]
    return Reply(content=filtered if "Draft chain:" in text else generate)


def make_items(questions: list[str] | None = None, raw: bool = False) -> list[AnnotationItem]:
    """Samples with PIL images; ``raw``: also an A-OKVQA-style input record for each."""
    items = []
    for i, question in enumerate(questions or list(SCRIPT)):
        image = Image.new("RGB", (24, 24), (40 * i, 100, 200 - 30 * i))
        gold = GOLD[question]
        choices = [gold, "7", "purple", "no"]
        sample = Sample(id=f"s{i}", dataset="aokvqa" if raw else "toy", question=question,
                        choices=choices if raw else None, correct_choice_idx=0 if raw else None,
                        answers=[gold])
        record = None
        if raw:
            record = {"split": "val", "image_id": 1000 + i, "question_id": f"s{i}",
                      "question": question, "choices": choices, "correct_choice_idx": 0,
                      "direct_answers": [gold] * 10}
        items.append(AnnotationItem(sample=sample, record=record, image=image))
    return items


def client(server: FakeChatServer, **kwargs: Any) -> OpenAIChatClient:
    options = {"timeout_s": 5.0, "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
               "seed": 0}
    return OpenAIChatClient("gpt-4o", base_url=server.url, api_key=SECRET, **(options | kwargs))


def read_out(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rid(record: dict[str, Any]) -> str:
    return record.get("sample_id", record.get("id"))


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {rid(r): r for r in read_out(path)}


# ---------------------------------------------------------------- pure parts
def test_parse_chain_reply_is_tolerant() -> None:
    fenced = 'Sure.\n```json\n{"image_level": "A cake.", "Reasoning-Level": ["So, the answer is 30."],}\n```'
    parsed = parse_chain_reply(fenced)
    assert parsed.image_level == ["A cake."] and parsed.answer == "30"
    trailing = '{"Image_level": ["x"], "Reasoning_level": ["y", "So the answer is \'warm\'."]} Done.'
    assert parse_chain_reply(trailing).answer == "warm"
    assert parse_chain_reply('{"Reasoning_level": ["So, the answer is no."]}').image_level == []
    for bad in ["no json here", '{"Image_level": ["a"]}', '{"Reasoning_level": [1, 2]}']:
        with pytest.raises(ChainParseError):
            parse_chain_reply(bad)


def test_answer_normalisation() -> None:
    assert answer_key("The 'Thirty'.") == "30" == answer_key("30th")
    assert answer_key("The Two Dogs!") == "2 dogs"  # text.matching.normalize_vqa_answer
    assert answer_agrees("twenty-first", ["21st"]) is False  # no compound number words
    assert answer_agrees("the twentieth", ["20th"]) is False and answer_agrees("twenty", ["20th"])
    assert answer_agrees("two", ["2"]) and answer_agrees("A red car", ["red car"])
    assert not answer_agrees("blue", ["green", "teal"])


def test_backoff_and_retry_after() -> None:
    rng = random.Random(1)
    for attempt, full in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 30.0)]:
        for _ in range(20):
            assert full / 2 <= backoff_delay(attempt, 1.0, 30.0, rng) <= full
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_image_payload_and_cache_key(tmp_path: Path) -> None:
    image = Image.new("RGB", (10, 10), (255, 0, 0))
    payload = ImagePayload.from_source(image)
    assert payload.mime == "image/png" and payload.data_url.startswith("data:image/png;base64,")
    assert ImagePayload.from_source(image).sha256 == payload.sha256
    path = tmp_path / "a.jpg"
    image.save(path)
    assert ImagePayload.from_source(path).data == path.read_bytes()
    assert max(ImagePayload.from_source(Image.new("RGB", (400, 100)), 50).to_pil().size) == 50


# ---------------------------------------------------------------- the run against the fake server
def test_recorded_replies_flags_usage_and_key_hygiene(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out.jsonl"
    config = AnnotateConfig(concurrency=2, price_input_per_m=2.5, price_output_per_m=10.0)
    with FakeChatServer(scripted) as server:
        summary = annotate_items(make_items(raw=True), client(server), out, config=config)
    records = by_id(out)
    assert len(records) == 5 and len(server.requests) == 9  # the unparseable one stops after pass 1
    assert set(server.auth_headers) == {f"Bearer {SECRET}"}
    image_part = server.requests[0]["messages"][1]["content"][0]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    ok = records["s0"]
    assert ok["annotation"]["status"] == "ok" and not ok["needs_review"]
    assert ok["keys"]["Image_level"][1] == "The circles are on a grey background."
    assert ok["keys_filtered"] == {"Image_level": ["The image shows two red circles."],
                                   "Reasoning_level": ["Two circles are visible.",
                                                       "So, the answer is two."]}
    assert ok["question"] == "How many circles are there?" and ok["image_id"] == 1000
    assert records["s1"]["review_reasons"][0].startswith("no answer step")
    assert records["s2"]["review_reasons"][0].startswith("unparseable reply (generate pass)")
    assert records["s2"]["keys"] == {"Image_level": [], "Reasoning_level": []}
    assert records["s3"]["review_reasons"] == [
        "answer disagreement: the chain says 'blue', gold is 'green'"]
    assert [r.split(":")[0] for r in records["s4"]["review_reasons"]] == ["too few steps"] * 2
    assert summary.ok == 1 and summary.flagged == 4 and summary.failed == 0
    assert summary.reasons == {"no answer step": 1, "unparseable reply": 1,
                               "answer disagreement": 1, "too few steps": 2}
    assert (summary.prompt_tokens, summary.completion_tokens) == (9 * 812, 9 * 96)
    assert summary.cost_usd == pytest.approx((9 * 812 * 2.5 + 9 * 96 * 10.0) / 1e6)
    for text in (out.read_text(), summary_path(out).read_text(), caplog.text):
        assert SECRET not in text and "Zq9SECRET" not in text
    loaded = load_annotated(out)  # the loaders read the output as A-OKVQA
    assert loaded.dataset == "aokvqa" and not loaded.errors and len(loaded.samples) == 5
    sample = next(s for s in loaded.samples if s.id == "s0")
    assert sample.reference.reasoning_level[-1] == "So, the answer is two."
    assert sample.gold_answer == "2"


def test_sample_form_output_is_a_valid_sample(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with FakeChatServer(scripted) as server:
        annotate_items(make_items(), client(server), out)
    records = by_id(out)
    assert set(records["s0"]) == set(Sample.model_fields)
    meta = records["s0"]["meta"]
    assert meta["needs_review"] is False and meta["annotation"]["status"] == "ok"
    assert meta["keys"]["Image_level"][1] == "The circles are on a grey background."
    assert records["s2"]["reference"] is None and records["s2"]["meta"]["needs_review"]
    loaded = load_annotated(out)
    assert loaded.dataset == "sample" and not loaded.errors and len(loaded.samples) == 5
    sample = next(s for s in loaded.samples if s.id == "s0")
    assert sample.reference.image_level == ["The image shows two red circles."]
    assert sample.reference.answer == "two"


def test_429_then_success_honours_retry_after(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], n: int) -> Reply:
        if n == 1:
            return Reply(429, body={"error": {"message": "Rate limit reached"}},
                         headers={"Retry-After": "2"})
        return scripted(body, n)

    sleeps: list[float] = []
    with FakeChatServer(responder) as server:
        chat = client(server, sleep=sleeps.append)
        summary = annotate_items(make_items()[:1], chat, tmp_path / "o.jsonl",
                                 config=AnnotateConfig(concurrency=1))
    assert sleeps == [2.0] and chat.attempts == 3 and chat.retries == 1
    assert summary.ok == 1 and summary.requests_sent == 3 and summary.retries == 1


def test_5xx_backoff_and_giving_up(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with FakeChatServer(lambda body, n: Reply(503, body={"error": "overloaded"})) as server:
        chat = client(server, sleep=sleeps.append, max_retries=2)
        with pytest.raises(ChatError, match="HTTP 503.*gave up after 3 attempts") as err:
            chat.complete(ChatRequest([{"role": "user", "content": "hi"}], None))
    assert err.value.kind == "unavailable" and len(server.requests) == 3
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02  # base 0.01 * 2**k, jittered


def test_timeout_is_retried(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], n: int) -> Reply:
        return Reply(content="late", sleep_s=0.8) if n == 1 else Reply(content="on time")

    with FakeChatServer(responder) as server:
        chat = client(server, timeout_s=0.25)
        started = time.monotonic()
        reply = chat.complete(ChatRequest([{"role": "user", "content": "hi"}], None))
    assert reply.text == "on time" and chat.retries == 1
    assert time.monotonic() - started < 3


def test_malformed_http_body_fails_the_record(tmp_path: Path) -> None:
    with FakeChatServer(lambda body, n: Reply(200, body=b"{not json")) as server:
        summary = annotate_items(make_items()[:1], client(server), tmp_path / "o.jsonl")
    record = read_out(tmp_path / "o.jsonl")[0]
    assert summary.failed == 1 and annotation_of(record)["error_kind"] == "bad_reply"
    assert "not a chat completion" in record["meta"]["review_reasons"][0]


def test_401_aborts_without_leaking_the_key_then_rerun_retries(tmp_path: Path, caplog) -> None:
    out = tmp_path / "out.jsonl"
    refusal = {"error": {"message": f"Incorrect API key provided: {SECRET}.", "code": "invalid_api_key"}}
    items = make_items() + make_items()[:1]
    items[-1].sample = items[-1].sample.model_copy(update={"id": "s5"})
    with FakeChatServer(lambda body, n: Reply(401, body=refusal)) as server:
        with pytest.raises(AnnotationAborted, match="3 consecutive") as aborted:
            annotate_items(items, client(server), out, config=AnnotateConfig(concurrency=1))
    assert len(server.requests) == 3 and aborted.value.summary.not_attempted == 3
    records = read_out(out)
    assert [annotation_of(r)["status"] for r in records] == ["failed"] * 3
    error = annotation_of(records[0])["error"]
    assert "HTTP 401" in error and "API key" in error and "***" in error
    for text in (out.read_text(), caplog.text, str(aborted.value)):
        assert SECRET not in text and "Zq9SECRET" not in text
    with FakeChatServer(scripted) as server:  # a good key: failed records retried, rest done
        summary = annotate_items(items, client(server), out)
    records = read_out(out)
    assert sorted(rid(r) for r in records) == ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert sorted(rid(r) for r in records[:3]) == ["s0", "s1", "s2"]  # replaced in place
    assert summary.skipped_done == 0 and summary.failed == 0


def test_404_fails_one_record_and_the_run_goes_on(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], n: int) -> Reply:
        if "circles" in user_text(body):
            return Reply(404, body={"error": {"message": "The model `gpt-4o` does not exist"}})
        return scripted(body, n)

    with FakeChatServer(responder) as server:
        summary = annotate_items(make_items(), client(server), tmp_path / "o.jsonl")
    error = annotation_of(by_id(tmp_path / "o.jsonl")["s0"])["error"]
    assert summary.failed == 1 and summary.written == 5
    assert "does not exist" in error and "model name 'gpt-4o'" in error


def test_cache_makes_a_rerun_free_and_resume_skips_done(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "cache")
    with FakeChatServer(scripted) as server:
        annotate_items(make_items()[:2], CachedBackend(client(server), cache), tmp_path / "a.jsonl")
        assert len(server.requests) == 4
        # resume: the two done ids are skipped, only the rest is asked for
        summary = annotate_items(make_items(), CachedBackend(client(server), cache),
                                 tmp_path / "a.jsonl")
        assert summary.skipped_done == 2 and summary.cache_hits == 0 and len(server.requests) == 9
        assert sorted(by_id(tmp_path / "a.jsonl")) == [f"s{i}" for i in range(5)]
        # a fresh output file: every reply comes from the cache, zero requests
        backend = CachedBackend(client(server), cache)
        summary = annotate_items(make_items(), backend, tmp_path / "b.jsonl")
        assert len(server.requests) == 9 and summary.cache_hits == 9 and summary.prompt_tokens == 0
        assert summary.cached_prompt_tokens == 9 * 812 and summary.cost_usd is None
        # a different parameter is a different request
        annotate_items(make_items()[:1], CachedBackend(client(server), cache), tmp_path / "c.jsonl",
                       config=AnnotateConfig(temperature=0.7))
        assert len(server.requests) == 11
    chains = [{rid(r): r["reference"] for r in read_out(tmp_path / name)}
              for name in ("a.jsonl", "b.jsonl")]
    assert chains[0] == chains[1] and len(chains[0]) == 5


# ---------------------------------------------------------------- the CLI, and the local HF backend
def write_sample_file(tmp_path: Path, n: int = 3) -> Path:
    """Our Sample JSONL with PNG images beside it (relative paths, resolved by the loader)."""
    lines = []
    for item in make_items()[:n]:
        name = f"{item.sample.id}.png"
        item.image.save(tmp_path / name)
        lines.append(item.sample.model_copy(update={"image": name}).model_dump_json())
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(args: list[str], env: dict[str, str]) -> Any:
    from typer.testing import CliRunner

    from mmboundary.cli import app

    return CliRunner().invoke(app, ["annotate", *args], env=env)


def test_cli_dry_run_sends_nothing_then_runs_with_cache(tmp_path: Path) -> None:
    data = write_sample_file(tmp_path)
    env = {"MY_KEY": SECRET}
    with FakeChatServer(scripted) as server:
        common = ["--data", str(data), "--base-url", server.url, "--api-key-env", "MY_KEY",
                  "--model", "gpt-4o", "--cache-dir", str(tmp_path / "cache")]
        dry = run_cli([*common, "--out", str(tmp_path / "dry.jsonl"), "--dry-run"], env)
        assert dry.exit_code == 0, dry.output
        assert "<image elided: image/png" in dry.output and "Question: How many circles" in dry.output
        assert "base64" not in dry.output and not server.requests
        assert not (tmp_path / "dry.jsonl").exists()
        first = run_cli([*common, "--out", str(tmp_path / "o.jsonl"), "--concurrency", "2",
                         "--price-input", "2.5", "--price-output", "10"], env)
        assert first.exit_code == 0, first.output
        assert len(server.requests) == 5  # s2's reply is unparseable: no filter pass
        again = run_cli([*common, "--out", str(tmp_path / "o2.jsonl")], env)
        assert again.exit_code == 0 and len(server.requests) == 5  # all from the cache
    assert sorted(by_id(tmp_path / "o2.jsonl")) == ["s0", "s1", "s2"]
    summary = json.loads(summary_path(tmp_path / "o.jsonl").read_text())
    assert summary["cost_usd"] == pytest.approx((5 * 812 * 2.5 + 5 * 96 * 10) / 1e6)
    for text in (first.output, again.output, (tmp_path / "o.jsonl").read_text()):
        assert SECRET not in text


def test_cli_bad_key_exits_with_a_clear_message(tmp_path: Path) -> None:
    data = write_sample_file(tmp_path, n=3)
    refusal = {"error": {"message": "Incorrect API key provided: sk-wron*********1234."}}
    with FakeChatServer(lambda body, n: Reply(401, body=refusal)) as server:
        result = run_cli(["--data", str(data), "--out", str(tmp_path / "o.jsonl"), "--base-url",
                          server.url, "--api-key-env", "MY_KEY", "--no-cache",
                          "--abort-after", "2", "--concurrency", "1"], {"MY_KEY": "sk-wrongkey1234"})
    assert result.exit_code == 2
    assert "stopped after 2 consecutive" in result.output and "HTTP 401" in result.output
    assert "sk-wron" not in result.output and "sk-wrongkey1234" not in result.output


def test_hf_backend_tiny_model_flags_unparseable_replies(tmp_path: Path, tiny_model_dir) -> None:
    import torch

    torch.set_num_threads(1)
    data = write_sample_file(tmp_path, n=2)
    out = tmp_path / "hf.jsonl"
    result = run_cli(["--data", str(data), "--out", str(out), "--backend", "hf", "--model",
                      str(tiny_model_dir("llava")), "--device", "cpu", "--max-tokens", "16",
                      "--cache-dir", str(tmp_path / "cache")], {})
    assert result.exit_code == 0, result.output
    records = by_id(out)
    assert sorted(records) == ["s0", "s1"]
    for record in records.values():
        annotation = record["meta"]["annotation"]
        assert annotation["backend"] == "hf" and annotation["status"] == "flagged"
        reasons = [r.split(":")[0] for r in record["meta"]["review_reasons"]]
        assert reasons == ["reply truncated", "unparseable reply (generate pass)"]
        assert isinstance(annotation["replies"]["generate"], str) and record["reference"] is None
    summary = json.loads(summary_path(out).read_text())
    assert summary["completion_tokens"] > 0 and summary["flagged"] == 2
    loaded = load_annotated(out)
    assert loaded.dataset == "sample" and not loaded.errors and len(loaded.samples) == 2


def test_authors_format_round_trip(tmp_path: Path, shared_data: Path) -> None:
    """Two of the authors' A-OKVQA records (chains stripped) with stand-in COCO-layout images:
    the output echoes each record and loads back as A-OKVQA with the new chains."""
    from mmboundary.annotate.inputs import load_items

    raw = json.loads((shared_data / "aokvqa_val_mmb.json").read_text())[:2]
    (tmp_path / "val2017").mkdir()
    for record in raw:
        del record["keys"], record["keys_filtered"]
        Image.new("RGB", (16, 16)).save(tmp_path / "val2017" / f"{record['image_id']:012d}.jpg")
    data = tmp_path / "in.json"
    data.write_text(json.dumps(raw))

    def answer_gold(body: dict[str, Any], n: int) -> Reply:
        gold = user_text(body).split("Correct answer: ")[1].split("\n")[0]
        return Reply(content=json.dumps({"Image_level": ["A cake is on the table."],
                                         "Reasoning_level": ["It shows a number.",
                                                             f"So, the answer is {gold}."]}))

    items, _ = load_items(data, images_dir=tmp_path)
    assert [item.record["question_id"] for item in items] == [r["question_id"] for r in raw]
    with FakeChatServer(answer_gold) as server:
        summary = annotate_items(items, client(server), tmp_path / "out.jsonl")
    assert summary.ok == 2 and len(server.requests) == 4
    out = read_out(tmp_path / "out.jsonl")
    assert {r["rationales"][0] for r in out} == {r["rationales"][0] for r in raw}
    loaded = load_annotated(tmp_path / "out.jsonl")
    assert loaded.dataset == "aokvqa" and not loaded.errors
    assert {s.id: s.reference.answer for s in loaded.samples} == {
        r["question_id"]: r["choices"][r["correct_choice_idx"]] for r in raw}


def test_shapesworld_annotated_with_local_tiny_backend_reads_back(tmp_path: Path,
                                                                  tiny_model_dir) -> None:
    """Issue 8: ShapesWorld samples through the local HF backend -> a file the loaders and
    `mmboundary data stats` read (a random tiny model's replies come out flagged)."""
    import torch
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.shapesworld.scenes import write_split

    torch.set_num_threads(1)
    split = write_split(tmp_path / "world", 2, "test", seed=0)
    out = tmp_path / "shapes-annotated.jsonl"
    result = run_cli(["--data", str(split), "--out", str(out), "--backend", "hf", "--model",
                      str(tiny_model_dir("llava")), "--device", "cpu", "--max-tokens", "8",
                      "--cache-dir", str(tmp_path / "cache")], {})
    assert result.exit_code == 0, result.output
    loaded = load_annotated(out)
    assert not loaded.errors and len(loaded.samples) == 2
    assert all(s.meta["needs_review"] for s in loaded.samples)
    stats = CliRunner().invoke(app, ["data", "stats", str(out)])
    assert stats.exit_code == 0, stats.output
    assert "2" in stats.output
