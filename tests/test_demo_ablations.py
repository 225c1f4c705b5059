"""The demo's ablations (the paper's Table 1 rows): names, the table1 preset, and a smoke run of
the two that change the most code paths: numbers instead of statements, and a reward switched off."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.demo.ablations import ablation_name, statement_mode
from mmboundary.demo.config import ABLATIONS, PRESETS


def test_table1_preset_runs_every_row_of_the_paper_with_rl() -> None:
    table1 = PRESETS["table1"]
    assert set(table1.ablations) == set(ABLATIONS) and table1.ablation_rl
    names = {ablation_name(a, table1) for a in table1.ablations}
    assert names == {
        "MMBoundary w/o U_LNLP", "MMBoundary w/o U_MTE", "MMBoundary w/o U_TSAR",
        "MMBoundary w/o U_CLIPS", "MMBoundary w U_Max", "MMBoundary w/o S-S mapping",
        "MMBoundary w/o R_KA", "MMBoundary w/o R_EC", "MMBoundary w/o R_CS",
        "MMBoundary w/o RL (warm-up only)", "DRL (RL without warm-up)"}
    # without RL for the variants, their names say so
    assert ablation_name("w_max", PRESETS["default"]) == "MMBoundary w U_Max (w/o RL)"
    assert statement_mode("MMBoundary w/o S-S mapping") == "numeric"
    assert statement_mode("MMBoundary w U_Max") == "statement"


def test_numeric_and_reward_ablations_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "t1"
    config = tmp_path / "t1.yaml"
    config.write_text(yaml.safe_dump({
        "preset": "quick", "ablations": ["wo_ssmap", "wo_cs"], "ablation_rl": True,
        "guided": False, "diagnostics": False, "baselines": [], "sft_epochs": 2.0}))
    result = CliRunner().invoke(app, ["demo", "--config", str(config), "--out", str(out),
                                      "--threads", "2"])
    assert result.exit_code == 0, result.output
    records = (out / "sft-wo_ssmap" / "data" / "records.jsonl").read_text().splitlines()
    targets = [json.loads(r)["messages"][-1]["content"][0]["text"] for r in records]
    assert all("(confidence 0." in t for t in targets), targets[:2]  # numbers, not statements
    numeric = yaml.safe_load((out / "rl-wo_ssmap" / "run" / "rl_config.yaml").read_text())
    assert numeric["statement_mode"] == "numeric" and numeric["gamma"] == 1.0
    no_cs = yaml.safe_load((out / "rl-wo_cs" / "run" / "rl_config.yaml").read_text())
    assert no_cs["gamma"] == 0.0 and no_cs["alpha"] == no_cs["beta"] == 1.0
    assert no_cs["model"] == json.loads((out / "sft-mmboundary" / "done.json").read_text())["model"]
    files = json.loads((out / "metrics" / "done.json").read_text())["files"]
    assert {"MMBoundary w/o S-S mapping", "MMBoundary w/o R_CS"} <= set(files)
