"""Confidence-guided decoding: put the step confidence to work at inference (ours, issue #17).

The paper's motivation is "hallucination snowballing": one wrong step drags the chain down. A
calibrated step confidence says which step is weak while there is still time to act on it. The
chain is decoded step by step (``guidance.stepwise``: a step = one sentence), every question of a
batch advancing together, one step per round. After each round every new step is judged
(``guidance.confidence``: its stated confidence, or the model's internal confidence) and a step
whose level is below ``below``:

- ``guide="resample"``: K = ``tries`` alternatives of that step are sampled from the same prefix
  (one batched call for all low steps of the round, temperature / top-p sampling) and the most
  confident of the low step and its alternatives is kept; ties: the highest mean token log-prob
  **(ours: the low step competes too -- it is already paid for -- and wins exact ties)**; then
  the chain goes on from the kept step.
- ``guide="abstain"``: the chain stops before that step and answers ``abstain_text``
  ("I am not sure."); the response is an abstention (``meta["abstained"]``), which
  ``evaluation.selective`` counts as unanswered, not as a wrong answer.

Compute: a step that is not low costs nothing extra -- with ``below=1`` (nothing is below level
1) a greedy guided chain is, token for token, the plain greedy chain at the same token count.
``below=6`` resamples every step. Every response's ``meta``: ``guide``, ``guide_below``,
``guide_tries`` (K), ``tries_used`` (alternatives sampled), ``steps_resampled``,
``steps_replaced`` (low steps where an alternative won), ``tokens_generated`` (every text token
sampled, discarded alternatives and the abstained step included; stop tokens not counted, as
in ``TokenStats``), ``abstained``, ``step_levels`` (the judged level of each kept step),
``steps_without_confidence`` (kept and abstained-on steps whose level is the ``missing_level``
stand-in: no statement, nothing scorable), ``finished``; an abstention also ``abstained_step``
and ``abstained_level``. ``token_stats`` cover the kept tokens (the ``abstain_text`` has none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mmboundary.data.failures import RecordFailure
from mmboundary.data.schema import Response, Sample, TokenStats
from mmboundary.guidance.confidence import StepConfidenceSource, StepJudgement
from mmboundary.guidance.stepwise import (
    Chunk,
    completed_step_end,
    continue_generation,
    cut_step,
    decode,
)

Guide = Literal["resample", "abstain"]
GUIDES: tuple[str, ...] = ("resample", "abstain")
ABSTAIN_TEXT = "I am not sure."


@dataclass
class GuideConfig:
    """Options of guided decoding; every default is documented.

    guide: "resample" or "abstain" (module docstring).
    below: a step whose level is < ``below`` is low: 1 = none (plain decoding), 6 = every step.
    tries: K, alternatives sampled per low step ("resample").
    max_new_tokens: most tokens of a response (kept tokens; alternatives of a step get what is
        left after the prefix).
    do_sample: sample the chain itself (default greedy); ``temperature``, ``top_p``: sampling of
        the alternatives (and of the chain when ``do_sample``); top-k is off.
    abstain_text: the answer of an abstention.
    """

    guide: Guide = "resample"
    below: int = 3
    tries: int = 4
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    abstain_text: str = ABSTAIN_TEXT

    def __post_init__(self) -> None:
        checks = [("guide", self.guide in GUIDES, f"one of {GUIDES}"),
                  ("below", isinstance(self.below, int) and 1 <= self.below <= 6, "1..6"),
                  ("tries", isinstance(self.tries, int) and self.tries >= 1, ">= 1"),
                  ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
                  ("temperature", self.temperature > 0, "> 0"),
                  ("top_p", 0 < self.top_p <= 1, "in (0, 1]")]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"GuideConfig.{name}: expected {expected}, got "
                                 f"{getattr(self, name)!r}")

    def meta(self) -> dict[str, Any]:
        """The options a response records."""
        resample = self.guide == "resample"
        return {"guide": self.guide, "guide_below": self.below,
                "guide_tries": self.tries if resample else 0,
                **({"guide_temperature": self.temperature, "guide_top_p": self.top_p}
                   if resample else {})}


@dataclass
class _Chain:
    """One question's chain while it is decoded."""

    sample: Sample
    image: Any
    prompt: str
    kept: Chunk = field(default_factory=Chunk)
    tail: Chunk = field(default_factory=Chunk)  # the current step's first tokens (look-ahead)
    done: bool = False
    finished: bool = False
    abstained: bool = False
    tokens: int = 0
    tries: int = 0
    resampled: int = 0
    replaced: int = 0
    levels: list[int] = field(default_factory=list)
    unknown: int = 0
    low: tuple[str, int] | None = None


