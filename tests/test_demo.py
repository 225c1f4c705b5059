"""`mmboundary demo --quick`: every stage end to end on ShapesWorld (smoke size)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

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
    # the warm-up ran with the content distillation (the default) and logged its terms
    sft_log = json.loads((out / "sft-mmboundary" / "run" / "train_log.json").read_text())
    assert any("distill_kl" in row for row in sft_log)
    # resuming with other settings is refused, naming them, before any stage runs
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--sft-lr", "0.002"])
    assert again.exit_code == 2, again.output
    assert "sft_lr: 0.0005 -> 0.002" in again.output and "--fresh" in again.output
    from mmboundary.demo.run import check_resume

    check_resume(replace(PRESETS["quick"], out_dir=str(out), threads=1))  # threads may change
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
    check_guided_outputs(out, rows)
    check_diagnostics_outputs(out)


def check_diagnostics_outputs(out):
    """Issue #12: stated vs internal level per trained model and the linear probe per model in
    the report; the held-out RL log has one row per evaluation step."""
    from mmboundary.training.heldout import heldout_steps

    quick = PRESETS["quick"]
    diag = json.loads((out / "diagnostics" / "done.json").read_text())
    assert set(diag["levels"]) == {"warm-up", "warm-up + RL"}
    for levels in diag["levels"].values():  # a quick warm-up may state nothing yet: said why
        if "error" in levels:
            assert levels["n"] == 0 and "statement" in levels["error"]
            continue
        assert sum(map(sum, levels["confusion"])) == levels["n"] > 0
        assert abs(sum(levels["stated_share"].values()) - 1.0) < 1e-9
    assert set(diag["probe"]) == {"vanilla", "warm-up", "warm-up + RL"}
    for probe in diag["probe"].values():
        assert probe["n_train"] > 0 and probe["n_val"] > 0
        assert probe["auroc"] is None or 0.0 <= probe["auroc"] <= 1.0
    table = (out / "report" / "table.md").read_text()
    html = (out / "report" / "report.html").read_text()
    for text in ("Stated vs internal level: warm-up (test split)",
                 "Stated vs internal level: warm-up + RL (test split)",
                 "Linear probe on the hidden states"):
        assert text in table and text in html, text
    assert "| Probe AUROC (val) |" in table
    rows = [json.loads(line) for line in
            (out / "rl" / "run" / "heldout_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == heldout_steps(quick.rl_steps, quick.rl_eval_every)
    for row in rows:
        assert row["n"] == min(quick.rl_eval_samples, quick.n_val)
        assert all(0.0 <= row[k] <= 1.0 for k in ("R_KA", "R_EC", "R_CS", "accuracy"))
    assert "held-out validation answers" in html


def check_guided_outputs(out, rows):
    """Issue #17: the guided stage chose its setting on validation from the grid; its two rows
    are evaluated like the others (same accuracy as the stage measured); the table and the two
    plots are in the report."""
    quick = PRESETS["quick"]
    info = json.loads((out / "guided" / "done.json").read_text())
    assert info["split"] == "test" and info["validation_questions"] == min(quick.guided_val,
                                                                           quick.n_val)
    files = json.loads((out / "metrics" / "done.json").read_text())
    for key, system in info["systems"].items():
        assert system["chosen"]["below"] in quick.guided_levels
        assert system["chosen"]["tries"] in quick.guided_tries
        assert len(system["validation"]["grid"]) == len(quick.guided_levels) * len(
            quick.guided_tries)
        plain, guided = system["plain"], system["guided"]
        assert plain["n"] == guided["n"] == quick.n_test and plain["below"] == 1
        assert guided["tokens"] >= plain["tokens"] > 0  # resampling only adds tokens
        assert plain["tries_used"] == 0 and guided["tries_used"] >= 0
        coverages = [p["coverage"] for p in system["abstention"]]
        assert coverages[0] == 1.0 and coverages == sorted(coverages, reverse=True)
        assert system["row"] in rows, system["row"]
        result = json.loads(open(files["files"][system["row"]]).read())
        assert abs(result["metrics"]["accuracy"] - guided["accuracy"]) < 1e-9, key
        assert files["guided"][system["row"]]["tokens_per_question"] == guided["tokens"]
    html = (out / "report" / "report.html").read_text()
    assert "Confidence-guided decoding (issue #17)" in html
    assert "accuracy vs tokens per question" in html and "selective risk vs coverage" in html
    for name in ("guided_accuracy_tokens.png", "guided_risk_coverage.png"):
        assert (out / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| MMBoundary (stated C) | guided |" in (out / "report" / "table.md").read_text()


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


def test_probe_preset_is_the_ninth_rounds_candidate():
    """README "The probe teacher, distilled, with longer RL": three fields, the rest default."""
    from dataclasses import fields

    from mmboundary.demo.config import DemoConfig

    probe, default = PRESETS["probe"], DemoConfig()
    changed = {f.name for f in fields(DemoConfig)
               if getattr(probe, f.name) != getattr(default, f.name)}
    assert changed == {"out_dir", "sft_teacher", "sft_distill", "rl_steps"}
    assert (probe.sft_teacher, probe.sft_distill, probe.rl_steps) == ("probe", 1.0, 200)


def test_demo_config_is_validated_on_load(tmp_path):
    """Issue #14: a typo fails when the YAML is read, not at stage 5."""
    import pytest

    from mmboundary.demo.config import DemoConfig

    path = tmp_path / "demo.yaml"
    for text, field in [("eval_split: tset\n", "eval_split"), ("ablations: [wo_foo]\n", "ablations"),
                        ("rl_batch: 10\nrl_generations: 4\n", "rl_batch"),
                        ("baselines: [constant]\n", "baselines"),
                        ("sft_teacher: probes\n", "sft_teacher"), ("fusion: max\n", "fusion")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"DemoConfig.{field}"):
            DemoConfig.from_yaml(path)


