"""The step-judge interface: is a predicted step correct against its aligned reference step?

Every calibration number on annotated data rests on this decision (a_t in R_KA and R_EC, MECE,
chain F1, the baselines' agreement), so there is exactly one interface and evaluation, the rewards
and the baselines all call it through :mod:`mmboundary.judging.rules`.

A judge sees *aligned pairs*: alignment (which reference step a predicted step is compared with)
is done before, by :func:`mmboundary.judging.rules.align`; the judge only decides each pair.
Judges are batched: one call judges every pair of a dataset or a GRPO batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class JudgeItem:
    """One (predicted step, aligned reference step) pair and what a judge may read besides.

    ``pred``/``ref``: the step texts (confidence statement already removed from ``pred``).
    ``question``, ``gold_answer``: of the sample (None when unknown). ``reference``: the whole
    reference chain, for judges that check a step against every reference fact.
    ``similarity``: g(pred, ref) from the alignment, when known (saves a second encoder call).
    """

    pred: str
    ref: str
    question: str | None = None
    gold_answer: str | None = None
    reference: tuple[str, ...] = ()
    similarity: float | None = None


@dataclass(frozen=True)
class StepVerdict:
    """A judge's decision on one pair: ``correct``, a ``score`` in [0, 1] (higher = more likely
    correct; the threshold a judge used is its own) and a short human-readable ``reason``."""

    correct: bool
    score: float
    reason: str = ""


@runtime_checkable
class StepJudge(Protocol):
    """``judge(items) -> one StepVerdict per item``, in order; batched; deterministic."""

    name: str

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]: ...


_REGISTRY: dict[str, Callable[..., StepJudge]] = {}


def register_judge(name: str) -> Callable[[Callable[..., StepJudge]], Callable[..., StepJudge]]:
    """Class decorator: make a judge constructible by name (``make_judge(name, **options)``)."""

    def wrap(factory: Callable[..., StepJudge]) -> Callable[..., StepJudge]:
        if name in _REGISTRY:
            raise ValueError(f"a step judge named {name!r} is registered already")
        _REGISTRY[name] = factory
        return factory

    return wrap


def judge_names() -> list[str]:
    """Names accepted by :func:`make_judge` (importing the built-in judges first)."""
    _import_builtin()
    return sorted(_REGISTRY)


def make_judge(name: str, **options: Any) -> StepJudge:
    """Construct a registered judge by name; unknown names raise with the list of known ones."""
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown step judge {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


@dataclass
class JudgeSpec:
    """A judge by name with its options, as configs and the CLI carry it."""

    name: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


def _import_builtin() -> None:
    import importlib

    for module in ("simple", "assertions", "nli", "llm"):
        try:
            importlib.import_module(f"mmboundary.judging.{module}")
        except ModuleNotFoundError as err:  # a judge module not written yet is not an error;
            if err.name != f"mmboundary.judging.{module}":  # a missing dependency inside one is
                raise
