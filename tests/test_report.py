"""Report: tables with intervals and over seeds (Markdown, CSV), reliability PNGs, the step viewer,
the README block and the self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.data.failures import InputError
from mmboundary.data.io import write_json_atomic
from mmboundary.data.schema import ReferenceChain, Response, Sample
from mmboundary.evaluation.evaluate import EvalConfig, EvalResult, evaluate_predictions
from mmboundary.evaluation.published import TABLE1, published_rows
from mmboundary.evaluation.report import PUBLISHED_TITLE, README_END, README_START, write_report
from mmboundary.evaluation.tables import fmt_interval, fmt_mean_sd
from mmboundary.evaluation.viewer import confidence_colour, pick_questions, step_viewer_html
from mmboundary.judging.rules import RuleConfig


class Overlap:
    """Fake similarity: share of the shorter text's words found in the other."""

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        def words(t: str) -> set[str]:
            return set(re.findall(r"[a-z0-9]+", t.lower()))

        return np.array([[len(words(x) & words(y)) / max(min(len(words(x)), len(words(y))), 1)
                          for y in b] for x in a])

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        return np.array([self.pairwise([x], [y])[0, 0] for x, y in zip(a, b, strict=True)])


# s0 right (0.9), s1 wrong (0.7), s2 right (0.3), s3 wrong (0.9, one step): Acc .5, ECE .55
TEXTS = ["The cake shows 30 (confidence 0.9). So, the answer is thirty (confidence 0.9).",
         "The cake shows 10 (confidence 0.7). So, the answer is ten (confidence 0.7).",
         "The cake shows 30 (confidence 0.5). So, the answer is thirty (confidence 0.3).",
         "So, the answer is ten (confidence 0.9)."]


def _samples(image: str | None = None) -> list[Sample]:
    chain = ReferenceChain(image_level=["The cake shows 30."],
                           reasoning_level=["So, the answer is thirty."])
    return [Sample(id=f"s{i}", dataset="aokvqa", question="Which birthday?", image=image,
                   choices=["ten", "thirty"], correct_choice_idx=1, reference=chain)
            for i in range(4)]


def _evaluate(texts: list[str], system: str) -> EvalResult:
    config = EvalConfig(rules=RuleConfig(judge="similarity", tau=0.8), bootstrap=50)
    responses = [Response(sample_id=f"s{i}", text=t) for i, t in enumerate(texts)]
    return evaluate_predictions(_samples(), responses, Overlap(), system=system, config=config)


def _metrics_files(folder: Path, texts: list[str] = TEXTS) -> list[Path]:
    plain = [re.sub(r" \(confidence [\d.]+\)", "", t) for t in texts]
    paths = []
    for name, system_texts in [("numeric system", texts), ("no confidences", plain)]:
        paths.append(folder / f"{name}.json")
        write_json_atomic(paths[-1], _evaluate(system_texts, name).to_dict())
    return paths


def _seeds(tmp_path: Path) -> list[Path]:
    """Two runs of both systems; seed 1 answers s1 right: answer confidences 0.9 T, 0.7 T,
    0.3 T, 0.9 F -> ECE = .5*|.5-.9| + .25*|1-.7| + .25*|1-.3| = .45, Acc .75."""
    _metrics_files(tmp_path / "seed-0" / "metrics")
    seed1 = [TEXTS[0], TEXTS[1].replace("answer is ten", "answer is thirty"), *TEXTS[2:]]
    _metrics_files(tmp_path / "seed-1" / "metrics", seed1)
    return [tmp_path / "seed-0" / "metrics", tmp_path / "seed-1" / "metrics"]


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


def test_interval_and_mean_sd_formatting() -> None:
    assert fmt_interval(0.123, [0.101, 0.14]) == ".123 [.101, .140]"
    assert fmt_interval(1.0, [0.95, 1.0]) == "1.000 [.950, 1.000]"
    assert fmt_interval(0.123, None) == ".123" and fmt_interval(None, [0.1, 0.2]) == "n/a"
    assert fmt_mean_sd((0.5, 0.0707107, 2), 2) == ".500 \u00b1 .071"
    assert fmt_mean_sd((0.5, 0.0, 1), 2) == ".500 \u00b1 .000 (n=1)"  # defined in 1 of 2 runs
    assert fmt_mean_sd(None, 2) == "n/a"


