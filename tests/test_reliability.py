"""Issue #16: one bad record never stops a run or costs data; exit codes and errors tell the truth.

One test per case of the issue (broken images, an over-long question, a foreign output file, exit
codes, credentials in URLs, sentences instead of tracebacks, --images and orphan temporaries),
each on a 6-sample ShapesWorld split and the tiny llava model, plus two property tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import ascii_lowercase, ascii_uppercase, digits
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.data.io import ForeignFileError, JsonlWriter
from mmboundary.data.redact import redact_headers, redact_text, redact_url
from mmboundary.data.schema import Response
from mmboundary.shapesworld.scenes import read_split, write_split
from mmboundary.text.steps import split_steps

N = 6
SECRET = "S3cretPASSw0rd"


@pytest.fixture(scope="module")
def world_src(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("world") / "w", N, "test").parent


@pytest.fixture
def world(world_src, tmp_path) -> Path:
    """A private copy of the split folder (``test.json`` + ``images/``); returns the JSON."""
    shutil.copytree(world_src, tmp_path / "w")
    return tmp_path / "w" / "test.json"


def ids(data: Path) -> list[str]:
    return [s.id for s in read_split(data)]


def image_of(data: Path, k: int) -> Path:
    return data.parent / "images" / f"{ids(data)[k]}.png"


def responses_file(data: Path) -> Path:
    """The reference chains as responses (scored teacher-forced: deterministic and fast)."""
    path = data.parent / "responses.jsonl"
    path.write_text("".join(json.dumps({"sample_id": s.id, "text": " ".join(s.reference.steps)})
                            + "\n" for s in read_split(data)))
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def estimate(model: Path, data: Path, out: Path, *extra: str) -> object:
    return run("estimate", "--model", model, "--data", data, "--dataset", "shapes", "--out", out,
               "--responses", responses_file(data), "--estimators", "lnlp,mte", "--device",
               "cpu", "--no-progress", "--batch-size", "4", *extra)


def lines(path: Path) -> list[Response]:
    return [Response.model_validate_json(x) for x in path.read_text().splitlines()]


def assert_one_line_error(result: object, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (
        ValueError, OSError, RuntimeError)), result.exception
    for needle in needles:
        assert needle in result.output, result.output


# ------------------------------------------------------------------------------------ case 1
def test_1_broken_images_are_record_errors_in_estimate_and_build_sft(world, tiny_model_dir,
                                                                     tmp_path):
    names = ids(world)
    image_of(world, 1).write_text("this is text, renamed .png")
    image_of(world, 2).write_bytes(b"")
    out = tmp_path / "est.jsonl"
    result = estimate(tiny_model_dir("llava"), world, out)
    assert result.exit_code == 0, result.output
    for k in (1, 2):
        assert f"record {names[k]!r}: field 'image': bad_image" in result.output
    got = lines(out)
    assert [r.sample_id for r in got] == names  # the run went on: every record has its line
    assert [r.meta.get("error_reason") for r in got] == [None, "bad_image", "bad_image", None,
                                                         None, None]
    assert all(s.level is not None for r in got if "error" not in r.meta for s in r.steps)
    # build-sft on hand-made estimates (every step leveled); one image broken since
    estimates = tmp_path / "estimates.jsonl"
    rows = []
    for s in read_split(world):
        text = " ".join(s.reference.steps)
        steps = [st_.model_copy(update={"level": 3}) for st_ in split_steps(text)]
        rows.append(Response(sample_id=s.id, text=text, steps=steps).model_dump_json())
    estimates.write_text("\n".join(rows) + "\n")
    sft = run("build-sft", "--estimates", estimates, "--data", world, "--out", tmp_path / "sft")
    assert sft.exit_code == 0, sft.output
    assert f"record {names[1]!r}: field 'image': bad_image" in sft.output
    assert len((tmp_path / "sft" / "records.jsonl").read_text().splitlines()) == N - 2


# ------------------------------------------------------------------------------------ case 2
def test_2_question_longer_than_the_context_is_a_record_error(world, tiny_model_dir, tmp_path):
    records = json.loads(world.read_text())
    records[1]["question"] = "How many squares are there? " * 36_000  # ~1 MB
    records[3]["question"] = "How many squares are there? " * 600  # ~5400 tokens > 4096
    world.write_text(json.dumps(records))
    out = tmp_path / "est.jsonl"
    started = time.monotonic()
    result = estimate(tiny_model_dir("llava"), world, out)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    names = ids(world)
    assert f"record {names[1]!r}: field 'question': too_long: the question is at least" \
        in result.output and "characters)" in result.output
    assert f"record {names[3]!r}: field 'question': too_long: the input is" in result.output
    assert "context of 4096 tokens" in result.output
    got = lines(out)
    assert [r.meta.get("error_reason") for r in got] == [None, "too_long", None, "too_long",
                                                         None, None]


# ------------------------------------------------------------------------------------ case 3
def test_3_a_foreign_output_file_is_refused_and_never_changed(world, tiny_model_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nprecious data without newline")
    result = estimate(tiny_model_dir("llava"), world, notes)
    assert_one_line_error(result, 2, "notes.txt: not an output of ours", "unchanged")
    assert notes.read_bytes() == b"line one\nprecious data without newline"
    foreign_json = tmp_path / "mine.jsonl"  # JSON lines, but not records of ours
    foreign_json.write_bytes(b'{"name": "a"}\n{"name": "b"')
    for args in (["data", "convert", world, foreign_json],
                 ["estimate", "merge", foreign_json, notes]):
        assert_one_line_error(run(*args), 2, "not an output of ours")
    assert foreign_json.read_bytes() == b'{"name": "a"}\n{"name": "b"'
    with pytest.raises(ForeignFileError):
        JsonlWriter(notes, resume=False)
    assert notes.read_bytes() == b"line one\nprecious data without newline"
    # an output of ours, torn by a kill, is still resumed (its torn line cut, nothing else)
    ours = tmp_path / "ours.jsonl"
    ours.write_bytes(b'{"sample_id": "a"}\n{"sample_id": "b", "te')
    with JsonlWriter(ours, id_key="sample_id") as writer:
        assert writer.done_ids == {"a"}
    assert ours.read_bytes() == b'{"sample_id": "a"}\n'


_LINE = st.one_of(
    st.text(max_size=20),
    st.dictionaries(st.sampled_from(["id", "name", "x"]), st.integers(), max_size=3).map(json.dumps),
    st.builds(lambda n: json.dumps({"id": n})[: max(1, n % 9)], st.integers(0, 99)),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_LINE, max_size=5), st.booleans(), st.booleans())
def test_3_property_jsonl_writer_never_modifies_a_foreign_file(items, final_newline, resume):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.jsonl"
        data = ("\n".join(items) + ("\n" if final_newline and items else "")).encode()
        path.write_bytes(data)
        try:
            JsonlWriter(path, resume=resume).close()
        except ForeignFileError:
            assert path.read_bytes() == data
            return
        complete = data.split(b"\n")[:-1]
        for raw in complete:  # accepted: every complete line is a record of ours ...
            if raw.strip():
                record = json.loads(raw)
                assert isinstance(record, dict) and "id" in record
        assert not data or any(raw.strip() for raw in complete) or b'"id":' in data
        if resume:  # ... and resuming changed nothing but a torn last line
            kept = b"".join(raw + b"\n" for raw in complete)
            assert path.read_bytes().startswith(kept)


# ------------------------------------------------------------------------------------ case 4
def closed_port_url(userinfo: str = "") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{userinfo}127.0.0.1:{port}/v1"  # nothing listens: connection refused


def annotate(data: Path, out: Path, base_url: str, abort_after: int) -> object:
    return run("annotate", "--data", data, "--out", out, "--base-url", base_url, "--no-cache",
               "--max-retries", "0", "--concurrency", "1", "--abort-after", abort_after)


def test_4_exit_codes_say_failure_when_nothing_succeeded(world, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{oops\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for predictions in (bad, empty):
        result = run("evaluate", "--data", world, "--dataset", "shapes", "--predictions",
                     predictions, "--out", tmp_path / "m.json")
        assert_one_line_error(result, 2, "no response could be read")
    assert not (tmp_path / "m.json").exists()
    assert_one_line_error(run("data", "stats", empty), 2, "the file is empty")
    assert_one_line_error(run("data", "stats", world, "--dataset", "scienceqa"), 1,
                          f"none of its {N} record(s) loaded as scienceqa")
    out = tmp_path / "ann.jsonl"
    result = annotate(world, out, closed_port_url(), abort_after=N + 1)
    assert_one_line_error(result, 1, f"nothing succeeded: all {N} attempted record(s) failed")
    assert len(out.read_text().splitlines()) == N  # each failure is a line (retried next run)
    result = annotate(world, tmp_path / "ann2.jsonl", closed_port_url(), abort_after=2)
    assert result.exit_code == 2 and "stopped after 2 consecutive" in result.output
    for k in range(N):  # every image broken: estimate and generate fail as a whole
        image_of(world, k).write_bytes(b"")
    out = tmp_path / "est.jsonl"
    assert_one_line_error(estimate(tiny_model_dir("llava"), world, out), 1,
                          f"nothing succeeded: all {N} record(s) failed (bad_image: {N})")
    assert len(out.read_text().splitlines()) == N and not list(tmp_path.glob("*calibrator*"))
    result = run("generate", "--model", tiny_model_dir("llava"), "--data", world, "--dataset",
                 "shapes", "--out", tmp_path / "gen.jsonl", "--max-new-tokens", "4")
    assert_one_line_error(result, 1, f"nothing succeeded: all {N} line(s) are errors")


# ------------------------------------------------------------------------------------ case 5
def test_5_a_password_in_the_base_url_is_never_printed_or_written(world, tmp_path, caplog):
    out = tmp_path / "ann.jsonl"
    url = closed_port_url(f"user:{SECRET}@")
    with caplog.at_level("DEBUG"):
        result = annotate(world, out, url, abort_after=2)
        dry = run("annotate", "--data", world, "--out", out, "--base-url", url, "--dry-run")
    assert result.exit_code == 2 and "user:***@127.0.0.1" in result.output
    assert dry.exit_code == 0 and "user:***@127.0.0.1" in dry.output
    written = out.read_text() + Path(f"{out}.summary.json").read_text()
    assert "request failed" in written
    for text in (result.output, dry.output, written, caplog.text):
        assert SECRET not in text
    # the HTTP client's own log line holds the full URL: it is masked too
    from fixtures_annotate.fake_server import FakeChatServer, Reply

    from mmboundary.annotate.client import ChatError, ChatRequest, OpenAIChatClient

    with FakeChatServer(lambda body, n: Reply(401, body={"error": {"message": "no"}})) as server:
        client = OpenAIChatClient("m", base_url=server.url.replace("//", f"//u:{SECRET}@"),
                                  api_key="sk-proj-key0123456789", max_retries=0)
        with caplog.at_level("INFO"), pytest.raises(ChatError) as err:
            client.complete(ChatRequest([{"role": "user", "content": "hi"}], None))
    assert "HTTP Request" in caplog.text and "u:***@" in caplog.text
    for text in (caplog.text, str(err.value), repr(client)):
        assert SECRET not in text and "key0123456789" not in text
    assert redact_headers({"Authorization": "Bearer sk-x", "Accept": "a"}) == {
        "Authorization": "***", "Accept": "a"}


_PASSWORD = st.text(alphabet=ascii_uppercase + digits + ascii_lowercase + "!$&'()*+,;=~-._%:@",
                    min_size=6, max_size=24).filter(
    lambda p: any(c.isupper() for c in p) and any(c.isdigit() for c in p))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=ascii_lowercase, min_size=1, max_size=10), _PASSWORD,
       st.text(alphabet=ascii_lowercase, min_size=1, max_size=10), st.booleans())
def test_5_property_redaction_never_leaks_the_password(user, password, host, encoded):
    shown = quote(password, safe="") if encoded else password.replace("'", "")
    url = f"https://{user}:{shown}@{host}.example:8000/v1?api_key={quote(password, safe='')}"
    message = f"cannot reach {url}/chat/completions: [Errno 111] Connection refused"
    for text in (redact_url(url), redact_text(message), redact_text(f"key={password}",
                                                                     [password])):
        assert shown not in text and quote(password, safe="") not in text
    assert redact_url(url).startswith(f"https://{user}:***@{host}.example:8000/v1")


# ------------------------------------------------------------------------------------ case 6
def test_6_errors_are_sentences_naming_the_record_not_tracebacks(world, tiny_model_dir,
                                                                 tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    result = run("estimate", "--model", tiny_model_dir("llava"), "--data", empty, "--out",
                 tmp_path / "o.jsonl", "--estimators", "lnlp,mte", "--device", "cpu")
    assert_one_line_error(result, 2, "empty.json: the file is empty")
    not_json = tmp_path / "notes.json"
    not_json.write_text("line one\nline two\n")
    result = run("data", "stats", not_json)
    assert_one_line_error(result, 2, "not a JSON or JSON Lines file")
    assert "cannot tell the dataset" not in result.output
    names = ids(world)
    nan_step = split_steps("There is a square. So, the answer is 1.")[0]
    nan_step.expressed_confidence = float("nan")
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("\n".join([
        json.dumps(Response(sample_id=names[0], text=nan_step.text,
                            steps=[nan_step]).model_dump()),  # NaN, as json.dumps writes it
        json.dumps({"sample_id": names[1], "text": "x", "steps": None}),
        json.dumps({"sample_id": names[2], "text": "", "meta": {"error": "image missing"}}),
    ]) + "\n")
    result = run("evaluate", "--data", world, "--dataset", "shapes", "--predictions",
                 predictions, "--out", tmp_path / "m.json")
    assert_one_line_error(
        result, 1, f"record {names[0]!r}: field 'steps[0].expressed_confidence': bad_number",
        f"pred.jsonl:2: record {names[1]!r}: field 'steps': invalid_record",
        "no usable response")


# ------------------------------------------------------------------------------------ case 7
def test_7_missing_images_folder_is_an_error_everywhere(world, tiny_model_dir, tmp_path):
    estimates = tmp_path / "e.jsonl"
    estimates.write_text(json.dumps({"sample_id": "a", "text": "x"}) + "\n")
    for result in (estimate(tiny_model_dir("llava"), world, tmp_path / "o.jsonl", "--images",
                            tmp_path / "nonexistent"),
                   run("build-sft", "--estimates", estimates, "--data", world, "--out",
                       tmp_path / "sft", "--images", tmp_path / "nonexistent")):
        assert_one_line_error(result, 2, "--images", "nonexistent: does not exist")
    assert not (tmp_path / "o.jsonl").exists()


_KILLED_WRITER = """
import os, sys, time
import mmboundary.data.io as io
def stall(fd):
    open(sys.argv[2], "w").close()
    time.sleep(120)
os.fsync = stall
io.write_jsonl_atomic(sys.argv[1], [{"sample_id": "a", "text": "new"}])
"""


def test_7_temporary_file_of_a_killed_final_write_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"sample_id": "a", "text": "old"}\n')
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    orphans = list(tmp_path.glob(".out.jsonl.*.tmp"))
    assert ready.exists() and len(orphans) == 1  # what kill -9 during the final write leaves
    with JsonlWriter(out, id_key="sample_id") as writer:  # the next run on this output
        assert writer.done_ids == {"a"}
    assert not list(tmp_path.glob(".out.jsonl.*.tmp"))
    assert out.read_text() == '{"sample_id": "a", "text": "old"}\n'  # old file whole
