"""The diagnostics table over seeds: each seed's diagnostics.json as mean +- sd (hand values)."""

from __future__ import annotations

from mmboundary.demo.diagnostics import diagnostics_over_seeds


def _seed(probe: float, kept: float | None) -> dict:
    model = {"auroc": probe, "stated_auroc": probe - 0.1, "internal_auroc": None,
             "kind_position_auroc": 0.7, "by_kind": {"answer": {"probe": 0.6, "stated": 0.5}}}
    info = {"split": "test", "probe": {"vanilla": dict(model, stated_auroc=None),
                                       "warm-up + RL": model},
            "levels": {"warm-up + RL": {"kappa": 0.2}}, "content": {}}
    if kept is not None:
        info["content"]["warm-up + RL"] = {"kept": kept, "changed_accuracy": 0.3,
                                           "changed_base_accuracy": 0.5}
    return info


def test_diagnostics_over_seeds_mean_and_sd() -> None:
    table = diagnostics_over_seeds([_seed(0.8, 0.6), _seed(0.7, None)])
    rows = {row[0]: dict(zip(table.header, row, strict=True)) for row in table.rows}
    rl = rows["warm-up + RL"]
    assert rl["Probe AUROC"] == ".750 ± .071"  # mean .75, sd (ddof 1) .0707
    assert rl["Stated AUROC"] == ".650 ± .071"
    assert rl["Internal C AUROC"] == "n/a"
    assert rl["Probe / stated, answer steps"] == ".600 ± .000 / .500 ± .000"
    assert rl["Content kept"] == ".600 ± .000 (n=1)"  # one seed of two has it
    assert rl["Acc of changed chains (now / vanilla)"] == ".300 ± .000 (n=1) / .500 ± .000 (n=1)"
    assert rows["vanilla"]["Stated AUROC"] == "n/a" and rows["warm-up"]["Probe AUROC"] == "n/a"
    assert "over 2 seeds" in table.title


def test_estimator_table_says_what_each_confidence_tells_and_its_weight() -> None:
    from mmboundary.evaluation.diagnostics import estimator_table

    told = {"lnlp": 0.7806, "mte": 0.7777, "clips": 0.336, "fused": 0.7373}
    equal = estimator_table(told, {"method": "mean", "weights": {}})
    assert equal.header == ["Confidence", "Step AUROC", "Fusion weight"]
    assert equal.rows == [["lnlp", ".781", ".333"], ["mte", ".778", ".333"],
                          ["clips", ".336", ".333"], ["fused C (mean)", ".737", ""]]
    # given mean weights are renormalised; fitted weights are shown as fitted
    assert estimator_table(told, {"method": "mean", "weights": {"lnlp": 2.0}}).rows[0][2] == ".500"
    fitted = estimator_table({**told, "mte": None},
                             {"method": "fitted", "weights": {"lnlp": 0.4, "mte": 0.6, "clips": 0.0}})
    assert [row[1:] for row in fitted.rows] == [[".781", ".400"], ["n/a", ".600"], [".336", ".000"],
                                                [".737", ""]]
    assert fitted.rows[-1][0] == "fused C (fitted)"
