"""Report: Table-1-style table (Markdown, CSV), reliability PNGs, self-contained HTML."""

from __future__ import annotations

import base64
import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mmboundary.data.io import write_json_atomic
from mmboundary.data.schema import ReferenceChain, Response, Sample
from mmboundary.evaluation.evaluate import evaluate_predictions
from mmboundary.evaluation.published import TABLE1, published_rows
from mmboundary.evaluation.report import PUBLISHED_TITLE, write_report


class Overlap:
    """Fake similarity: share of the shorter text's words found in the other."""

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        def words(t: str) -> set[str]:
            return set(re.findall(r"[a-z0-9]+", t.lower()))

        return np.array([[len(words(x) & words(y)) / max(min(len(words(x)), len(words(y))), 1)
                          for y in b] for x in a])

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        return np.array([self.pairwise([x], [y])[0, 0] for x, y in zip(a, b, strict=True)])


def _metrics_files(tmp_path: Path) -> list[Path]:
    chain = ReferenceChain(image_level=["The cake shows 30."], reasoning_level=["So, the answer is thirty."])
    samples = [Sample(id=f"s{i}", dataset="aokvqa", question="Which birthday?",
                      choices=["ten", "thirty"], correct_choice_idx=1, reference=chain)
               for i in range(4)]
    texts = ["The cake shows 30 (confidence 0.9). So, the answer is thirty (confidence 0.9).",
             "The cake shows 10 (confidence 0.7). So, the answer is ten (confidence 0.7).",
             "The cake shows 30 (confidence 0.5). So, the answer is thirty (confidence 0.3).",
             "So, the answer is ten (confidence 0.9)."]
    responses = [Response(sample_id=f"s{i}", text=t) for i, t in enumerate(texts)]
    plain = [Response(sample_id=r.sample_id, text=re.sub(r" \(confidence [\d.]+\)", "", r.text))
             for r in responses]
    paths = []
    for name, resp in [("numeric system", responses), ("no confidences", plain)]:
        result = evaluate_predictions(samples, resp, Overlap(), tau=0.8, system=name,
                                      config=None)
        paths.append(tmp_path / f"{name}.json")
        write_json_atomic(paths[-1], result.to_dict())
    return paths


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_files_and_table(tmp_path: Path) -> None:
    paths = write_report(_metrics_files(tmp_path), tmp_path / "report", title="Toy report")
    rows = list(csv.reader(paths["csv"].open()))
    assert rows[0] == ["System", "aokvqa ECE", "aokvqa MECE", "aokvqa Acc", "aokvqa F1"]
    # numeric system: answers thirty, ten, thirty, ten -> Acc .5; answer confidences 0.9 T, 0.7 F,
    # 0.3 T, 0.9 F -> bins 0.9 (acc .5, gap .4, w .5), 0.7 (gap .7), 0.3 (gap .7): ECE .55.
    assert rows[1] == ["numeric system", ".550", rows[1][2], ".500", rows[1][4]]
    assert rows[2][:4] == ["no confidences", "n/a", "n/a", ".500"]
    markdown = paths["markdown"].read_text()
    assert PUBLISHED_TITLE in markdown and "| MMBoundary | .316 | .304 | .835 | .661 |" in markdown
    pngs = sorted(p.name for p in paths["dir"].glob("*.png"))
    assert pngs == ["reliability_no-confidences_aokvqa.png", "reliability_numeric-system_aokvqa.png"]
    assert all((paths["dir"] / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_html_structure(tmp_path: Path) -> None:
    paths = write_report(_metrics_files(tmp_path), tmp_path / "report", title="Toy report",
                         notes={"seed": 0})
    page = _Structure()
    page.feed(paths["html"].read_text())
    assert page.tags.count("table") == 2  # results + published
    assert len(page.images) == 2
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert base64.b64decode(page.images[0].split(",", 1)[1])[:4] == b"\x89PNG"
    text = " ".join(page.text)
    assert PUBLISHED_TITLE in text and "not produced by this code" in text
    assert "no response's answer step carries an expressed confidence" in text
    assert "http" not in paths["html"].read_text().replace("data:image", "")  # self-contained
    bare = write_report(_metrics_files(tmp_path), tmp_path / "bare", published=False)
    assert PUBLISHED_TITLE not in bare["html"].read_text()


def test_published_rows_match_table1() -> None:
    rows = published_rows()
    assert len(rows) == 9
    mmb = next(r for r in rows if r["system"] == "MMBoundary" and r["dataset"] == "CulturalVQA")
    assert (mmb["ECE"], mmb["MECE"], mmb["Acc"], mmb["F1"]) == TABLE1["MMBoundary"]["CulturalVQA"]
    assert all("not re-runs" in r["source"] for r in rows)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install -y chromium) - "
                           "the headless rendering check needs a browser")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    paths = write_report(_metrics_files(tmp_path), tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1280,2400",
                    paths["html"].resolve().as_uri()], check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page
