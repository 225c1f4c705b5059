"""The one internal-confidence scorer: a model's per-step fused confidence C and level.

METHOD.md sections 2-3 and 6. For responses of a model, ONE teacher-forced pass of that model
(``pipeline.estimate_batch``) gives each step's raw estimator scores on its content tokens; a
fitted ``ConfidenceCalibrator`` turns them into the fused confidence C and a level k. Everything
that needs a step's internal confidence uses this class, so the numbers agree by construction:

- the RL reward R_CS (``training.rl``): i_t = ``scorer(samples, images, texts, steps)``;
- the "Internal C" baseline (``evaluation.baselines.internal_confidence``);
- the demo's warm-up, which turns the vanilla model's levels into statements, and its RL stage,
  which fits the calibrator of the model that scores i_t (``fit_calibrator``).

The value of a step on the statements' scale (``scale``), METHOD.md section 6:

- ``"level"`` (default): the level value (2k - 1) / 10, the number a statement of level k
  stands for, so |e_t - i_t| compares like with like;
- ``"raw"``: the fused C itself. Not recommended for R_CS: a stated level value against a raw C
  rewards always stating the middle level (the raw C of a real model is concentrated, the level
  values spread over .1 .. .9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from mmboundary.confidence.normalize import ConfidenceCalibrator
from mmboundary.confidence.outputs import apply_calibrator, failed
from mmboundary.data.schema import Response, Sample, Step

Scale = Literal["level", "raw"]
SCALES = ("level", "raw")
ImageLoader = Callable[[Sample], tuple[Any, str]]


def internal_value(step: Step, scale: Scale = "level") -> float:
    """A calibrated step's internal confidence on ``scale``: (2 level - 1) / 10 for "level",
    the fused C for "raw"; NaN when the step has none (no content token was scored).

    >>> internal_value(Step(index=0, text="x", start=0, end=1, confidence=0.83, level=4))
    0.7
    """
    if scale == "raw":
        return float("nan") if step.confidence is None else float(step.confidence)
    if step.level is None:
        return float("nan")
    from mmboundary.text.statements import level_to_value

    return level_to_value(step.level)


class InternalConfidenceScorer:
    """Per-step internal confidence of responses, from ``vlm``'s own pass and ``calibrator``.

    Args:
        vlm: the model whose confidence it is (``models.vlm.VLM``); ``None`` when only
            ``calibrate`` is used (responses that already carry raw scores).
        calibrator: a ``ConfidenceCalibrator`` fitted on this model's own steps; it also names the
            estimators that are computed. May be unfitted until ``fit_calibrator`` is called.
        similarity: sentence-similarity model for TokenSAR (needed if the calibrator uses it).
        clip: ``models.clip.ClipScorer`` for CLIPS (needed if the calibrator uses it).
        parser: ``StatementParser`` that finds each step's trailing statement, so only the
            content tokens are scored (None = ``text.statements.default_parser()``).
        parse_statements: False = plain sentences (a vanilla model's responses carry no
            statements; cheaper).
        instruction: the prompt instruction the responses were written under.
        include_question: TokenSAR's s = question + step **(ours: off)**.
        batch_size: responses per teacher-forced pass.
        image_loader: sample -> (PIL image, cache key) when no image is passed
            (None = ``pipeline.default_image_loader()``: the sample's image file).
        scale: "level" (default) or "raw", see the module docstring and ``internal_value``.
        probe: a fitted ``confidence.probe_teacher.StepProbe`` of this model (ours, optional): a
            step's level is then the probe's level of the model's hidden state at the step's
            last content token (a step without a content token keeps C's level); needs
            ``scale="level"``. The teacher of ``DemoConfig.sft_teacher="probe"``.

    ``score`` returns ``Response`` objects (a response that cannot be scored has
    ``meta["error"]``); ``__call__`` is the ``training.step_analysis.InternalConfidence``
    protocol; the reasons of the last call's failures are in ``errors``.
    """

    def __init__(self, vlm: Any, calibrator: ConfidenceCalibrator, *, similarity: Any = None,
                 clip: Any = None, parser: Any = None, parse_statements: bool = True,
                 instruction: str | None = None, include_question: bool = False,
                 batch_size: int = 8, image_loader: ImageLoader | None = None,
                 scale: Scale = "level", probe: Any = None) -> None:
        if scale not in SCALES:
            raise ValueError(f"InternalConfidenceScorer.scale: expected one of {SCALES}, got "
                             f"{scale!r}")
        if batch_size < 1:
            raise ValueError(f"InternalConfidenceScorer.batch_size: expected >= 1, got {batch_size}")
        self.vlm, self.calibrator = vlm, calibrator
        self.similarity, self.clip, self.parser = similarity, clip, parser
        self.parse_statements, self.instruction = parse_statements, instruction
        self.include_question, self.batch_size = include_question, batch_size
        if probe is not None and scale != "level":
            raise ValueError("InternalConfidenceScorer: a probe gives levels; use scale='level'")
        self.image_loader, self.scale, self.probe = image_loader, scale, probe
        self.errors: list[str] = []

    # --- raw scores ----------------------------------------------------------------------------
    def _config(self, **generation: Any) -> Any:
        from mmboundary.confidence.pipeline import EstimateConfig

        return EstimateConfig(estimators=tuple(self.calibrator.estimators),
                              include_question=self.include_question,
                              instruction=self.instruction, batch_size=self.batch_size,
                              keep_token_stats=False, parse_statements=self.parse_statements,
                              **generation)

    def _loader(self, samples: Sequence[Sample], images: Sequence[Any] | None) -> ImageLoader:
        from mmboundary.confidence.pipeline import default_image_loader

        fallback = self.image_loader or default_image_loader()
        if images is None:
            return fallback
        by_id = {s.id: im for s, im in zip(samples, images, strict=True) if im is not None}

        def load(sample: Sample) -> tuple[Any, str]:
            image = by_id.get(sample.id)
            return (image, sample.id) if image is not None else fallback(sample)

        return load

    def raw(self, samples: Sequence[Sample], responses: Sequence[str | Response | None],
            images: Sequence[Any] | None = None, **generation: Any) -> list[Response]:
        """One ``Response`` per sample whose steps carry ``raw_scores`` (not yet calibrated).

        ``responses[i]``: a text (scored in one teacher-forced pass), a ``Response`` with
        ``token_stats`` (its generation statistics are reused) or None (the model generates;
        ``generation`` = ``EstimateConfig`` options such as ``max_new_tokens``). ``images[i]``:
        the sample's PIL image, or None to load it with ``image_loader``. The model is scored
        in eval mode, without gradients, and put back into its mode afterwards.
        """
        from mmboundary.confidence.pipeline import estimate_batch

        if self.vlm is None:
            raise ValueError("InternalConfidenceScorer.vlm is None: scoring responses needs the "
                             "model whose confidence it is")
        config, loader = self._config(**generation), self._loader(samples, images)
        with self._eval_mode():
            out: list[Response] = []
            for start in range(0, len(samples), self.batch_size):
                end = start + self.batch_size
                out += estimate_batch(self.vlm, list(samples[start:end]),
                                      list(responses[start:end]), similarity=self.similarity,
                                      clip=self.clip, parser=self.parser, image_loader=loader,
                                      config=config)
        self.errors = [r.meta["error"] for r in out if failed(r)]
        return out

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """The model in eval mode for a scoring pass, put back into its mode afterwards."""
        model = getattr(self.vlm, "model", None)
        was_training = bool(getattr(model, "training", False))
        if model is not None:
            model.eval()
        try:
            yield
        finally:
            if model is not None:
                model.train(was_training)

    # --- calibrated scores ---------------------------------------------------------------------
    def calibrate(self, responses: Sequence[Response], *, whole: bool = True) -> list[Response]:
        """Fill ``normalized_scores``, ``confidence`` (C) and ``level`` of every step of the
        scored responses in place (failed ones are left alone); returns ``responses``.
        ``whole``: the responses are whole chains ending in their answer step (False: partial
        chains, every step a plain step; ``outputs.apply_calibrator``)."""
        if not self.calibrator.is_fitted:
            raise ValueError("InternalConfidenceScorer.calibrator is not fitted: fit it on this "
                             "model's own steps (fit_calibrator) or load a fitted one")
        apply_calibrator([r for r in responses if not failed(r)], self.calibrator, whole=whole)
        return list(responses)

    def score(self, samples: Sequence[Sample], responses: Sequence[str | Response | None],
              images: Sequence[Any] | None = None, *, whole: bool = True) -> list[Response]:
        """``raw`` then ``calibrate``: each step's C and level (see ``raw`` for the arguments);
        with a ``probe``, the level is the probe's."""
        scored = self.calibrate(self.raw(samples, responses, images), whole=whole)
        if self.probe is not None:
            self._probe_levels(samples, scored, images)
        return scored

    def _states(self, samples: Sequence[Sample], scored: Sequence[Response],
                images: Sequence[Any] | None) -> tuple[list[int], list[list[Any]]]:
        """Hidden states at each step's last content token of the usable responses (their
        indices, and per response per step the state or None)."""
        from mmboundary.confidence.probe_teacher import step_states

        usable = [i for i, r in enumerate(scored) if not failed(r)]
        loader = self._loader(samples, images)
        with self._eval_mode():
            states = step_states(self.vlm, [samples[i] for i in usable],
                                 [scored[i] for i in usable], lambda s: loader(s)[0],
                                 batch_size=self.batch_size)
        return usable, states

    def _probe_levels(self, samples: Sequence[Sample], scored: Sequence[Response],
                      images: Sequence[Any] | None) -> None:
        import numpy as np

        usable, states = self._states(samples, scored, images)
        rows = [(i, k, state) for i, chain in zip(usable, states, strict=True)
                for k, state in enumerate(chain) if state is not None]
        if not rows:
            return
        levels = self.probe.levels(np.stack([state for _, _, state in rows]))
        for (i, k, _), level in zip(rows, levels, strict=True):
            scored[i].steps[k].level = int(level)

    def values(self, response: Response) -> list[float]:
        """The response's per-step internal confidence on ``scale`` (NaN where unknown)."""
        if failed(response):
            return [math.nan] * len(response.steps)
        return [internal_value(step, self.scale) for step in response.steps]

    def __call__(self, samples: Sequence[Sample], images: Sequence[Any], texts: Sequence[str],
                 steps: Sequence[Sequence[Step]]) -> list[list[float]]:
        """i_t for every step of a batch of completions (``step_analysis.InternalConfidence``).

        A completion that cannot be scored (its reason is in ``errors``), or whose steps differ
        from the caller's ``steps``, gets NaN for every step: R_CS then skips it.
        """
        scored = self.score(samples, list(texts), images)
        out = []
        for response, own in zip(scored, steps, strict=True):
            ok = not failed(response) and len(response.steps) == len(own)
            out.append(self.values(response) if ok else [math.nan] * len(own))
        return out

    # --- the calibrator of this model ---------------------------------------------------------
    def fit_calibrator(self, samples: Sequence[Sample],
                       responses: Sequence[str | Response | None] | None = None,
                       images: Sequence[Any] | None = None, *,
                       max_new_tokens: int = 128,
                       label_steps: Callable[[Sequence[Sample], Sequence[Response]],
                                             list[list[float | None]]] | None = None,
                       probe: bool = False, seed: int = 0) -> ConfidenceCalibrator:
        """Fit (a copy of) ``calibrator`` on this model's own steps and use it from now on.

        ``responses`` None = the model answers every sample greedily (up to ``max_new_tokens``)
        **(ours: greedy answers to the training questions, as for the vanilla model in stage
        1)**. ``label_steps(samples, responses)``: each step's correctness against the samples'
        references (``judging.StepRules.step_labels``), needed when the calibrator's level rule
        is ``accuracy``. Returns the fitted calibrator (its ``levels_.counts_`` are the level
        counts). ``probe``: also fit a ``StepProbe`` on the same steps' hidden states and labels
        (``confidence.probe_teacher.fit_step_probe``; needs ``label_steps``) and use it from now on
        (``self.probe``).
        """
        if probe and label_steps is None:
            raise ValueError("InternalConfidenceScorer.fit_calibrator: probe=True needs "
                             "label_steps (the steps' correctness)")
        if self.calibrator.needs_labels and label_steps is None:
            raise ValueError("InternalConfidenceScorer.fit_calibrator: the calibrator (level rule "
                             f"{self.calibrator.levels.rule!r}, fusion "
                             f"{self.calibrator.fusion.method!r}) needs label_steps (the steps' "
                             "correctness)")
        responses = [None] * len(samples) if responses is None else list(responses)
        scored = [r for r in self.raw(samples, responses, images, max_new_tokens=max_new_tokens)
                  if not failed(r)]
        labels: list[float | None] | None = None
        judged: list[list[float | None]] = []
        by_id = {s.id: s for s in samples}
        if label_steps is not None:
            judged = label_steps([by_id[r.sample_id] for r in scored], scored)
            labels = [y for r, chain in zip(scored, judged, strict=True)
                      for _, y in zip(r.steps, chain, strict=True)]
        # every step, so the chains stay whole (a step with no score has no C and is not fitted)
        raw_scores = [step.raw_scores for r in scored for step in r.steps]
        try:
            self.calibrator = self.calibrator.clone().fit(raw_scores, labels,
                                                          [len(r.steps) for r in scored])
        except ValueError as err:
            raise ValueError(f"InternalConfidenceScorer.fit_calibrator: "
                             f"{sum(1 for r in raw_scores if r)} scored "
                             f"steps in {len(scored)}/{len(samples)} responses: {err}") from err
        if probe:
            from mmboundary.confidence.probe_teacher import fit_step_probe, step_rows

            mine = [by_id[r.sample_id] for r in scored]
            image_of = (None if images is None
                        else dict(zip([s.id for s in samples], images, strict=True)))
            _, states = self._states(mine, scored,
                                     None if image_of is None else [image_of[s.id] for s in mine])
            x, y, groups, _ = step_rows(states, judged, [r.sample_id for r in scored])
            self.probe, _ = fit_step_probe(x, y, groups, seed=seed)
        return self.calibrator
