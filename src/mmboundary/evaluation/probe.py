"""A linear probe on a model's hidden states: does the model *know* which of its steps are right,
and do its statements say it? (issue #12's diagnostics)

For one VLM (``models.vlm.VLM``, any architecture the package loads) and its own responses:

- steps: the one statement parser (``text.StatementParser``), so a step's content excludes its
  trailing confidence statement, as for the internal-confidence estimators;
- feature x: the last-layer hidden state at the step's **last content token**, from one
  teacher-forced pass over prompt + response (``VLM.hidden_states``: the vector the output layer
  reads after that token, i.e. where the model is about to write the step's statement);
- label y: the step's correctness from the one rule set (``judging.rules.StepRules``: alignment
  to the sample's reference chain, the dataset's step judge, the answer step by its answer).
  Steps left unaligned, steps whose correctness is unknown and steps without a content token are
  left out (counted in ``StepSet.skipped``).

The probe **(ours)** is a logistic regression on standardised features
(``sklearn.preprocessing.StandardScaler`` + ``sklearn.linear_model.LogisticRegression``,
L2, ``C = 1``), fitted on the steps of the train split and scored by AUROC
(``evaluation.metrics.auroc``) on the validation split. Next to it, on the same validation steps:
the AUROC of the stated confidence (steps that state one) and, when given, of the internal
confidence C. A probe far above the stated AUROC = the model knows more than it says.

Controls, because a step's kind alone predicts much (on ShapesWorld the answer step is right
about twice as often as the others): every AUROC also within the answer steps and within the
other steps (``by_kind``), and a baseline logistic regression on the step's kind and position
only (``kind_position_auroc``: answer step or not, step index capped at 3).

What it is not: a calibration metric (AUROC ignores the confidence scale), and not a claim about
any layer but the last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from mmboundary.confidence.probe_teacher import (  # noqa: F401 - one probe, one feature
    PROBE_C,
    fit_probe,
    step_states,
)
from mmboundary.data.schema import Response, Sample
from mmboundary.evaluation.metrics import auroc
from mmboundary.evaluation.tables import Table, fmt_value


@dataclass
class StepSet:
    """The judged steps of one model's responses, one row each.

    ``features[n]``: hidden state at step n's last content token; ``correct[n]``: 1 / 0;
    ``stated[n]``: its expressed confidence (NaN when it states none); ``internal[n]``: internal
    confidence C (None until ``with_internal``); ``keys[n]``: (sample id, step index);
    ``answer_step[n]``: whether it is the step the final answer is read from (None = unknown).
    """

    features: np.ndarray
    correct: np.ndarray
    stated: np.ndarray
    keys: list[tuple[str, int]]
    internal: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    answer_step: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def with_internal(self, scored: Sequence[Response]) -> StepSet:
        """A copy whose ``internal`` is each step's fused C (``Step.confidence``) from
        ``scored`` (``confidence.InternalConfidenceScorer.score`` of the same responses, parsed
        by the same parser); NaN where a response failed or its steps differ."""
        by_key = {(r.sample_id, s.index): s.confidence for r in scored
                  if "error" not in r.meta for s in r.steps}
        values = [by_key.get(k) for k in self.keys]
        internal = np.array([np.nan if v is None else float(v) for v in values])
        return replace(self, internal=internal, skipped=dict(self.skipped))

    def kind_position(self) -> np.ndarray:
        """The control's features: [answer step, index == 0, 1, 2, >= 3]."""
        index = np.minimum([k for _, k in self.keys], 3).astype(int) if self.keys else []
        answer = (np.zeros(len(self)) if self.answer_step is None
                  else self.answer_step.astype(float))
        return np.c_[answer, np.eye(4)[index]] if len(self) else np.zeros((0, 5))


def response_text(response: Response | str | None) -> str | None:
    """The text of a usable response (None for a failed or empty one)."""
    if response is None:
        return None
    if isinstance(response, Response):
        return None if "error" in response.meta or not response.text.strip() else response.text
    return response if response.strip() else None


