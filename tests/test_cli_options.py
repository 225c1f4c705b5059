"""Issue #14: CLI options come from the config dataclasses (one option per field, its help the
field's documentation, its default the preset's), explicit options override the YAML and the
preset, and TRL's names (``bf16``, ``fp16``, ``use_cpu``) are used by SFT and RL alike."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mmboundary.cli import app
from mmboundary.cli.dataclass_options import _cli_type, library_default
from mmboundary.demo.config import PRESETS, DemoConfig
from mmboundary.training.config import SFTConfig
from mmboundary.training.config_base import ConfigBase
from mmboundary.training.rl_config import RLConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def command(*path: str) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def options(*path: str) -> dict[str, Any]:
    return {p.name: p for p in command(*path).params if p.param_type_name == "option"}


def simple_fields(cls: Any) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if _cli_type(hints[f.name]) is not None}


@pytest.mark.parametrize(("path", "cls"), [(("demo",), DemoConfig), (("train", "sft"), SFTConfig),
                                           (("train", "rl"), RLConfig)])
def test_every_simple_field_is_an_option_whose_help_is_its_doc(path, cls) -> None:
    opts, docs = options(*path), cls.field_docs()
    assert simple_fields(cls) <= set(opts)
    for name in simple_fields(cls):
        assert opts[name].default is None, name  # None = from the preset / config file
        assert opts[name].help.replace("\\[", "[").startswith(docs[name]), name
        assert f"(default: {library_default(cls, name)!s}" in opts[name].help or \
            isinstance(library_default(cls, name), (tuple, list)), name
    assert len(simple_fields(cls)) >= 20


def test_demo_options_keep_their_names_and_show_preset_values() -> None:
    opts = options("demo")
    assert opts["n_train"].opts == ["--n-train"] and opts["sft_lr"].opts == ["--sft-lr"]
    assert opts["out_dir"].opts == ["--out", "--out-dir"]
    assert opts["eval_split"].opts == ["--split", "--eval-split"]
    assert opts["fresh"].opts == ["--fresh"] and opts["fresh"].secondary_opts == ["--no-fresh"]
    assert opts["n_train"].help.endswith(f"(default: {DemoConfig().n_train}; quick: 48; large: 2000)")
    assert "(default: lnlp,mte,tokensar,clips)" in opts["estimators"].help
    assert {"quick", "preset", "config", "seeds"} <= set(opts)
    assert "extra" not in opts  # a dict: YAML only


@pytest.fixture
def captured(monkeypatch) -> dict[str, Any]:
    """Run the demo command without running the demo: record the config it would run."""
    import mmboundary.demo.run as run

    seen: dict[str, Any] = {}
    monkeypatch.setattr(run, "run_demo_seeds",
                        lambda cfg, seeds: seen.update(cfg=cfg, seeds=seeds))
    return seen


def test_a_demo_option_overrides_the_yaml_which_overrides_the_preset(tmp_path, captured) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("preset: quick\nn_train: 50\nrl_steps: 5\nsft_lr: 0.002\n")
    result = CliRunner().invoke(app, [
        "demo", "--config", str(path), "--rl-steps", "7", "--statements-per-level", "2",
        "--estimators", "lnlp, mte", "--fresh", "--out", str(tmp_path / "o"), "--split",
        "validation", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    cfg = captured["cfg"]
    assert (cfg.rl_steps, cfg.statements_per_level) == (7, 2)  # command line
    assert (cfg.n_train, cfg.sft_lr) == (50, 0.002)  # YAML
    assert (cfg.n_rl, cfg.n_test, cfg.rl_batch) == (24, 40, 8)  # preset quick
    assert cfg.rl_lr == DemoConfig().rl_lr  # dataclass default
    assert cfg.estimators == ("lnlp", "mte") and cfg.fresh is True
    assert (cfg.out_dir, cfg.eval_split, captured["seeds"]) == (str(tmp_path / "o"),
                                                                "validation", 2)


def test_demo_quick_and_preset(captured) -> None:
    result = CliRunner().invoke(app, ["demo", "--quick", "--n-train", "10", "--no-fresh"])
    assert result.exit_code == 0, result.output
    assert captured["cfg"] == dataclasses.replace(PRESETS["quick"], n_train=10, fresh=False)
    result = CliRunner().invoke(app, ["demo", "--preset", "large"])
    assert result.exit_code == 0, result.output
    assert captured["cfg"] == DemoConfig.preset("large")
    assert captured["cfg"].rl_steps == 300


def test_demo_bad_config_fails_naming_the_key(tmp_path, captured) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("n_trian: 5\n")
    result = CliRunner().invoke(app, ["demo", "--config", str(path)])
    assert result.exit_code == 2 and "n_trian" in result.output
    path.write_text("preset: quick\n")
    result = CliRunner().invoke(app, ["demo", "--config", str(path), "--preset", "large"])
    assert result.exit_code == 2 and "large" in result.output
    result = CliRunner().invoke(app, ["demo", "--rl-batch", "10"])  # not a multiple of 4
    assert result.exit_code == 2 and "rl_batch" in result.output
    assert "cfg" not in captured


def test_demo_config_is_one_config_base(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown DemoConfig field\(s\) \['n_trian'\]; known"):
        DemoConfig.from_dict({"n_trian": 5})
    cfg = DemoConfig.from_dict({"preset": "quick", "ablations": ["wo_rl"]}, seed=4)
    assert (cfg.n_train, cfg.ablations, cfg.seed) == (48, ("wo_rl",), 4)
    assert DemoConfig.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    assert cfg.to_dict()["ablations"] == ["wo_rl"]
    assert set(DemoConfig.field_docs()) == {f.name for f in dataclasses.fields(DemoConfig)}


def test_a_yaml_exponent_without_a_dot_is_a_number(tmp_path) -> None:
    """PyYAML reads ``1e-5`` as a string (YAML 1.1 wants ``1.0e-5``): a float field takes it as
    the number it is, not a string that reaches the optimizer; a word is an error naming it."""
    path = tmp_path / "rl.yaml"
    path.write_text("learning_rate: 2e-5\nstep_tau: 5e-1\nalpha: 1\n")
    cfg = RLConfig.from_yaml(path)
    assert (cfg.learning_rate, cfg.step_tau, cfg.alpha) == (2e-5, 0.5, 1)
    assert isinstance(cfg.learning_rate, float)
    path.write_text("learning_rate: fast\n")
    with pytest.raises(ValueError, match=r"rl.yaml: RLConfig.learning_rate: expected a number, "
                                         r"got 'fast'"):
        RLConfig.from_yaml(path)
    assert DemoConfig.from_dict({"rl_lr": "1e-4"}).rl_lr == 1e-4


def test_sft_precision_uses_trls_names(tmp_path) -> None:
    path = tmp_path / "sft.yaml"
    path.write_text("precision: bf16\n")
    with pytest.raises(ValueError, match="precision -> bf16 / fp16"):
        SFTConfig.from_yaml(path)
    path.write_text("device: cpu\n")
    with pytest.raises(ValueError, match="device -> use_cpu"):
        SFTConfig.from_yaml(path)
    path.write_text("precision: fp32\n")
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(path)])
    assert result.exit_code == 2 and "bf16" in result.output
    tiny = SFTConfig.preset("tiny-cpu")
    assert (tiny.use_cpu, tiny.bf16, tiny.fp16) == (True, False, False)
    assert (SFTConfig().bf16, SFTConfig().use_cpu) == (None, None)  # auto, like RLConfig
    assert {"bf16", "use_cpu"} <= {f.name for f in dataclasses.fields(RLConfig)}
    with pytest.raises(ValueError, match="exclusive"):
        SFTConfig(bf16=True, fp16=True)


def test_sft_options_override_yaml_and_preset(tmp_path, monkeypatch) -> None:
    import mmboundary.training.sft as sft

    seen: list[SFTConfig] = []
    monkeypatch.setattr(sft, "train_sft", lambda cfg: seen.append(cfg) or tmp_path)
    path = tmp_path / "sft.yaml"
    path.write_text("preset: tiny-cpu\nlearning_rate: 0.01\nlora_r: 4\n")
    result = CliRunner().invoke(app, [
        "train", "sft", "--config", str(path), "--lr", "0.05", "--epochs", "2",
        "--report-to", "wandb", "--output-dir", str(tmp_path / "run"), "--no-merge-lora"])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    assert (cfg.learning_rate, cfg.num_train_epochs, cfg.report_to) == (0.05, 2.0, ["wandb"])
    assert (cfg.lora_r, cfg.batch_size, cfg.use_cpu) == (4, 8, True)  # YAML, preset
    assert cfg.merge_lora is False and cfg.output_dir == str(tmp_path / "run")


def test_rl_options_override_the_yaml(tmp_path, monkeypatch) -> None:
    import mmboundary.training.rl as rl

    seen: list[RLConfig] = []
    monkeypatch.setattr(rl, "train_rl", lambda cfg: seen.append(cfg) or tmp_path)
    result = CliRunner().invoke(app, [
        "train", "rl", "-c", str(CONFIGS / "rl_default.yaml"), "--max-steps", "3",
        "--ablation", "wo_ka", "--internal-from", "policy", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    default = RLConfig.from_yaml(CONFIGS / "rl_default.yaml")
    assert (cfg.max_steps, cfg.alpha, cfg.internal_from) == (3, 0.0, "policy")
    assert cfg.learning_rate == default.learning_rate and cfg.beta == default.beta
    result = CliRunner().invoke(app, ["train", "rl", "-c", str(CONFIGS / "rl_default.yaml"),
                                      "--internal-from", "nobody"])
    assert result.exit_code == 2  # a Literal field is a choice


def test_world_and_estimate_defaults_are_the_librarys() -> None:
    from mmboundary.confidence.normalize import ConfidenceCalibrator
    from mmboundary.confidence.pipeline import EstimateConfig
    from mmboundary.shapesworld.pretrain_clip import ClipPretrainConfig
    from mmboundary.shapesworld.pretrain_vlm import PretrainConfig

    pretrain = options("world", "pretrain")
    assert (pretrain["steps"].default, pretrain["learning_rate"].default) == (
        PretrainConfig().steps, PretrainConfig().learning_rate)
    assert options("world", "pretrain-clip")["batch_size"].default == \
        ClipPretrainConfig().batch_size
    estimate = {p.name: p for p in command("estimate").params}
    assert estimate["batch_size"].default == EstimateConfig().batch_size
    assert estimate["max_new_tokens"].default == EstimateConfig().max_new_tokens
    assert estimate["estimators"].default == ",".join(EstimateConfig().estimators)
    assert estimate["normalizer"].default == ConfidenceCalibrator().normalizer
    with pytest.raises(KeyError):
        library_default(PretrainConfig, "no_such_field")


def test_sequence_options_parse_their_items() -> None:
    from mmboundary.cli.dataclass_options import field_options

    @dataclasses.dataclass
    class Grid(ConfigBase):
        levels: tuple[int, ...] = (2, 3)
        """Levels."""
        names: list[str] = dataclasses.field(default_factory=list)
        """Names."""
        table: dict[str, int] = dataclasses.field(default_factory=dict)
        """A dict: YAML only."""

    opts = {o.name: o for o in field_options(Grid)}
    assert set(opts) == {"levels", "names"}
    assert opts["levels"].parse("4, 5") == (4, 5) and opts["names"].parse("a,b") == ["a", "b"]
    assert opts["levels"].help == "Levels. Comma-separated. (default: 2,3)"
    with pytest.raises(typer.BadParameter, match="--levels"):
        opts["levels"].parse("4,x")


def test_demo_answer_step_and_reward_weights_options(captured) -> None:
    result = CliRunner().invoke(app, ["demo", "--answer-step", "chain_min",
                                      "--rl-weights", "2,1,0.5"])
    assert result.exit_code == 0, result.output
    assert captured["cfg"].answer_step == "chain_min"
    assert captured["cfg"].rl_weights == (2.0, 1.0, 0.5)
    for bad, field in ((["--answer-step", "last"], "answer_step"),
                       (["--rl-weights", "1,1"], "rl_weights"),
                       (["--rl-weights", "1,-1,1"], "rl_weights")):
        result = CliRunner().invoke(app, ["demo", *bad])
        assert result.exit_code == 2 and field in result.output, (bad, result.output)


def test_the_shipped_validation_config_loads_and_evaluates_on_validation() -> None:
    from pathlib import Path

    cfg = DemoConfig.from_yaml(Path(__file__).parents[1] / "configs" / "demo_validation.yaml")
    assert (cfg.eval_split, cfg.n_val, cfg.guided, cfg.diagnostics) == ("validation", 1500,
                                                                        False, False)
    assert cfg.baselines == ("token-prob", "internal") and cfg.ablations == ("wo_rl",)


def test_resuming_a_folder_made_before_a_field_existed(tmp_path) -> None:
    """A field the folder's record lacks passes at its default (a new field's default keeps the
    old behaviour) and is a change at any other value."""
    import json

    from mmboundary.data.failures import InputError
    from mmboundary.demo.run import check_resume

    cfg = dataclasses.replace(PRESETS["quick"], out_dir=str(tmp_path))
    record = cfg.to_dict()
    del record["answer_step"], record["rl_weights"]
    (tmp_path / "demo_config.json").write_text(json.dumps(record))
    check_resume(cfg)
    with pytest.raises(InputError, match=r"answer_step: '\(not recorded\)' -> 'chain_min'"):
        check_resume(dataclasses.replace(cfg, answer_step="chain_min"))
    with pytest.raises(InputError, match="sft_lr"):
        check_resume(dataclasses.replace(cfg, sft_lr=0.002))


def test_world_pretrain_size_options_build_that_model(tmp_path, monkeypatch) -> None:
    import mmboundary.shapesworld.pretrain_vlm as pv
    from mmboundary.shapesworld.pretrain_vlm import WorldModelSpec

    seen: list = []
    monkeypatch.setattr(pv, "pretrain_world_vlm",
                        lambda out, cfg, callback: seen.append(cfg) or {
                            "steps": cfg.steps, "seconds": 0.0, "final_loss": 1.0})
    result = CliRunner().invoke(app, [
        "world", "pretrain", "--out", str(tmp_path / "m"), "--steps", "2", "--eval-samples", "0",
        "--hidden-size", "192", "--layers", "3", "--intermediate-size", "384"])
    assert result.exit_code == 0, result.output
    spec = seen[0].spec
    assert (spec.hidden_size, spec.num_layers, spec.intermediate_size) == (192, 3, 384)
    assert (spec.vision_hidden_size, spec.vocab_size) == (WorldModelSpec().vision_hidden_size,
                                                         WorldModelSpec().vocab_size)
    result = CliRunner().invoke(app, [
        "world", "pretrain", "--out", str(tmp_path / "n"), "--init-from", str(tmp_path / "m"),
        "--layers", "4"])
    assert result.exit_code == 2 and "architecture" in result.output
    assert len(seen) == 1
