"""The demo's guided stage without models (issue #17): the choice on validation, abstention
points, the table and plots over seeds, and the series plots of ``evaluation.selective``.
The stage itself runs in ``test_demo.py``'s quick demo."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mmboundary.demo.config import PRESETS
from mmboundary.demo.guided import (
    SHOWN,
    abstention_points,
    check_guided_config,
    choose_setting,
    guided_points,
    guided_report,
    guided_table,
    setting,
)
from mmboundary.evaluation.selective import (
    GuidedSummary,
    PlotPoint,
    accuracy_tokens_series_png,
    mean_points,
    risk_coverage_series_png,
)


def _summary(below: int, tries: int, accuracy: float, tokens: float) -> GuidedSummary:
    return GuidedSummary(label=f"L{below} K{tries}", guide="resample", below=below, tries=tries,
                         n=10, failed=0, answered=10, coverage=1.0, accuracy=accuracy,
                         selective_accuracy=accuracy, tokens=tokens, tries_used=0.0,
                         steps_resampled=0.5 if below > 1 else 0.0, steps_replaced=0.0)


def test_choice_is_the_most_accurate_then_the_cheapest_then_grid_order():
    grid = [_summary(2, 2, .5, 40), _summary(3, 2, .6, 60), _summary(2, 4, .6, 50),
            _summary(3, 4, .6, 50)]
    assert setting(choose_setting(grid)) == "L2 K4"  # .6 at 50 tokens, first in grid order
    assert setting(choose_setting(grid[:2])) == "L3 K2"
    with pytest.raises(ValueError, match="no grid setting"):
        choose_setting([replace(grid[0], accuracy=None)])


def test_abstention_points_answer_the_chains_whose_lowest_level_reaches_l():
    points = abstention_points([1, 2, 3, 3, 6], [0, 0, 1, 0, 1])
    assert [p["coverage"] for p in points] == [1.0, 0.8, 0.6, 0.2, 0.2]
    assert points[0]["selective_risk"] == pytest.approx(0.6)
    assert points[2]["selective_risk"] == pytest.approx(1 / 3)
    assert abstention_points([2, 2], [1, 0])[2] == {"below": 3, "coverage": 0.0,
                                                    "selective_risk": None}


def _info(seed: int, chosen: tuple[int, int]) -> dict:
    systems = {}
    for i, key in enumerate(SHOWN):
        plain = _summary(1, 0, .5 + .1 * i + .01 * seed, 30 + seed).to_dict()
        guided = _summary(*chosen, .55 + .01 * seed, 45 + seed).to_dict()
        systems[key] = {"row": key, "chosen": {"below": chosen[0], "tries": chosen[1]},
                        "validation": {"plain": plain, "grid": [guided]},
                        "plain": plain, "guided": guided, "aurc": .3 + .01 * seed,
                        "abstention": abstention_points([1, 2, 3, 3], [0, 1, 1, 1])}
    return {"split": "test", "validation_questions": 10,
            "grid": {"levels": [2, 3], "tries": [2]}, "systems": systems}


def test_table_and_points_over_seeds(tmp_path):
    one = guided_table([_info(0, (3, 2))])
    assert one.rows[1][:5] == ["MMBoundary (stated C)", "guided", "L3 K2", ".550", ".550"]
    assert one.rows[0][5] == "30.0" and one.rows[0][7] == ".300"
    two = guided_table([_info(0, (3, 2)), _info(2, (2, 2))])
    assert two.rows[1][2] == "L3 K2 (1x), L2 K2 (1x)"
    assert two.rows[0][5] == "31.0 \u00b1 1.4" and "2 runs" in two.caption
    accuracy, risk = guided_points([_info(0, (3, 2)), _info(2, (3, 2))])
    plain, guided = accuracy["Vanilla (internal C)"]
    assert (plain.label, plain.x, plain.n) == ("plain", 31.0, 2)
    assert guided.label == "guided L3 K2" and guided.y == pytest.approx(.56)
    assert [p.label for p in risk["Vanilla (internal C)"]] == ["L1", "L2", "L3"]
    tables, figures = guided_report([_info(0, (3, 2))], tmp_path)
    assert len(tables) == 1 and len(figures) == 2
    assert (tmp_path / "guided_risk_coverage.png").read_bytes()[:4] == b"\x89PNG"


def test_mean_points_and_series_plots():
    points = mean_points([[PlotPoint("a", 1, .5), PlotPoint("b", 2, .6)],
                          [PlotPoint("a", 3, .7)]])
    assert [(p.label, p.n) for p in points] == [("a", 2), ("b", 1)]
    assert points[0].x_sd == pytest.approx(2 ** .5) and points[1].x_sd == 0.0
    series = {"m": points}
    assert accuracy_tokens_series_png(series).startswith(b"\x89PNG")
    assert risk_coverage_series_png(series).startswith(b"\x89PNG")


@pytest.mark.parametrize("field,value", [("guided_levels", (1, 3)), ("guided_levels", ()),
                                         ("guided_tries", (0,)), ("guided_val", -1),
                                         ("guided_temperature", 0.0)])
def test_guided_fields_are_checked(field, value):
    check_guided_config(PRESETS["quick"])
    with pytest.raises(ValueError, match=f"DemoConfig.{field}"):
        check_guided_config(replace(PRESETS["quick"], **{field: value}))