def test_report_files_and_table(tmp_path: Path) -> None:
    files = _metrics_files(tmp_path)
    paths = write_report(files, tmp_path / "report", title="Toy report")
    result = EvalResult.load(files[0])
    lo, hi = result.intervals["ece"]
    assert lo <= 0.55 <= hi
    markdown = paths["markdown"].read_text()
    assert "ECE and MECE over 10 equal-width confidence bins" in markdown
    assert "| System | Dataset | ECE | MECE | Acc | F1 |" in markdown
    assert f"| numeric system | aokvqa | {fmt_interval(0.55, [lo, hi])} |" in markdown
    assert "| System | Dataset | AUROC | Brier | AURC | Coverage |" in markdown
    assert "| System | Dataset | Step acc | Step AUROC | Step Brier | Step AURC | Step coverage |" \
        in markdown
    assert "| no confidences | aokvqa | n/a | n/a | n/a | .000 [.000, .000] |" in markdown
    # per step type: 3 perception steps (2 right), 4 reasoning steps (2 right)
    assert "| numeric system | aokvqa | perception | 3 | .667 |" in markdown
    assert "| numeric system | aokvqa | reasoning | 4 | .500 |" in markdown
    rows = list(csv.DictReader(paths["csv"].open()))
    numeric = rows[0]
    assert (numeric["system"], numeric["run"], numeric["n_bins"]) == ("numeric system", "", "10")
    assert float(numeric["ece"]) == 0.55 and float(numeric["accuracy"]) == 0.5
    assert (float(numeric["ece_lo"]), float(numeric["ece_hi"])) == (lo, hi)
    assert rows[1]["ece"] == rows[1]["ece_lo"] == "" and float(rows[1]["coverage"]) == 0.0
    assert PUBLISHED_TITLE in markdown and "| MMBoundary | .316 | .304 | .835 | .661 |" in markdown
    pngs = sorted(p.name for p in paths["dir"].glob("*.png"))
    assert pngs == ["reliability_no-confidences_aokvqa.png", "reliability_numeric-system_aokvqa.png"]
    assert all((paths["dir"] / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_mean_sd_over_two_seeds(tmp_path: Path) -> None:
    paths = write_report(_seeds(tmp_path), tmp_path / "report", published=False)
    markdown = paths["markdown"].read_text()
    # ECE .55 and .45: mean .5, sd = sqrt(2 * .05^2 / 1) = .0707; Acc .5 and .75: .625 +- .177
    assert "| System | Dataset | Runs | ECE | MECE | Acc | F1 |" in markdown
    row = next(line for line in markdown.splitlines()
               if line.startswith("| numeric system | aokvqa | 2 | .500 \u00b1 .071 |"))
    assert row.split(" | ")[5] == ".625 \u00b1 .177"
    assert "| no confidences | aokvqa | 2 | n/a | n/a | .625 \u00b1 .177 |" in markdown
    assert "**Paper metrics (Table 1), per run.**" in markdown  # per-seed rows kept
    assert re.search(r"\| numeric system \| aokvqa \| seed-1 \| \.450 \[", markdown)
    rows = [r for r in csv.DictReader(paths["csv"].open()) if r["system"] == "numeric system"]
    assert [r["run"] for r in rows] == ["seed-0", "seed-1", "mean\u00b1sd"]
    assert [float(r["ece"]) for r in rows] == [0.55, 0.45, 0.5]
    assert abs(float(rows[2]["ece_sd"]) - 0.0707107) < 1e-6 and rows[2]["ece_n"] == "2"
    assert sorted(p.name for p in paths["dir"].glob("reliability_numeric*")) == [
        "reliability_numeric-system_aokvqa_seed-0.png",
        "reliability_numeric-system_aokvqa_seed-1.png"]


def test_unavailable_metrics_one_line_per_system(tmp_path: Path) -> None:
    paths = write_report(_metrics_files(tmp_path), tmp_path / "report", published=False)
    lines = [line for line in paths["markdown"].read_text().splitlines() if line.startswith("- ")]
    assert lines == ["- no confidences: ECE, Brier, AUROC, AURC n/a \u2014 no response's answer "
                     "step carries an expressed confidence; MECE, Step Brier, Step AUROC, "
                     "Step AURC n/a \u2014 no aligned step carries an expressed confidence"]


def test_viewer_picks_the_most_confidently_wrong_step(tmp_path: Path) -> None:
    # s0 gains an unaligned step at 0.95: unaligned is not wrong, so s3 (wrong at 0.9) comes first
    texts = ["A dog barks loudly (confidence 0.95). " + TEXTS[0], *TEXTS[1:]]
    result = _evaluate(texts, "toy")
    picks = pick_questions(result, n=3, n_confident_wrong=2, seed=0)
    assert [p.sample.sample_id for p in picks[:2]] == ["s3", "s1"]
    assert picks[0].worst is not None and picks[0].worst.expressed_confidence == 0.9
    assert picks[0].reason == "confidently wrong step (0.90)"
    assert picks[2].sample.sample_id in {"s0", "s2"} and picks[2].reason == "random pick"
    assert pick_questions(result, n=3, n_confident_wrong=2, seed=0)[2].sample == picks[2].sample
    assert confidence_colour(0.0) == "hsl(0,75%,82%)" and confidence_colour(1.0) == "hsl(120,75%,82%)"
    image = tmp_path / "cake.png"
    Image.new("RGB", (320, 200), (200, 40, 40)).save(image)
    samples = {s.id: s for s in _samples(str(image))}
    page = step_viewer_html(result, samples, n=4, n_confident_wrong=2)
    parsed = _Structure()
    parsed.feed(page)
    assert len(parsed.images) == 4
    thumb = Image.open(io.BytesIO(base64.b64decode(parsed.images[0].split(",", 1)[1])))
    assert max(thumb.size) == 96
    assert page.count("class='step worst'") == 2  # one outlined step per wrong question
    assert "\u2013</span>A dog barks loudly" in page and "\u2717</span>So, the answer is ten" in page
    assert "Which birthday?" in "".join(parsed.text)
    assert "<script" not in step_viewer_html(_evaluate(["So, the answer is <script>."] * 4, "x"))


def _readme(path: Path) -> tuple[bytes, bytes]:
    before = "# Project \u00e9\r\n\r\nIntro line.\r\n" + README_START
    after = README_END + "\n\nOld tail | kept\n"
    path.write_bytes(f"{before}\nold table\n{after}".encode())
    return before.encode(), after.encode()


def test_readme_block_replaced_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = _readme(readme)
    files = _metrics_files(tmp_path)
    paths = write_report(files, tmp_path / "report", readme=readme, command="mmboundary report x",
                         published=False)
    data = readme.read_bytes()
    assert data.startswith(before) and data.endswith(after)
    block = data[len(before):-len(after)].decode()
    assert "old table" not in block and "Made with `mmboundary report x`." in block
    assert "**Paper metrics (Table 1).**" in block and "**Step level.**" in block
    assert "| numeric system | aokvqa | .550 [" in block
    table_lines = [line for line in block.splitlines() if line.startswith("|")]
    assert len(table_lines) == 3 * 4  # 3 tables: header, rule, 2 systems
    assert all(line in paths["markdown"].read_text().splitlines() for line in table_lines)
    write_report(files, tmp_path / "report", readme=readme, command="mmboundary report x",
                 published=False)
    assert readme.read_bytes() == data  # idempotent


def test_named_readme_block_with_the_published_rows(tmp_path: Path) -> None:
    """A second block (``--readme-block table1``) is replaced alone; with --published the
    paper's rows follow the tables, labelled."""
    readme = tmp_path / "README.md"
    before, after = _readme(readme)
    readme.write_bytes(readme.read_bytes() + b"<!-- mmboundary:table1:start -->\nold\n"
                       b"<!-- mmboundary:table1:end -->\n")
    main = readme.read_bytes()[len(before):].split(README_END.encode())[0]
    files = _metrics_files(tmp_path)
    res = CliRunner().invoke(app, ["report", *map(str, files), "--out", str(tmp_path / "r"),
                                   "--update-readme", str(readme), "--readme-block", "table1"])
    assert res.exit_code == 0, res.output
    data = readme.read_bytes().decode()
    assert data.startswith(before.decode() + main.decode())  # the results block is untouched
    block = data.split("<!-- mmboundary:table1:start -->")[1].split("<!-- mmboundary:table1:end")[0]
    assert "old" not in block.splitlines() and f"**{PUBLISHED_TITLE}**" in block
    assert "--readme-block table1" in block and "| numeric system | aokvqa |" in block
    bad = CliRunner().invoke(app, ["report", *map(str, files), "--out", str(tmp_path / "r3"),
                                   "--update-readme", str(readme), "--readme-block", "none"])
    assert bad.exit_code == 2 and "mmboundary:none:start" in bad.output


def test_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# No markers here\n")
    files = _metrics_files(tmp_path)
    with pytest.raises(InputError, match="mmboundary:results:start"):
        write_report(files, tmp_path / "report", readme=readme)
    assert not (tmp_path / "report").exists()  # checked before anything is written
    assert readme.read_text() == "# No markers here\n"
    res = CliRunner().invoke(app, ["report", *map(str, files), "--out", str(tmp_path / "r2"),
                                   "--update-readme", str(readme)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")


def test_cli_report_over_seed_folders_with_data(tmp_path: Path) -> None:
    folders = _seeds(tmp_path)
    (folders[0] / "done.json").write_text('{"seconds": 1}')  # a stage file: skipped
    Image.new("RGB", (64, 64), (0, 90, 200)).save(tmp_path / "cake.png")
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(s.model_dump(mode="json")) + "\n"
                            for s in _samples("cake.png")))
    readme = tmp_path / "README.md"
    _readme(readme)
    args = ["report", *map(str, folders), "--out", str(tmp_path / "r"), "--data", str(data),
            "--dataset", "sample", "--update-readme", str(readme), "--no-published"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| numeric system | aokvqa | 2 | .500 \u00b1 .071 |" in readme.read_text()
    assert f"Made with `mmboundary report {folders[0]} {folders[1]} --out" in readme.read_text()
    page = _Structure()
    page.feed((tmp_path / "r" / "report.html").read_text())
    thumbs = [s for s in page.images if s.startswith("data:image/png")]
    assert len(thumbs) == 4 + 4 + 4  # 4 reliability PNGs + 2 systems x 4 questions


def test_html_structure(tmp_path: Path) -> None:
    paths = write_report(_metrics_files(tmp_path), tmp_path / "report", title="Toy report",
                         notes={"seed": 0})
    page = _Structure()
    page.feed(paths["html"].read_text())
    assert page.tags.count("table") == 5  # 3 result tables + per step type + published
    assert len(page.images) == 2  # reliability diagrams (no samples: no thumbnails)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert base64.b64decode(page.images[0].split(",", 1)[1])[:4] == b"\x89PNG"
    text = " ".join(page.text)
    assert PUBLISHED_TITLE in text and "not produced by this code" in text
    assert "no response's answer step carries an expressed confidence" in text
    assert "Step viewer" in text and "(question of s3)" in text
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
    image = tmp_path / "cake.png"
    Image.new("RGB", (128, 96), (230, 180, 60)).save(image)
    paths = write_report(_seeds(tmp_path), tmp_path / "report", samples=_samples(str(image)))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1280,2400",
                    paths["html"].resolve().as_uri()], check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page


def test_responses_cut_by_the_budget_are_counted_and_named(tmp_path: Path) -> None:
    """A response whose generation the token budget stopped (meta finished=False) is counted per
    system and named under the first table; a system with none is not."""
    config = EvalConfig(rules=RuleConfig(judge="similarity", tau=0.8), bootstrap=0)
    responses = [Response(sample_id=f"s{i}", text=t, meta={"finished": i != 1})
                 for i, t in enumerate(TEXTS)]
    cut = evaluate_predictions(_samples(), responses, Overlap(), system="cut", config=config)
    plain = evaluate_predictions(_samples(), [Response(sample_id=f"s{i}", text=t)
                                              for i, t in enumerate(TEXTS)],
                                 Overlap(), system="whole", config=config)
    assert cut.counts["cut_at_limit"] == 1 and plain.counts["cut_at_limit"] == 0
    files = []
    for result in (cut, plain):
        files.append(tmp_path / f"{result.system}.json")
        write_json_atomic(files[-1], result.to_dict())
    markdown = write_report(files, tmp_path / "report")["markdown"].read_text()
    assert markdown.count("Responses cut by the token budget before they ended: cut 1/4.") == 1
    assert "whole 0/4" not in markdown
