"""The warm-up's levels from the model's own hidden state (ours; issue #12, an option).

MMBoundary's warm-up teaches each step the level of its fused internal confidence C (METHOD.md
sections 2-3). On ShapesWorld the statements then say what C says and no more, while a linear
probe on the model's last hidden state knows more (README, "Where the signal is"). This module
gives the warm-up another teacher: the level of that probe's probability.

- feature: the model's last-layer hidden state at the step's **last content token**, the vector
  its output layer reads when it is about to write the step's statement (``VLM.hidden_states``,
  the same feature as ``evaluation.probe``);
- label: the step's correctness by the one rule set (``demo.stages.label_steps``); steps whose
  correctness is unknown (unaligned) get a level but do not train the probe;
- probe: ``fit_probe`` (standardised features, L2 logistic regression; the diagnostics' probe
  too), **cross-fitted**: the questions are split into ``folds`` groups and every step is scored
  by the probe fitted on the other groups, so no step's level comes from a probe that saw its
  label (an in-sample probe would be over-confident on exactly the steps it teaches);
- levels: ``confidence.LevelCuts(rule="accuracy")`` fitted on the cross-fitted probabilities,
  so a level's value (2k - 1) / 10 is how often its steps are right, as for C.

A step without a content token (nothing to read the state at) keeps the level it had (C's).
What it does not change: the calibrator of C and the Internal C row (the paper's internal
confidence, a baseline). RL's R_CS, which compares each statement with the scoring model's
internal level i_t, then takes i_t from the same kind of teacher: a ``StepProbe`` fitted on the
RL start model's own answers (``InternalConfidenceScorer(probe=...)``, ``RLConfig.probe``), so
R_CS holds the statements to what they were taught instead of pulling them back to C's levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmboundary.data.schema import Response, Sample

#: default number of question groups the probe is cross-fitted over (ours)
PROBE_FOLDS = 5
#: L2 strength of the probe's logistic regression (sklearn's ``C``, inverse) (ours)
PROBE_C = 1.0


def fit_probe(features: np.ndarray, correct: np.ndarray, c: float = PROBE_C,
              seed: int = 0) -> Any:
    """The probe: ``StandardScaler`` + L2 ``LogisticRegression(C=c)`` fitted on
    ``features`` -> ``correct`` (a scikit-learn pipeline; ``predict_proba`` scores)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=np.float64), np.asarray(correct, dtype=int)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_probe: features of shape {x.shape} and {len(y)} labels")
    if len(set(y.tolist())) < 2:
        raise ValueError(f"fit_probe: the {len(y)} training steps are all "
                         f"{'correct' if y.size and y[0] else 'wrong'}; a probe needs both")
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000,
                                                              random_state=seed)).fit(x, y)


def _auroc(p: np.ndarray, y: np.ndarray) -> float | None:
    """sklearn's ROC AUC; None when one class only (as ``evaluation.metrics.auroc``)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None


@dataclass
class ProbeLevels:
    """What ``teach_probe_levels`` did: the level cuts on the probe's probability, the level
    counts of the taught steps, the cross-fitted probe's AUROC on the labelled steps (how much
    the teacher knows) and the steps that kept C's level (no content token)."""

    cuts: list[float]
    counts: dict[int, int]
    accuracy: dict[int, float | None]
    crossfit_auroc: float | None
    labelled: int
    kept_internal: int
    folds: int
    changed: int = 0
    probe: StepProbe | None = field(default=None, repr=False, compare=False)
    """The probe fitted on every labelled step with these cuts (``fit_step_probe``): R_CS's i_t
    for a model whose steps these are (not in ``to_dict``: ``StepProbe.save`` writes it)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (level keys as strings, as a JSON file gives them back)."""
        return {"cuts": self.cuts, "counts": {str(k): v for k, v in self.counts.items()},
                "accuracy": {str(k): v for k, v in self.accuracy.items()},
                "crossfit_auroc": self.crossfit_auroc, "labelled": self.labelled,
                "kept_internal": self.kept_internal, "folds": self.folds,
                "changed": self.changed}


