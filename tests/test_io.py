"""Crash-safe JSONL/JSON IO: torn lines, resumption after kill -9, atomic writes, shards, merge."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.data.io import (
    JsonlDecodeError,
    JsonlWriter,
    merge_jsonl,
    read_jsonl,
    read_responses,
    shard,
    write_json_atomic,
    write_jsonl_atomic,
)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_read_jsonl_skips_torn_last_line_and_reports_it(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c", "x": [1, 2')
    with caplog.at_level(logging.WARNING):
        records = list(read_jsonl(path))
    assert [r["id"] for r in records] == ["a", "b"]
    assert "a.jsonl:4: torn last line" in caplog.text


def test_read_jsonl_bad_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\n{"id": oops}\n[1, 2]\n{"id": "d"}\n')
    with pytest.raises(JsonlDecodeError, match=r"a\.jsonl:2: invalid line"):
        list(read_jsonl(path))
    issues = []
    records = list(read_jsonl(path, on_bad_line=issues.append))
    assert [r["id"] for r in records] == ["a", "d"]
    assert [(i.line, i.torn) for i in issues] == [(2, False), (3, False)]
    assert "expected a JSON object, got list" in issues[1].message


def test_read_responses_names_file_and_line(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    good = '{"sample_id": "a", "text": "x"}'
    path.write_text(f'{good}\n\n{{"sample_id": "b", "text": "y", "meta": {{"error": "e"}}}}\n'
                    '{"sample_id": "c", "te')
    with caplog.at_level(logging.WARNING):
        responses = read_responses(path)
    assert [(r.sample_id, r.text, r.meta) for r in responses] == [("a", "x", {}),
                                                                  ("b", "y", {"error": "e"})]
    assert "r.jsonl:4: torn last line" in caplog.text
    path.write_text(f'{good}\n{{"text": "no id"}}\n{good}\n')
    with pytest.raises(ValueError, match=r"(?s)r\.jsonl:2: line is not a Response.*sample_id"):
        read_responses(path)
    path.write_text(f'{good}\n{{oops\n{good}\n')
    with pytest.raises(JsonlDecodeError, match=r"r\.jsonl:2: invalid line"):
        read_responses(path)


def test_writer_resumes_without_duplicates(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        assert [writer.write({"id": i, "v": i * i}) for i in range(3)] == [True] * 3
    with JsonlWriter(path) as writer:
        assert writer.done_ids == {"0", "1", "2"}
        assert 1 in writer and "2" in writer and 7 not in writer
        written = [writer.write({"id": i, "v": -1}) for i in range(5)]
    assert written == [False, False, False, True, True]
    assert _lines(path) == [{"id": i, "v": i * i if i < 3 else -1} for i in range(5)]


def test_writer_cuts_torn_tail_and_keeps_whole_unterminated_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "text": "half wr')
    with JsonlWriter(path) as writer:
        assert writer.done_ids == {"a", "b"}
        assert writer.repaired is not None and writer.repaired.line == 3
        writer.write({"id": "c", "text": "whole"})
    assert [r["id"] for r in _lines(path)] == ["a", "b", "c"]
    path.write_text('{"id": "a"}\n{"id": "b"}')  # complete JSON, newline missing: kept
    with JsonlWriter(path) as writer:
        assert writer.done_ids == {"a", "b"} and writer.repaired is None
        writer.write({"id": "c"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id":"c"}\n'


def test_writer_without_resume_truncates_and_requires_id(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "old"}\n')
    with JsonlWriter(path, resume=False) as writer:
        assert writer.done_ids == set()
        with pytest.raises(KeyError, match="no 'id' field"):
            writer.write({"name": "x"})
        writer.write({"id": "new"})
    assert _lines(path) == [{"id": "new"}]


_WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from mmboundary.data.io import JsonlWriter
    with JsonlWriter(sys.argv[1]) as writer:
        for i in range(100000):
            writer.write({"id": f"r{i}", "payload": "x" * 20000})
""")


def test_kill_9_mid_write_then_resume(tmp_path):
    """A writer killed with SIGKILL leaves whole lines (and maybe a torn one); a rerun continues."""
    path = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_SCRIPT, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 200_000):
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with JsonlWriter(path) as writer:
        done = len(writer.done_ids)
        assert done >= 9
        assert writer.done_ids == {f"r{i}" for i in range(done)}
        for i in range(done + 5):
            writer.write({"id": f"r{i}", "payload": "y"})
    ids = [r["id"] for r in _lines(path)]
    assert ids == [f"r{i}" for i in range(done + 5)]


def test_write_json_atomic_replaces_and_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json_atomic(path, {"ece": 0.25})
    write_json_atomic(path, {"ece": 0.125, "n": 3})
    assert json.loads(path.read_text()) == {"ece": 0.125, "n": 3}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ece": 0.125, "n": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(), max_size=40), st.integers(min_value=1, max_value=7))
def test_shard_partitions_in_order(items, num_shards):
    parts = [shard(items, num_shards, k) for k in range(num_shards)]
    assert sorted(x for p in parts for x in p) == sorted(items)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    for k, part in enumerate(parts):
        assert part == items[k::num_shards]


def test_shard_by_key_is_stable_under_reordering():
    ids = [f"q{i}" for i in range(200)]
    first = [shard(ids, 4, k, key=str) for k in range(4)]
    again = [shard(list(reversed(ids)), 4, k, key=str) for k in range(4)]
    assert [sorted(p) for p in first] == [sorted(p) for p in again]
    assert sum(map(len, first)) == 200 and all(30 < len(p) < 70 for p in first)
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, 4\)"):
        shard(ids, 4, 4)


def test_merge_jsonl_dedups_by_id_first_wins(tmp_path):
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "m.jsonl"
    write_jsonl_atomic(a, [{"id": "1", "v": "a"}, {"id": "2", "v": "a"}])
    b.write_text('{"id": "2", "v": "b"}\n{"id": "3", "v": "b"}\n{"id": "4", "v"')
    assert merge_jsonl([a, b], out) == 3
    assert _lines(out) == [{"id": "1", "v": "a"}, {"id": "2", "v": "a"}, {"id": "3", "v": "b"}]
