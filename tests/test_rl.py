"""Stage 2 RL: config, shipped YAMLs, internal-confidence scorer, and short GRPO runs on a tiny
LLaVA with ShapesWorld images that log the three rewards and save a model that loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmboundary.training.rl_config import ABLATIONS, RLConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REWARDS = ("knowledge_accuracy_reward", "expected_calibration_reward",
           "confidence_self_calibration_reward", "format_reward")


def test_default_yaml_mirrors_the_dataclass() -> None:
    data = yaml.safe_load((CONFIGS / "rl_default.yaml").read_text())
    assert data == RLConfig().to_dict()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("rl_*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = RLConfig.from_yaml(path)
    if config.ablation in ("wo_ka", "wo_ec", "wo_cs"):
        zeroed = {"wo_ka": "alpha", "wo_ec": "beta", "wo_cs": "gamma"}[config.ablation]
        assert getattr(config, zeroed) == 0.0


def test_config_checks(tmp_path: Path) -> None:
    assert RLConfig(ablation="wo_cs").gamma == 0.0 and set(ABLATIONS) >= {"drl", "wo_ka"}
    with pytest.raises(ValueError, match="unknown RLConfig field"):
        RLConfig.from_dict({"alpha": 1.0, "alhpa": 2.0})
    with pytest.raises(ValueError, match="one > 0"):
        RLConfig(alpha=0, beta=0, gamma=0)
    assert RLConfig().internal_scale == "level" and RLConfig().credit == "completion"
    with pytest.raises(ValueError, match="RLConfig.credit: expected one of"):
        RLConfig(credit="token")
    with pytest.raises(ValueError, match="RLConfig.internal_scale: expected 'level' or 'raw'"):
        RLConfig(internal_scale="fused")
    (tmp_path / "m").mkdir()
    base = dict(model=str(tmp_path / "m"), train_file="train.json")
    with pytest.raises(ValueError, match="calibrator"):
        RLConfig(**base).check_ready()
    with pytest.raises(ValueError, match="RLConfig.probe: the probe's levels need a calibrator"):
        RLConfig(**base, probe="probe.json").check_ready()
    with pytest.raises(ValueError, match="RLConfig.probe: .* internal_scale='level'"):
        RLConfig(**base, probe="probe.json", calibrator="c.json", internal_scale="raw").check_ready()
    with pytest.raises(ValueError, match="multiple of num_generations"):
        RLConfig(**base, gamma=0, per_device_train_batch_size=4).check_ready()
    over = RLConfig.from_yaml(CONFIGS / "rl_wo_ka.yaml", max_steps=3, model=None)
    assert over.max_steps == 3 and over.alpha == 0.0 and over.model == ""


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    """A tiny LLaVA, 6 ShapesWorld samples and a calibrator fitted on the model's own scores of
    the reference chains (LNLP + MTE)."""
    import torch

    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import read_split, write_split
    from mmboundary.text import parse_steps
    from mmboundary.training.rl import sample_image

    torch.set_num_threads(1)
    model_dir = tiny_model_dir("llava")
    split = write_split(tmp_path_factory.mktemp("world"), 6, "train", seed=0)
    samples = read_split(split)
    vlm = VLM.from_pretrained(model_dir, device="cpu")
    texts = [" ".join(s.reference.steps) for s in samples]
    steps = [parse_steps(t) for t in texts]
    scorer = InternalConfidenceScorer(vlm, ConfidenceCalibrator(estimators=("lnlp", "mte")))
    calibrator = scorer.fit_calibrator(samples, texts, [sample_image(s, None) for s in samples])
    assert not scorer.errors and sum(calibrator.levels_.counts_.values()) == sum(map(len, steps))
    path = calibrator.save(tmp_path_factory.mktemp("cal") / "calibrator.json")
    return {"model": model_dir, "samples": samples, "texts": texts, "steps": steps,
            "vlm": vlm, "calibrator": path, "train_file": str(split)}


def test_internal_confidence_scores_each_step_on_the_level_scale(world) -> None:
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.text.statements import level_to_value
    from mmboundary.training.rl import sample_image

    calibrator = ConfidenceCalibrator.load(world["calibrator"])
    images = [sample_image(s, None) for s in world["samples"]]
    scorer = InternalConfidenceScorer(world["vlm"], calibrator)
    raw = InternalConfidenceScorer(world["vlm"], calibrator, scale="raw")
    scores = scorer(world["samples"], images, world["texts"], world["steps"])
    fused = raw(world["samples"], images, world["texts"], world["steps"])
    assert [len(s) for s in scores] == [len(s) for s in world["steps"]]
    flat, c = np.array([v for s in scores for v in s]), np.array([v for s in fused for v in s])
    assert set(flat) <= {0.1, 0.3, 0.5, 0.7, 0.9} and len(set(flat)) >= 3
    assert np.all((c >= 0) & (c <= 1)) and c.std() > 0  # fitted on these very steps
    assert flat.tolist() == [level_to_value(calibrator.levels_.level(x)) for x in c]
    again = raw(world["samples"][:1], images[:1], world["texts"][:1], world["steps"][:1])
    assert again[0] == pytest.approx(fused[0], abs=1e-3)  # batch padding: float noise only
    # steps that differ from the caller's (another parse) are unknown, never misaligned
    short = scorer(world["samples"][:1], images[:1], world["texts"][:1], [world["steps"][0][:1]])
    assert np.isnan(short[0]).all()


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rl_run_via_cli_logs_rewards_and_saves_a_loadable_model(world, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.models.vlm import VLM

    cfg = tmp_path / "rl.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(world["model"]), "output_dir": str(tmp_path / "out"),
        "train_file": world["train_file"],
        "calibrator": str(world["calibrator"]), "max_steps": 2, "num_generations": 3,
        "per_device_train_batch_size": 3, "max_completion_length": 16, "lora_r": 4,
        "eval_file": world["train_file"], "eval_samples": 2}))
    result = CliRunner().invoke(app, ["train", "rl", "--config", str(cfg), "--eval-every", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # held-out curves (issue #12): before training and after each of the 2 steps, on 2 questions
    held = _read_log(tmp_path / "out" / "heldout_log.jsonl")
    assert [(r["step"], r["n"]) for r in held] == [(0, 2), (1, 2), (2, 2)]
    for r in held:
        assert all(0.0 <= r[k] <= 1.0 for k in ("R_KA", "R_EC", "R_CS", "format", "accuracy"))
        assert {"mece", "step_auroc", "step_accuracy"} <= set(r)
    rows = _read_log(tmp_path / "out" / "reward_log.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for name in REWARDS:
        assert all(0.0 <= r[f"rewards/{name}/mean"] <= 1.0 and f"rewards/{name}/std" in r
                   for r in rows)
    summary = json.loads((tmp_path / "out" / "rl_summary.json").read_text())
    assert summary["logged_steps"] == 2 and "rewards/expected_calibration_reward/mean" in summary
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    trained = VLM.from_pretrained(tmp_path / "out" / "model", device="cpu")
    sample = world["samples"][0]
    from mmboundary.training.rl import sample_image

    out = trained.generate([trained.prompt_text(sample)], [sample_image(sample, None)],
                           max_new_tokens=4)
    assert len(out) == 1


def test_full_finetune_ablation_without_cs(world, tmp_path: Path) -> None:
    """w/o R_CS with full fine-tuning and a KL term (TRL reloads the reference from disk)."""
    from mmboundary.training.rl import train_rl

    config = RLConfig(model=str(world["model"]), output_dir=str(tmp_path / "out"),
                      train_file=world["train_file"], max_samples=3, ablation="wo_cs", use_lora=False, kl_beta=0.1,
                      max_steps=1, num_generations=3, per_device_train_batch_size=3,
                      max_completion_length=8)
    path = train_rl(config)
    (row,) = _read_log(tmp_path / "out" / "reward_log.jsonl")
    assert "rewards/confidence_self_calibration_reward/mean" not in row
    assert "rewards/knowledge_accuracy_reward/mean" in row and "kl" in row
    assert (path / "config.json").is_file() and not (tmp_path / "out" / "adapter").exists()


def test_step_credit_run(world, tmp_path: Path, monkeypatch) -> None:
    """credit="step": TRL's completion advantage from R_KA alone (R_EC / R_CS weights 0 in its
    sum), per-token advantages ``[B, T]`` through GRPO's loss, the count of credited statements
    logged; R_EC and R_CS are still computed and logged."""
    from mmboundary.training import rl as rl_module
    from mmboundary.training.rl import train_rl

    seen = {}
    real = rl_module.grpo_args

    def spy(config, weights):
        seen["weights"] = list(weights)
        return real(config, weights)

    monkeypatch.setattr(rl_module, "grpo_args", spy)
    config = RLConfig(model=str(world["model"]), output_dir=str(tmp_path / "out"),
                      train_file=world["train_file"], calibrator=str(world["calibrator"]),
                      max_samples=3, credit="step", beta=2.0, max_steps=1, num_generations=3,
                      per_device_train_batch_size=3, max_completion_length=12, lora_r=4)
    train_rl(config)
    assert seen["weights"] == [1.0, 0.0, 0.0, 0.0]  # alpha, beta, gamma, format
    (row,) = _read_log(tmp_path / "out" / "reward_log.jsonl")
    # only the step-credit trainer logs it (the token placement itself is tested in
    # test_rewards.py on crafted completions; this random tiny model writes no real steps)
    assert "mmb/credited_steps" in row and row["mmb/credited_steps"] >= 0.0
    for name in REWARDS:
        assert f"rewards/{name}/mean" in row


def test_step_credit_refuses_a_trl_without_per_token_advantages(monkeypatch) -> None:
    import trl

    from mmboundary.training.step_credit import MIN_TRL, step_credit_trainer_class

    monkeypatch.setattr(trl, "__version__", "0.25.0")
    with pytest.raises(RuntimeError, match=f"needs trl >= {MIN_TRL}.*installed: 0.25.0"):
        step_credit_trainer_class()