def collect_steps(vlm: Any, samples: Sequence[Sample], responses: Sequence[Response | str | None],
                  rules: Any, load_image: Callable[[Sample], Any], *, parser: Any = None,
                  batch_size: int = 8) -> StepSet:
    """Features, labels and stated confidences of the judged steps of ``responses`` (one per
    sample, the model's own; see the module docstring). ``rules``: a ``StepRules``;
    ``load_image``: sample -> PIL image; ``parser``: a ``StatementParser`` (default the shared
    one). One teacher-forced pass per ``batch_size`` responses."""
    from mmboundary.text import default_parser

    if len(samples) != len(responses):
        raise ValueError(f"collect_steps: {len(samples)} samples but {len(responses)} responses")
    parser = parser or default_parser()
    usable = [(s, t) for s, r in zip(samples, responses, strict=True)
              if (t := response_text(r)) is not None]
    skipped = {"failed_responses": len(samples) - len(usable), "unaligned": 0, "unknown": 0,
               "no_content_token": 0}
    rows: list[np.ndarray] = []
    correct: list[float] = []
    stated: list[float] = []
    keys: list[tuple[str, int]] = []
    answer_step: list[bool] = []
    steps = parser.parse_many([t for _, t in usable])  # one parse and one judge call for all
    judged = rules.judge_chains([s for s, _ in usable], steps)
    states = step_states(vlm, [s for s, _ in usable],
                         [Response(sample_id=s.id, text=t, steps=chain)
                          for (s, t), chain in zip(usable, steps, strict=True)],
                         load_image, batch_size=batch_size)
    for (sample, _), chain, verdicts, chain_states in zip(usable, steps, judged, states,
                                                          strict=True):
        for step, verdict, state in zip(chain, verdicts.steps, chain_states, strict=True):
            reason = ("unaligned" if verdict.ref_index is None else
                      "unknown" if verdict.correct is None else
                      "no_content_token" if state is None else None)
            if reason is not None:
                skipped[reason] += 1
                continue
            rows.append(state)
            correct.append(float(verdict.correct))  # type: ignore[arg-type]
            stated.append(math.nan if step.expressed_confidence is None
                          else float(step.expressed_confidence))
            keys.append((sample.id, step.index))
            answer_step.append(verdicts.answer_index == step.index)
    width = vlm.model.get_output_embeddings().in_features if not rows else rows[0].shape[0]
    features = np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32)
    return StepSet(features, np.asarray(correct), np.asarray(stated), keys, skipped=skipped,
                   answer_step=np.asarray(answer_step, dtype=bool))


@dataclass(frozen=True)
class ProbeResult:
    """Probe AUROC on the validation steps (``auroc``) and on its own training steps
    (``train_auroc``), with the stated and internal confidence's AUROC on the validation steps
    that carry one (``stated_n`` / ``internal_n`` of them); ``by_kind``: the same within the
    answer steps and within the other steps (``n``, step ``accuracy``, ``probe``, ``stated``,
    ``internal``); ``kind_position_auroc``: the control (module docstring). None where a side
    has one class."""

    auroc: float | None
    train_auroc: float | None
    stated_auroc: float | None
    internal_auroc: float | None
    n_train: int
    n_val: int
    stated_n: int
    internal_n: int
    train_step_accuracy: float | None
    val_step_accuracy: float | None
    kind_position_auroc: float | None = None
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    c: float = PROBE_C
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _known_auroc(scores: np.ndarray | None, correct: np.ndarray) -> tuple[float | None, int]:
    if scores is None:
        return None, 0
    known = np.isfinite(scores)
    return (auroc(scores[known], correct[known]) if known.any() else None), int(known.sum())


