"""Held-out RL curves (issue #12): the evaluation side of ``training.heldout``.

``heldout_metrics`` is the ``HeldoutMetrics`` the RL run's held-out evaluation calls with the
policy's greedy answers (steps already parsed by the run's parser): ``evaluate_predictions``
with the run's rule set, no bootstrap. ``heldout_curve_png`` plots a run's ``heldout_log.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Response, Sample

#: the evaluation metrics logged per held-out evaluation (``summary.METRICS`` names)
HELDOUT_METRICS = ("accuracy", "ece", "mece", "step_auroc", "step_accuracy", "step_coverage")


def heldout_metrics(samples: Sequence[Sample], responses: Sequence[Response],
                    rules: Any) -> dict[str, float | None]:
    """``HELDOUT_METRICS`` of ``responses`` (one per sample) by ``evaluate_predictions`` with
    ``rules`` (the RL run's ``StepRules``), without bootstrap intervals."""
    from mmboundary.evaluation.evaluate import EvalConfig, evaluate_predictions

    result = evaluate_predictions(samples, responses, rules.similarity, rules=rules,
                                  config=EvalConfig(rules=rules.config, bootstrap=0))
    return {name: result.metrics.get(name) for name in HELDOUT_METRICS}


#: log column -> label; rewards on the left axis, evaluation metrics on the right panel
_REWARDS = {"R_KA": "R_KA", "R_EC": "R_EC", "R_CS": "R_CS"}
_METRICS = {"accuracy": "Acc", "mece": "MECE", "step_auroc": "step AUROC"}


def heldout_curve_png(log: str | Path) -> bytes:
    """Two panels over GRPO steps: the mean rewards and Acc / MECE / step AUROC of the greedy
    held-out answers (``heldout_log.jsonl``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmboundary.data.io import read_jsonl

    rows = list(read_jsonl(Path(log)))
    n = rows[0].get("n") if rows else 0
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, names, title in ((axes[0], _REWARDS, "mean reward"),
                             (axes[1], _METRICS, "evaluation metric")):
        for key, label in names.items():
            points = [(r["step"], float(r[key])) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), label=label, marker="o", linewidth=1)
        ax.set(xlabel="GRPO step", ylabel=title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"greedy answers to {n} held-out questions", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