@dataclass
class _Candidate:
    """A candidate step and the next step's first tokens (None: the chain ends with it)."""

    step: Chunk
    rest: Chunk | None


def _next_steps(vlm: Any, chains: list[_Chain], config: GuideConfig) -> list[_Candidate]:
    """Complete the current step of every chain (one batched call for those that need tokens)."""
    tok = vlm.tokenizer
    budget = [config.max_new_tokens - len(c.kept) - len(c.tail) for c in chains]
    todo = [i for i, c in enumerate(chains)
            if budget[i] > 0 and completed_step_end(decode(tok, c.tail.ids)) is None]
    full = [c.tail for c in chains]
    if todo:
        chunks = continue_generation(
            vlm, [chains[i].prompt for i in todo], [chains[i].image for i in todo],
            [chains[i].kept.ids for i in todo], [chains[i].tail.ids for i in todo],
            [budget[i] for i in todo], do_sample=config.do_sample,
            temperature=config.temperature, top_p=config.top_p)
        for i, chunk in zip(todo, chunks, strict=True):
            chains[i].tokens += len(chunk)
            full[i] = chains[i].tail + chunk
    return [_Candidate(*cut_step(tok, f)) for f in full]


def _key(candidate: _Candidate, judged: StepJudgement) -> tuple[float, float]:
    return judged.value, candidate.step.mean_logprob()


def _resample(vlm: Any, chains: list[_Chain], originals: list[_Candidate],
              judged: list[StepJudgement], source: StepConfidenceSource,
              config: GuideConfig) -> list[tuple[_Candidate, StepJudgement]]:
    """K alternatives of each low step from the same prefix; the most confident candidate."""
    k = config.tries
    alts = continue_generation(
        vlm, [c.prompt for c in chains], [c.image for c in chains], [c.kept.ids for c in chains],
        [[] for _ in chains], [config.max_new_tokens - len(c.kept) for c in chains],
        do_sample=True, temperature=config.temperature, top_p=config.top_p,
        num_return_sequences=k)
    candidates = [_Candidate(*cut_step(vlm.tokenizer, a)) for a in alts]
    rows = [c for c in chains for _ in range(k)]
    alt_judged = source.judge([c.sample for c in rows], [c.image for c in rows],
                              [a.step for a in candidates])
    picked = []
    for i, chain in enumerate(chains):
        chain.tokens += sum(len(a) for a in alts[i * k:(i + 1) * k])
        chain.tries += k
        chain.resampled += 1
        pool = [(originals[i], judged[i])] + list(zip(candidates[i * k:(i + 1) * k],
                                                      alt_judged[i * k:(i + 1) * k], strict=True))
        best = max(pool, key=lambda p: _key(*p))  # the first maximum: the original on ties
        chain.replaced += best[0] is not originals[i]
        picked.append(best)
    return picked


def _accept(chain: _Chain, candidate: _Candidate, judged: StepJudgement) -> None:
    chain.kept = chain.kept + candidate.step
    chain.levels.append(judged.level)
    chain.unknown += not judged.known
    if candidate.rest is None:
        chain.done, chain.finished = True, candidate.step.finished
        chain.tail = Chunk()
    else:
        chain.tail = candidate.rest


def _round(vlm: Any, chains: list[_Chain], source: StepConfidenceSource,
           config: GuideConfig) -> None:
    """One step of every active chain: decode, judge, resample or abstain, accept."""
    candidates = _next_steps(vlm, chains, config)
    judged = source.judge([c.sample for c in chains], [c.image for c in chains],
                          [c.step for c in candidates])
    low = [i for i, j in enumerate(judged) if j.level < config.below]
    if config.guide == "abstain":
        for i in low:
            chains[i].done, chains[i].abstained, chains[i].tail = True, True, Chunk()
            chains[i].unknown += not judged[i].known
            chains[i].low = (decode(vlm.tokenizer, candidates[i].step.ids).strip(),
                             judged[i].level)
    elif low:
        picked = _resample(vlm, [chains[i] for i in low], [candidates[i] for i in low],
                           [judged[i] for i in low], source, config)
        for i, (candidate, judgement) in zip(low, picked, strict=True):
            candidates[i], judged[i] = candidate, judgement
    for chain, candidate, judgement in zip(chains, candidates, judged, strict=True):
        if not chain.done:
            _accept(chain, candidate, judgement)


