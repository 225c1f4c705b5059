"""The demo's ablations: the rows of the paper's Table 1 as systems, and the stages each runs.

| name | row | stages |
|---|---|---|
| ``wo_rl`` | w/o RL | the main warm-up model alone |
| ``wo_lnlp``, ``wo_mte``, ``wo_tokensar``, ``wo_clips`` | w/o U_X | warm-up on C without X |
| ``w_max`` | w U_Max | warm-up on max-pooled C |
| ``wo_ssmap`` | w/o S-S mapping | warm-up and RL with "(confidence 0.7)" instead of statements |
| ``wo_ka``, ``wo_ec``, ``wo_cs`` | w/o R_KA / R_EC / R_CS | RL from the main warm-up, one reward off |
| ``drl`` | DRL | RL from the vanilla model (no warm-up) |

A warm-up variant gets its own RL (R_CS's calibrator refitted on the variant's own answers with
the variant's estimators) when ``DemoConfig.ablation_rl``; otherwise its row is the warm-up alone
and its name says "(w/o RL)".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmboundary.demo.config import DemoConfig

#: warm-up variants (a calibrator or statement-mode change before the SFT)
WARMUP_VARIANTS = {"wo_lnlp": "w/o U_LNLP", "wo_mte": "w/o U_MTE", "wo_tokensar": "w/o U_TSAR",
                   "wo_clips": "w/o U_CLIPS", "w_max": "w U_Max", "wo_ssmap": "w/o S-S mapping"}
#: RL variants of the main warm-up model: the reward weight set to 0
REWARD_VARIANTS = {"wo_ka": "w/o R_KA", "wo_ec": "w/o R_EC", "wo_cs": "w/o R_CS"}
NUMERIC_ROW = "MMBoundary w/o S-S mapping"


def ablation_name(ablation: str, config: DemoConfig) -> str:
    """The report's display name of an ablation's row."""
    if ablation == "wo_rl":
        return "MMBoundary w/o RL (warm-up only)"
    if ablation == "drl":
        return "DRL (RL without warm-up)"
    if ablation in REWARD_VARIANTS:
        return f"MMBoundary {REWARD_VARIANTS[ablation]}"
    if ablation in WARMUP_VARIANTS:
        return f"MMBoundary {WARMUP_VARIANTS[ablation]}" + ("" if config.ablation_rl
                                                            else " (w/o RL)")
    raise ValueError(f"unknown ablation {ablation!r}")


def statement_mode(name: str) -> str:
    """How a system's steps state confidence: "numeric" for the w/o S-S mapping row."""
    return "numeric" if name.startswith(NUMERIC_ROW) else "statement"


def ablation_models(config: DemoConfig, world: dict[str, Any], est: dict[str, Any],
                    sft: dict[str, Any], vanilla: Path, clip: Path,
                    stage: Callable[..., dict[str, Any]]) -> dict[str, str]:
    """Train what each configured ablation needs (cached stages) and return {row: model}."""
    from mmboundary.demo.stages import reinforce, warmup

    models: dict[str, str] = {}
    for ablation in config.ablations:
        name = ablation_name(ablation, config)
        if ablation == "wo_rl":
            models[name] = sft["model"]
        elif ablation == "drl":
            models[name] = stage("4b/6 DRL baseline (RL without warm-up)", reinforce, config,
                                 world, str(vanilla), sft["calibrator"], clip, name="drl")["model"]
        elif ablation in REWARD_VARIANTS:
            models[name] = stage(f"4b/6 RL variant {ablation}", reinforce, config, world,
                                 sft["model"], sft["calibrator"], clip, name=f"rl-{ablation}",
                                 rl_ablation=ablation)["model"]
        else:
            variant = stage(f"3b/6 warm-up variant {ablation}", warmup, config, world, est,
                            vanilla, variant=ablation)
            models[name] = variant["model"]
            if config.ablation_rl:
                models[name] = stage(f"4b/6 RL of variant {ablation}", reinforce, config, world,
                                     variant["model"], variant["calibrator"], clip,
                                     name=f"rl-{ablation}", variant=ablation)["model"]
    return models
