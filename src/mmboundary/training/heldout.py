"""Held-out curves of stage 2: how the policy does on questions it is not trained on, while it
trains (issue #12). RLConfig ``eval_every`` > 0 turns it on.

Before the first GRPO step, every ``eval_every`` steps and after the last, the policy answers the
first ``eval_samples`` questions of ``eval_file`` **greedily** (not the sampled rollouts the
training rewards see), and the answers are scored with

- the training reward functions themselves (``training.rewards``, through the run's
  ``StepAnalyzer``: one rule set, one parser, one i_t scorer): mean R_KA, R_EC, R_CS and format;
- optionally a ``HeldoutMetrics`` callable, e.g. ``evaluation.heldout.heldout_metrics``
  (``evaluate_predictions``: Acc, MECE, step AUROC ...) -- injected by the caller, because
  training sits below evaluation in the layer order (docs/ARCHITECTURE.md).

One JSON line per evaluation in ``output_dir/heldout_log.jsonl``: ``step``, ``n``, ``R_KA``,
``R_EC``, ``R_CS``, ``format``, ``seconds`` and the metrics' keys. Rank 0 only; it generates with
the unwrapped policy, so it suits one process or DDP, not ZeRO-3 sharded weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Response, Sample

#: reward function name -> its column in the log
REWARD_COLUMNS = {"knowledge_accuracy_reward": "R_KA", "expected_calibration_reward": "R_EC",
                  "confidence_self_calibration_reward": "R_CS", "format_reward": "format"}
#: ``(samples, responses with parsed steps, rules) -> {metric: value}``
HeldoutMetrics = Callable[[Sequence[Sample], Sequence[Response], Any], dict[str, float | None]]


def heldout_steps(max_steps: int, every: int) -> list[int]:
    """The optimizer steps after which the held-out set is evaluated (0 = before training).

    >>> heldout_steps(60, 20), heldout_steps(2, 20), heldout_steps(5, 2)
    ([0, 20, 40, 60], [0, 2], [0, 2, 4, 5])
    """
    if every < 1:
        return []
    return sorted({0, *range(every, max_steps + 1, every), max(max_steps, 0)})


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(known) / len(known) if known else None


class HeldoutEvaluation:
    """Greedy answers of ``policy`` (a ``models.vlm.VLM`` whose model is the one being trained)
    to ``samples``, scored by ``reward_funcs`` (TRL-shaped partials bound to ``analyzer``) and
    ``metrics``; ``evaluate(step)`` returns and appends one log row. ``callback()`` is the
    ``transformers.TrainerCallback`` that calls it at ``heldout_steps``."""

    def __init__(self, policy: Any, samples: Sequence[Sample], images: Sequence[Any],
                 analyzer: Any, reward_funcs: Sequence[Any], path: str | Path, every: int, *,
                 max_new_tokens: int = 128, batch_size: int = 16, instruction: str | None = None,
                 metrics: HeldoutMetrics | None = None) -> None:
        if every < 1:
            raise ValueError(f"RLConfig.eval_every: expected >= 1 to evaluate, got {every}")
        if not samples:
            raise ValueError("RLConfig.eval_file: no held-out samples to evaluate on")
        self.policy, self.samples, self.images = policy, list(samples), list(images)
        self.analyzer, self.reward_funcs, self.metrics = analyzer, list(reward_funcs), metrics
        self.path, self.every = Path(path), every
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.instruction = instruction
        self.rows: list[dict[str, Any]] = []

    def answers(self) -> list[str]:
        """The policy's greedy answers (eval mode, no gradients; its mode is restored)."""
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            prompts = [self.policy.prompt_text(s, self.instruction) for s in self.samples]
            gens = self.policy.generate(prompts, self.images, max_new_tokens=self.max_new_tokens,
                                        batch_size=self.batch_size)
        finally:
            model.train(was_training)
        return [g.text for g in gens]

    def evaluate(self, step: int) -> dict[str, Any]:
        start = time.perf_counter()
        texts = self.answers()
        columns = {"sample": [s.model_dump_json() for s in self.samples], "image": self.images}
        row: dict[str, Any] = {"step": step, "n": len(texts)}
        for fn in self.reward_funcs:
            name = getattr(getattr(fn, "func", fn), "__name__", str(fn))
            row[REWARD_COLUMNS.get(name, name)] = _mean(fn(texts, **columns))
        if self.metrics is not None:
            analyses = self.analyzer.analyze(texts, columns["sample"], image=self.images)
            responses = [Response(sample_id=s.id, text=t, steps=[x.model_copy() for x in a.steps])
                         for s, t, a in zip(self.samples, texts, analyses, strict=True)]
            row.update(self.metrics(self.samples, responses, self.analyzer.rules))
        row["seconds"] = round(time.perf_counter() - start, 2)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.append(row)
        return row

    def callback(self) -> Any:
        from transformers import TrainerCallback

        owner = self

        class HeldoutCallback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.is_world_process_zero and 0 in heldout_steps(state.max_steps,
                                                                      owner.every):
                    owner.evaluate(0)

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                step = state.global_step
                if (state.is_world_process_zero and step > 0
                        and step in heldout_steps(state.max_steps, owner.every)):
                    owner.evaluate(step)

        return HeldoutCallback()


def heldout_evaluation(config: Any, policy: Any, analyzer: Any, reward_funcs: Sequence[Any],
                       path: Path, metrics: HeldoutMetrics | None = None) -> HeldoutEvaluation:
    """The ``HeldoutEvaluation`` an ``RLConfig`` asks for (``eval_file``, ``eval_samples``,
    ``eval_every``; answers as long as the rollouts, ``max_completion_length``)."""
    from mmboundary.data.loaders import load_annotated
    from mmboundary.training.rl import sample_image

    if config.eval_file is None or not Path(config.eval_file).is_file():
        raise FileNotFoundError(f"RLConfig.eval_file: eval_every={config.eval_every} needs a "
                                f"held-out sample file, got {config.eval_file!r}")
    samples = load_annotated(Path(config.eval_file), images_dir=config.images_dir).samples
    samples = samples[: config.eval_samples] if config.eval_samples else samples
    return HeldoutEvaluation(policy, samples, [sample_image(s, config.images_dir) for s in samples],
                             analyzer, reward_funcs, path, config.eval_every,
                             max_new_tokens=config.max_completion_length,
                             batch_size=config.eval_batch_size, instruction=config.instruction,
                             metrics=metrics)
