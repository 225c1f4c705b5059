"""docs/API.md's examples run as they are (each ```python block, in a fresh namespace)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_api_example_runs(code: str, monkeypatch) -> None:
    monkeypatch.chdir(DOC.parents[1])  # the examples use paths relative to the repository root
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__api_doc__"})
    assert out.getvalue().strip(), "an example prints what it computes"


def test_the_doc_has_one_example_per_stage() -> None:
    assert len(BLOCKS) >= 6
    assert os.path.isfile(DOC)
