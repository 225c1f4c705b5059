"""`mmboundary demo --quick`: every stage end to end on ShapesWorld (smoke size)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.demo.config import PRESETS


def test_quick_demo_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    for stage in ("world", "estimate", "sft-mmboundary", "rl", "sft-w_max", "metrics"):
        assert (out / stage / "done.json").is_file(), f"stage {stage} did not finish"
    rows = {r["system"]: r for r in csv.DictReader((out / "report" / "table.csv").open())}
    expected = {"Vanilla (no confidence)", "Constant (val. answer accuracy)",
                "Constant (val. step accuracy)", "Token probability",
                "Internal C (not verbalised)", "DPV (prompted number)",
                "DPS (prompted statement)", "SC (k=3)", "Multisample (k=3)",
                "MMBoundary (ours: warm-up + RL)", "MMBoundary w/o RL (warm-up only)",
                "MMBoundary w U_Max (w/o RL)"}
    assert expected <= set(rows)
    html = (out / "report" / "report.html").read_text()
    assert "MMBoundary (ours: warm-up + RL)" in html and "data:image/png;base64" in html
    assert "RL training: mean reward per GRPO step" in html
    assert (out / "report" / "rl_rewards.png").read_bytes()[:4] == b"\x89PNG"
    rl = json.loads((out / "rl" / "done.json").read_text())
    assert rl["rewards"]["logged_steps"] == PRESETS["quick"].rl_steps
    # a vanilla model states no confidence: its ECE is unavailable, never 0
    files = json.loads((out / "metrics" / "done.json").read_text())["files"]
    vanilla = json.loads(open(files["Vanilla (no confidence)"]).read())
    assert vanilla["metrics"]["ece"] is None and "ece" in vanilla["unavailable"]
    assert 0.3 <= vanilla["metrics"]["accuracy"] <= 0.9
    # issue #11: discrimination, coverage and intervals in the table; constants from validation
    table = (out / "report" / "table.md").read_text()
    for column in ("AUROC", "Step AUROC", "Coverage", "Step coverage", "AURC"):
        assert f"| {column} |" in table or f" {column} |" in table, column
    step_constant = json.loads(open(files["Constant (val. step accuracy)"]).read())
    lo, hi = step_constant["intervals"]["mece"]
    assert lo <= step_constant["metrics"]["mece"] <= hi
    constants = json.loads((out / "metrics" / "done.json").read_text())["constants"]
    assert 0.0 < constants["step"] < 1.0 and 0.0 < constants["answer"] < 1.0
    assert (out / "predictions-validation").is_dir()


def test_demo_config_yaml_and_presets(tmp_path):
    from mmboundary.demo.config import DemoConfig

    path = tmp_path / "demo.yaml"
    path.write_text("preset: quick\nseed: 3\n")
    cfg = DemoConfig.from_yaml(path)
    assert cfg == replace(PRESETS["quick"], seed=3)
    path.write_text("n_trian: 5\n")
    try:
        DemoConfig.from_yaml(path)
    except ValueError as err:
        assert "n_trian" in str(err)
    else:  # pragma: no cover
        raise AssertionError("an unknown field must be an error")


def test_demo_config_is_validated_on_load(tmp_path):
    """Issue #14: a typo fails when the YAML is read, not at stage 5."""
    import pytest

    from mmboundary.demo.config import DemoConfig

    path = tmp_path / "demo.yaml"
    for text, field in [("eval_split: tset\n", "eval_split"), ("ablations: [wo_foo]\n", "ablations"),
                        ("rl_batch: 10\nrl_generations: 4\n", "rl_batch"),
                        ("baselines: [constant]\n", "baselines")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"DemoConfig.{field}"):
            DemoConfig.from_yaml(path)