def _response(vlm: Any, chain: _Chain, config: GuideConfig) -> Response:
    from mmboundary.models.token_stats import decode_offsets

    kept = chain.kept + chain.tail  # a step cut by max_new_tokens stays, as in plain decoding
    text = decode(vlm.tokenizer, kept.ids)
    stats = TokenStats(token_ids=kept.ids, logprobs=kept.logprobs, entropies=kept.entropies,
                       offsets=decode_offsets(vlm.tokenizer, kept.ids, text))
    meta: dict[str, Any] = {
        **config.meta(), "tries_used": chain.tries, "steps_resampled": chain.resampled,
        "steps_replaced": chain.replaced,
        "tokens_generated": chain.tokens, "abstained": chain.abstained,
        "step_levels": chain.levels, "steps_without_confidence": chain.unknown,
        "finished": chain.finished}
    if chain.abstained:
        text = f"{text.rstrip()} {config.abstain_text}".lstrip()
        assert chain.low is not None
        meta.update(abstained_step=chain.low[0], abstained_level=chain.low[1])
    return Response(sample_id=chain.sample.id, text=text, model=vlm.name, token_stats=stats,
                    meta=meta)


def guided_generate(vlm: Any, samples: Sequence[Sample], images: Sequence[Any],
                    source: StepConfidenceSource, config: GuideConfig | None = None, *,
                    instruction: str | None = None, seed: int | None = None) -> list[Response]:
    """One guided ``Response`` per sample, in order; all questions advance one step per round.

    ``images[i]``: the sample's PIL image; ``source``: ``StatedConfidence`` or
    ``InternalConfidence``; ``seed`` seeds torch once before the first round (None: not
    seeded here). Raises on a model error (``generate_guided_responses`` isolates samples).
    """
    import torch

    config = config or GuideConfig()
    if seed is not None:
        torch.manual_seed(seed)
    chains = [_Chain(s, im, vlm.prompt_text(s, instruction))
              for s, im in zip(samples, images, strict=True)]
    while active := [c for c in chains if not c.done]:
        _round(vlm, active, source, config)
    return [_response(vlm, c, config) for c in chains]


def generate_guided_responses(vlm: Any, samples: Sequence[Sample],
                              load_image: Callable[[Sample], Any], source: StepConfidenceSource,
                              config: GuideConfig | None = None, *,
                              instruction: str | None = None, meta: dict[str, Any] | None = None,
                              seed: int | None = None) -> list[Response]:
    """``guided_generate`` with per-sample failures, as ``models.responses.generate_responses``.

    A sample whose image is missing or not decodable, or whose prompt + ``max_new_tokens`` does
    not fit the model's context, is a ``Response`` with ``text == ""`` and ``meta["error"]``
    (``data.failures.RecordFailure``); a batch whose decoding fails is redone sample by sample.
    Every response's ``meta`` = ``meta`` + ``sample_index`` (0) + the guided fields.
    """
    from mmboundary.models.responses import _input_failure

    config = config or GuideConfig()
    base = {"sample_index": 0, **(meta or {})}
    failures: dict[int, RecordFailure] = {}
    ready: list[tuple[int, Any]] = []
    for i, sample in enumerate(samples):
        prompt = vlm.prompt_text(sample, instruction)
        image, failure = _input_failure(vlm, sample, load_image, prompt, config.max_new_tokens)
        if failure is None:
            ready.append((i, image))
        else:
            failures[i] = failure
    done = _isolated(vlm, samples, ready, source, config, instruction, seed, failures)
    out = []
    for i, sample in enumerate(samples):
        if i in failures:
            out.append(Response(sample_id=sample.id, text="", model=vlm.name,
                                meta={**base, **failures[i].to_meta()}))
        else:
            out.append(done[i].model_copy(update={"meta": {**base, **done[i].meta}}))
    return out


def _isolated(vlm: Any, samples: Sequence[Sample], ready: list[tuple[int, Any]],
              source: StepConfidenceSource, config: GuideConfig, instruction: str | None,
              seed: int | None, failures: dict[int, RecordFailure]) -> dict[int, Response]:
    """Guided responses of the ready samples by index; on an error, one sample at a time."""
    if not ready:
        return {}
    try:
        responses = guided_generate(vlm, [samples[i] for i, _ in ready], [im for _, im in ready],
                                    source, config, instruction=instruction, seed=seed)
        return {i: r for (i, _), r in zip(ready, responses, strict=True)}
    except Exception as err:  # noqa: BLE001 - isolate the failing sample one by one
        if len(ready) == 1:
            i = ready[0][0]
            failures[i] = RecordFailure(samples[i].id, "<model pass>", "error",
                                        f"guided generate: {err!r}")
            return {}
        out: dict[int, Response] = {}
        for item in ready:
            out.update(_isolated(vlm, samples, [item], source, config, instruction, None,
                                 failures))
        return out