def crossfit_probabilities(features: np.ndarray, correct: np.ndarray, groups: np.ndarray,
                           folds: int = PROBE_FOLDS, seed: int = 0) -> np.ndarray:
    """P(correct) of every row from a probe fitted on the other groups' labelled rows.

    ``correct``: 1 / 0, NaN = unknown (scored, never fitted on); ``groups``: the question each
    row belongs to (a question's steps stay in one fold). Raises ``ValueError`` when there are
    fewer groups than folds or a fold's training rows hold one class only."""
    from sklearn.model_selection import GroupKFold

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    g = np.asarray(groups)
    if x.ndim != 2 or not len(x) == len(y) == len(g):
        raise ValueError(f"crossfit_probabilities: features {x.shape}, {len(y)} labels, "
                         f"{len(g)} groups")
    if folds < 2:
        raise ValueError(f"crossfit_probabilities: folds must be >= 2, got {folds}")
    if len(set(g.tolist())) < folds:
        raise ValueError(f"crossfit_probabilities: {len(set(g.tolist()))} questions for {folds} "
                         "folds")
    known = np.isfinite(y)
    out = np.full(len(x), np.nan)
    for train, held in GroupKFold(n_splits=folds).split(x, groups=g):
        fit_rows = train[known[train]]
        out[held] = fit_probe(x[fit_rows], y[fit_rows], seed=seed).predict_proba(x[held])[:, 1]
    return out