def test_calibrator_variants_fuse_as_configured():
    """``fusion: fitted``: the full method and the w/o-U_X rows fit their weights; w U_Max stays
    max pooling."""
    from mmboundary.demo.config import DemoConfig
    from mmboundary.demo.stages import calibrator_variant

    config = DemoConfig(fusion="fitted")
    assert calibrator_variant("mmboundary", config).fusion.method == "fitted"
    no_clips = calibrator_variant("wo_clips", config)
    assert no_clips.fusion.method == "fitted" and "clips" not in no_clips.estimators
    assert calibrator_variant("w_max", config).fusion.method == "max"
    assert calibrator_variant("mmboundary", DemoConfig()).fusion.method == "mean"
    assert calibrator_variant("mmboundary", config).needs_labels


def test_warmup_with_the_probe_teacher_says_the_probe_levels(tmp_path):
    """``sft_teacher: probe`` (issue #12): the warm-up data carry the cross-fitted probe's levels;
    the calibrator of C (the Internal C row) is the one the internal teacher fits; RL gets the
    start model's own probe for R_CS."""
    from collections import Counter

    import torch

    from mmboundary.confidence import ConfidenceCalibrator
    from mmboundary.data.io import read_responses
    from mmboundary.demo.stages import make_world, vanilla_estimates, warmup
    from mmboundary.shapesworld.scenes import shipped_world_clip_path, shipped_world_model_path

    torch.set_num_threads(1)
    config = replace(PRESETS["quick"], out_dir=str(tmp_path / "probe"), sft_teacher="probe",
                     threads=1, sft_augment=True)
    world = make_world(config)
    est = vanilla_estimates(config, world, shipped_world_model_path(), shipped_world_clip_path())
    sft = warmup(config, world, est, shipped_world_model_path())
    taught = json.loads((config.out / "sft-mmboundary" / "probe_teacher.json").read_text())
    assert sft["teacher"] == "probe" and sft["probe_teacher"] == taught
    leveled = read_responses(config.out / "sft-mmboundary" / "estimates.jsonl")
    levels = Counter(s.level for r in leveled for s in r.steps)
    assert sum(taught["counts"].values()) + taught["kept_internal"] == sum(levels.values())
    assert {int(k): v for k, v in sft["levels"].items()} == dict(levels)  # what the data say
    # C's levels are still the calibrator's: the probe changed `changed` of them
    calibrator = ConfidenceCalibrator.load(sft["calibrator"])
    by_c = [int(calibrator.levels_.level(s.confidence)) for r in leveled for s in r.steps
            if s.confidence is not None]
    by_probe = [s.level for r in leveled for s in r.steps if s.confidence is not None]
    assert sum(a != b for a, b in zip(by_c, by_probe, strict=True)) == taught["changed"] > 0
    # sft_augment: the same records with random levels, trained on their content only
    def records(folder):
        return [json.loads(line) for line in (Path(folder) / "records.jsonl").open()]

    main, extra = records(config.out / "sft-mmboundary" / "data"), records(
        sft["content_only_dataset"])
    assert [r["id"] for r in extra] == [r["id"] for r in main]
    assert [r["levels"] for r in extra] != [r["levels"] for r in main]
    run_config = json.loads((config.out / "sft-mmboundary" / "run" / "sft_config.json").read_text())
    assert run_config["content_only_dataset"] == sft["content_only_dataset"]
    # R_CS's i_t: a probe of the warm-up model, fitted on its own answers, goes to RL
    from mmboundary.confidence.probe_teacher import StepProbe
    from mmboundary.demo.stages import start_model_calibrator

    fitted = start_model_calibrator(config, world, sft["model"], shipped_world_clip_path(),
                                    config.out / "rl" / "calibrator.json")
    probe = StepProbe.load(fitted["probe"])
    assert fitted["probe_fit"] == probe.info and probe.info["rows"] > 0
    assert len(probe.coef) == len(probe.mean) == 128  # the world model's hidden width