def _by_kind(val: StepSet, probe_scores: np.ndarray) -> dict[str, dict[str, Any]]:
    if val.answer_step is None:
        return {}
    out = {}
    for kind, mask in (("answer", val.answer_step), ("other", ~val.answer_step)):
        if not mask.any():
            continue
        y = val.correct[mask]
        out[kind] = {"n": int(mask.sum()), "accuracy": float(y.mean()),
                     "probe": auroc(probe_scores[mask], y),
                     "stated": _known_auroc(val.stated[mask], y)[0],
                     "internal": _known_auroc(None if val.internal is None
                                              else val.internal[mask], y)[0]}
    return out


def _control_auroc(train: StepSet, val: StepSet, seed: int) -> float | None:
    try:
        control = fit_probe(train.kind_position(), train.correct, seed=seed)
    except ValueError:
        return None
    return auroc(control.predict_proba(val.kind_position())[:, 1], val.correct)


def probe_auroc(train: StepSet, val: StepSet, c: float = PROBE_C, seed: int = 0) -> ProbeResult:
    """Fit the probe on ``train``, score it (and the stated / internal confidence, and the
    kind-and-position control) on ``val``."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"probe_auroc: {len(train)} training and {len(val)} validation steps; "
                         "both must be non-empty")
    probe = fit_probe(train.features, train.correct, c, seed)
    score = lambda s: probe.predict_proba(np.asarray(s.features, np.float64))[:, 1]  # noqa: E731
    val_scores = score(val)
    stated_auroc, stated_n = _known_auroc(val.stated, val.correct)
    internal_auroc, internal_n = _known_auroc(val.internal, val.correct)
    return ProbeResult(auroc(val_scores, val.correct), auroc(score(train), train.correct),
                       stated_auroc, internal_auroc, len(train), len(val), stated_n, internal_n,
                       float(train.correct.mean()), float(val.correct.mean()),
                       _control_auroc(train, val, seed), _by_kind(val, val_scores), c,
                       {"train": train.skipped, "validation": val.skipped})


def _pair(d: dict[str, Any], key: str) -> str:
    """"answer / other" AUROCs of one score, from ``by_kind``."""
    kinds = d.get("by_kind") or {}
    return " / ".join(fmt_value((kinds.get(k) or {}).get(key)) for k in ("answer", "other"))


def probe_table(results: dict[str, ProbeResult | dict[str, Any]]) -> Table:
    """One row per model: probe AUROC next to the stated and internal confidence's AUROC, all
    also within answer / other steps, and the kind-and-position control."""
    rows = []
    for name, r in results.items():
        d = r.to_dict() if isinstance(r, ProbeResult) else r
        if "error" in d:  # no probe (e.g. one class in training): say why
            rows.append([name, f"n/a ({d['error']})", *["n/a"] * 7, f"{d.get('n_train', 0)}",
                         f"{d.get('n_val', 0)}"])
            continue
        rows.append([name, fmt_value(d["auroc"]), fmt_value(d["stated_auroc"]),
                     fmt_value(d["internal_auroc"]), fmt_value(d.get("kind_position_auroc")),
                     _pair(d, "probe"), _pair(d, "stated"), _pair(d, "internal"),
                     fmt_value(d["train_auroc"]), f"{d['n_train']}", f"{d['n_val']}"])
    return Table("Linear probe on the hidden states",
                 "Does the model know which of its steps are right? Logistic regression on the "
                 "last-layer hidden state at each step's last content token, trained on the "
                 "train split's aligned steps, AUROC on the validation split's; next to it the "
                 "AUROC of the stated confidence and of the internal confidence C on the same "
                 "validation steps (those that carry one), a control that sees only the step's "
                 "kind and position, and each AUROC within the answer steps / the other steps. "
                 "Probe >> stated: the model knows more than it says.",
                 ["Model", "Probe AUROC (val)", "Stated AUROC", "Internal C AUROC",
                  "Kind+position control", "Probe (answer / other)",
                  "Stated (answer / other)", "Internal C (answer / other)",
                  "Probe AUROC (train)", "Train steps", "Val steps"], rows)