@dataclass
class StepProbe:
    """A fitted probe teacher: standardisation, logistic regression and the level cuts on its
    probability, as plain numbers (JSON; ``save`` / ``load``). ``fit_step_probe`` makes one;
    ``InternalConfidenceScorer(probe=...)`` uses one for i_t (RL's R_CS, ``RLConfig.probe``)."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    cuts: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    def probability(self, states: np.ndarray) -> np.ndarray:
        """P(correct) of each row of ``states`` [n, hidden]."""
        x = np.atleast_2d(np.asarray(states, dtype=np.float64))
        if x.shape[1] != len(self.coef):
            raise ValueError(f"StepProbe: states of width {x.shape[1]}, the probe reads "
                             f"{len(self.coef)} (a probe fitted on another model?)")
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def levels(self, states: np.ndarray) -> np.ndarray:
        """The level (1..5) of each row's probability."""
        from mmboundary.confidence.fusion import assign_levels

        return assign_levels(self.cuts, self.probability(states))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "step_probe", "mean": self.mean, "scale": self.scale, "coef": self.coef,
                "intercept": self.intercept, "cuts": self.cuts, "info": self.info}

    def save(self, path: str | Path) -> Path:
        from mmboundary.data.io import write_json_atomic

        write_json_atomic(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> StepProbe:
        import json

        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a StepProbe JSON ({err})") from err
        if not isinstance(data, dict) or data.get("kind") != "step_probe":
            raise ValueError(f"{path}: not a StepProbe JSON (expected \"kind\": \"step_probe\")")
        try:
            return cls(mean=[float(v) for v in data["mean"]],
                       scale=[float(v) for v in data["scale"]],
                       coef=[float(v) for v in data["coef"]], intercept=float(data["intercept"]),
                       cuts=[float(v) for v in data["cuts"]], info=dict(data.get("info") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: StepProbe field missing or malformed: {err}") from err


def fit_step_probe(states: np.ndarray, correct: np.ndarray, groups: np.ndarray,
                   folds: int = PROBE_FOLDS, seed: int = 0) -> tuple[StepProbe, np.ndarray]:
    """The probe fitted on every labelled row, with level cuts (accuracy rule) fitted on the
    **cross-fitted** probabilities of the labelled rows (``crossfit_probabilities``), and those
    probabilities (NaN labels: scored, not fitted)."""
    from mmboundary.confidence.fusion import LevelCuts

    x, y = np.asarray(states, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    p = crossfit_probabilities(x, y, groups, folds, seed)
    known = np.isfinite(y)
    cuts = LevelCuts(rule="accuracy").fit(p, [float(v) if k else None
                                              for k, v in zip(known, y, strict=True)])
    pipe = fit_probe(x[known], y[known], seed=seed)
    scaler, logistic = pipe[0], pipe[-1]
    info = {"counts": {str(k): v for k, v in cuts.counts_.items()},
            "accuracy": {str(k): v for k, v in (cuts.accuracy_ or {}).items()},
            "crossfit_auroc": _auroc(p[known], y[known]) if known.any() else None,
            "labelled": int(known.sum()), "rows": len(x), "folds": folds}
    probe = StepProbe(mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist(),
                      coef=logistic.coef_[0].tolist(), intercept=float(logistic.intercept_[0]),
                      cuts=[float(c) for c in cuts.cuts_], info=info)
    return probe, p


def step_rows(states: Sequence[Sequence[Any]], labels: Sequence[Sequence[float | None]],
              names: Sequence[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Stack the steps that have a state: features, labels (NaN = unknown), question groups,
    and where each row came from (response, step)."""
    rows, y, groups, where = [], [], [], []
    for i, (chain, chain_labels) in enumerate(zip(states, labels, strict=True)):
        if len(chain) != len(chain_labels):
            raise ValueError(f"response {names[i]!r}: {len(chain)} states, {len(chain_labels)} "
                             "labels")
        for k, (state, label) in enumerate(zip(chain, chain_labels, strict=True)):
            if state is None:
                continue
            rows.append(np.asarray(state, dtype=np.float64))
            y.append(np.nan if label is None else float(label))
            groups.append(i)
            where.append((i, k))
    if not rows:
        raise ValueError("no step has a content token to read a state at")
    return np.stack(rows), np.asarray(y), np.asarray(groups), where


def step_states(vlm: Any, samples: Sequence[Sample], responses: Sequence[Response],
                load_image: Callable[[Sample], Any],
                batch_size: int = 32) -> list[list[np.ndarray | None]]:
    """Per response, per step: the hidden state at the step's last content token (None when the
    step has no content token). ``responses[i]`` answers ``samples[i]``; their ``steps`` (with
    ``content_end``) say where each step's content ends; one teacher-forced pass per batch."""
    from mmboundary.text import align_steps_to_tokens

    if len(samples) != len(responses):
        raise ValueError(f"step_states: {len(samples)} samples but {len(responses)} responses")
    out: list[list[np.ndarray | None]] = []
    for start in range(0, len(responses), batch_size):
        chunk = list(responses[start:start + batch_size])
        batch = list(samples[start:start + batch_size])
        states = vlm.hidden_states(batch, [load_image(s) for s in batch],
                                   [r.text for r in chunk], batch_size=batch_size)
        for response, (hidden, offsets) in zip(chunk, states, strict=True):
            steps = [s.model_copy() for s in response.steps]
            align_steps_to_tokens(steps, offsets)
            out.append([hidden[s.token_end - 1] if (s.token_end or 0) > (s.token_start or 0)
                        else None for s in steps])
    return out


def teach_probe_levels(responses: Sequence[Response], states: Sequence[Sequence[Any]],
                       labels: Sequence[Sequence[float | None]], *, folds: int = PROBE_FOLDS,
                       seed: int = 0) -> ProbeLevels:
    """Set each step's ``level`` (in place) to the level of its cross-fitted probe probability.

    ``states[i][k]``: step k of response i's hidden state (``step_states``; None = keep its
    level); ``labels[i][k]``: its correctness (1 / 0 / None)."""
    for response, chain in zip(responses, states, strict=True):
        if len(response.steps) != len(chain):
            raise ValueError(f"teach_probe_levels: response {response.sample_id!r} has "
                             f"{len(response.steps)} steps, {len(chain)} states")
    x, y, groups, where = step_rows(states, labels, [r.sample_id for r in responses])
    probe, p = fit_step_probe(x, y, groups, folds, seed)
    from mmboundary.confidence.fusion import assign_levels

    levels = assign_levels(probe.cuts, p)
    changed = 0
    for (i, k), level in zip(where, levels, strict=True):
        step = responses[i].steps[k]
        changed += int(step.level != int(level))
        step.level = int(level)
    kept = sum(len(r.steps) for r in responses) - len(where)
    info = probe.info
    return ProbeLevels(cuts=probe.cuts, counts={int(k): v for k, v in info["counts"].items()},
                       accuracy={int(k): v for k, v in info["accuracy"].items()},
                       crossfit_auroc=info["crossfit_auroc"], labelled=info["labelled"],
                       kept_internal=kept, folds=folds, changed=changed, probe=probe)


def probe_teacher_responses(vlm: Any, samples: Sequence[Sample], responses: Sequence[Response],
                            load_image: Callable[[Sample], Any],
                            label_steps: Callable[[Sequence[Sample], Sequence[Response]],
                                                  list[list[float | None]]], *,
                            folds: int = PROBE_FOLDS, seed: int = 0, batch_size: int = 32,
                            on_failure: Callable[[Any], None] | None = None
                            ) -> tuple[list[Response], ProbeLevels]:
    """The probe teacher on a model's scored answers, record by record (``mmboundary estimate
    probe``): every response that is not a failure line gets its steps' levels from the
    cross-fitted probe on ``vlm``'s hidden states (``teach_probe_levels``).

    Returns the responses in their order (copies; failure lines as given) and what was done,
    ``.probe`` included. A response whose sample is not in ``samples`` or whose image cannot be
    loaded becomes a failure line naming the record and field (reported to ``on_failure``) and
    the rest go on: no response keeps C's levels beside probe levels unannounced."""
    from mmboundary.data.failures import RecordFailure

    by_id = {s.id: s for s in samples}
    out = [r.model_copy(deep=True) for r in responses]

    def fail(i: int, field_name: str, reason: str, message: str) -> None:
        failure = RecordFailure(out[i].sample_id, field_name, reason, message)
        out[i] = Response(sample_id=out[i].sample_id, text=out[i].text, model=out[i].model,
                          meta={**(out[i].meta or {}), **failure.to_meta()})
        if on_failure is not None:
            on_failure(failure)

    todo = []
    for i, response in enumerate(out):
        if "error" in (response.meta or {}):
            continue
        if response.sample_id not in by_id:
            fail(i, "sample_id", "unknown_sample", "not in the samples given (--data): its "
                 "steps can be neither judged nor read")
        elif not response.steps:
            fail(i, "steps", "no_steps", "the response has no steps to level")
        else:
            todo.append(i)
    states: dict[int, list[np.ndarray | None]] = {}
    for start in range(0, len(todo), batch_size):
        images: dict[str, Any] = {}  # sample id -> image, this batch's
        rows = []
        for i in todo[start:start + batch_size]:
            sid = out[i].sample_id
            try:
                images[sid] = images[sid] if sid in images else load_image(by_id[sid])
                rows.append(i)
            except FileNotFoundError as err:  # the reasons of the estimate pipeline's lines
                fail(i, "image", "missing_image", str(err))
            except Exception as err:  # noqa: BLE001 - any unreadable image fails its record only
                fail(i, "image", "bad_image", f"{type(err).__name__}: {err}")
        if rows:
            chunk = step_states(vlm, [by_id[out[i].sample_id] for i in rows],
                                [out[i] for i in rows], lambda s, got=images: got[s.id],
                                batch_size=batch_size)
            states.update(zip(rows, chunk, strict=True))
    if not states:
        from mmboundary.data.failures import NothingSucceededError

        raise NothingSucceededError(f"probe teacher: none of the {len(out)} responses could be "
                                    "read (every record failed)")
    kept = sorted(states)
    chosen = [out[i] for i in kept]
    labels = label_steps([by_id[r.sample_id] for r in chosen], chosen)
    taught = teach_probe_levels(chosen, [states[i] for i in kept], labels, folds=folds,
                                seed=seed)
    return out, taught
