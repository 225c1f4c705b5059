"""`mmboundary evaluate --general-output` + `mmboundary report` through the CLI, on the first
CulturalVQA records of the authors' file (their answers carry no confidence statements)."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.data.loaders import load_annotated
from mmboundary.evaluation.evaluate import evaluate_predictions, general_output_responses
from mmboundary.models.similarity import load_similarity


def test_cli_evaluate_general_output_then_report(shared_data, tmp_path) -> None:
    records = json.loads((shared_data / "culturalvqa_mmb.json").read_text())[:4]
    data = tmp_path / "cultural.json"
    data.write_text(json.dumps(records))
    metrics = tmp_path / "metrics.json"
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--data", str(data), "--dataset", "culturalvqa",
                              "--general-output", "--system", "general_output",
                              "--out", str(metrics)])
    assert res.exit_code == 0, res.output
    got = json.loads(metrics.read_text())
    assert got["system"] == "general_output" and got["counts"]["evaluated"] == 4
    accuracy = got["metrics"]["accuracy"]
    assert accuracy is not None and 0.0 <= accuracy <= 1.0
    assert got["metrics"]["ece"] is None and got["metrics"]["mece"] is None
    assert got["unavailable"]["ece"] and got["unavailable"]["mece"]  # with the reason
    # the CLI's accuracy equals the library's on the same samples (cross-check of the wiring)
    samples = load_annotated(data, dataset="culturalvqa").samples
    direct = evaluate_predictions(samples, general_output_responses(samples),
                                  load_similarity(None), system="general_output")
    assert direct.metrics["accuracy"] == accuracy

    report = tmp_path / "report"
    res = runner.invoke(app, ["report", str(metrics), "--out", str(report), "--no-published"])
    assert res.exit_code == 0, res.output
    html = (report / "report.html").read_text()
    assert "general_output" in html and html.lstrip().lower().startswith("<!doctype html")
    rows = list(csv.DictReader((report / "table.csv").open()))
    assert [r["system"] for r in rows] == ["general_output"], rows
    assert rows[0]["ece"] == rows[0]["mece"] == ""
    assert float(rows[0]["accuracy"]) == round(accuracy, 6)
