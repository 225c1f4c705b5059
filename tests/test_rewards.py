"""Stage 2 rewards: hand-computed values on crafted completions, sharing, logging, properties.

Similarity is a word-overlap (Jaccard) stand-in for MiniLM so every a_t is computable by hand;
statements are parsed by the real ``StatementParser`` (exact bank matches need no model).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmboundary.data.schema import ReferenceChain, Sample
from mmboundary.judging.rules import RuleConfig, StepRules
from mmboundary.text import StatementParser
from mmboundary.training.rewards import (
    confidence_self_calibration,
    confidence_self_calibration_reward,
    expected_calibration,
    expected_calibration_reward,
    format_reward,
    knowledge_accuracy,
    knowledge_accuracy_reward,
)
from mmboundary.training.step_analysis import StepAnalyzer


class Overlap:
    """g(a, b) = |words(a) & words(b)| / |words(a) | words(b)|."""

    @staticmethod
    def _words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9']+", text.lower()))

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        out = np.zeros((len(a), len(b)))
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                wx, wy = self._words(x), self._words(y)
                out[i, j] = len(wx & wy) / max(len(wx | wy), 1)
        return out


class FlatInternal:
    """A scorer that finds every step ``value`` sure; counts its (batched) calls."""

    def __init__(self, value: float) -> None:
        self.value, self.calls = value, 0

    def __call__(self, samples, images, texts, steps):
        self.calls += 1
        return [[self.value] * len(s) for s in steps]


SAMPLE = Sample(
    id="s1", dataset="toy", question="How many red circles are there?", answers=["2"],
    reference=ReferenceChain(image_level=["There are two red circles."],
                             reasoning_level=["The circles are on the left.",
                                              "So, the answer is 2."]))
COLUMN = SAMPLE.model_dump_json()

PERFECT = ("There are two red circles, with total certainty. The circles are on the left, with "
           "total certainty. So, the answer is 2, with total certainty.")
OVERCONFIDENT = ("There are three blue squares, with total certainty. "
                 "So, the answer is 3, with total certainty.")
HUMBLE_WRONG = "There are three blue squares, but this is just a guess."
NO_STATEMENTS = "There are two red circles. So, the answer is 2."
NO_ANSWER = "There are two red circles, with total certainty."


def make_analyzer(internal: float | None = None, **kwargs) -> StepAnalyzer:
    # tau 0.7: "So, the answer is 3" shares 4/6 words with "So, the answer is 2" (0.67): not correct
    rules = StepRules(RuleConfig(judge="similarity", tau=0.7), similarity=Overlap())
    return StepAnalyzer(parse=StatementParser(similarity=Overlap()).parse, rules=rules,
                        internal=None if internal is None else FlatInternal(internal), **kwargs)


def rewards(texts: list[str], internal: float = 0.9, sample: str = COLUMN) -> dict[str, list]:
    analyzer = make_analyzer(internal)
    cols = [sample] * len(texts)
    return {
        "ka": knowledge_accuracy_reward(texts, cols, analyzer=analyzer),
        "ec": expected_calibration_reward(texts, cols, analyzer=analyzer),
        "cs": confidence_self_calibration_reward(texts, cols, analyzer=analyzer),
        "fmt": format_reward(texts, cols, analyzer=analyzer),
    }


def test_perfect_completion() -> None:
    r = rewards([PERFECT], internal=0.9)
    assert r["ka"] == [1.0]  # ans 1, a = [1, 1, 1]
    assert r["ec"] == [pytest.approx(0.99)]  # 1 - mean (0.9 - 1)^2
    assert r["cs"] == [pytest.approx(1.0)]  # e_t = i_t = 0.9
    assert r["fmt"] == [1.0]


def test_overconfident_wrong_steps_are_punished_and_humility_rewarded() -> None:
    r = rewards([OVERCONFIDENT, HUMBLE_WRONG], internal=0.1)
    # a = [0, 0], ans = 0; e = [0.9, 0.9]
    assert r["ka"] == [0.0, 0.0]
    assert r["ec"] == [pytest.approx(1 - 0.81), pytest.approx(1 - 0.01)]  # e = 0.1 for the humble
    assert r["cs"] == [pytest.approx(0.2), pytest.approx(1.0)]
    assert r["fmt"] == [1.0, 0.5]  # the humble one states no answer


def test_missing_statements_count_half_and_lower_format() -> None:
    analyzer = make_analyzer(0.7)
    r_ec = expected_calibration_reward([NO_STATEMENTS], [COLUMN], analyzer=analyzer)
    r_cs = confidence_self_calibration_reward([NO_STATEMENTS], [COLUMN], analyzer=analyzer)
    (analysis,) = analyzer.analyze([NO_STATEMENTS], [COLUMN])
    assert analysis.expressed == [0.5, 0.5] and analysis.step_correct == [1.0, 1.0]
    assert r_ec == [pytest.approx(0.75)]  # 1 - (0.25 + 0.25) / 2
    assert r_cs == [pytest.approx(0.8)]  # 1 - |0.5 - 0.7|
    assert analysis.format == 0.5  # no statement (0) + an answer step (0.5)
    assert "no confidence statement in 2/2 steps" in analysis.problems


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_completion_scores_zero_without_raising(text: str) -> None:
    r = rewards([text])
    assert r == {"ka": [0.0], "ec": [0.0], "cs": [0.0], "fmt": [0.0]}
    (analysis,) = make_analyzer(0.5).analyze([text], [COLUMN])
    assert analysis.problems == ["empty completion"]


def test_no_answer_step() -> None:
    r = rewards([NO_ANSWER], internal=0.9)
    assert r["ka"] == [0.5]  # ans 0 + 0.5 * a(=1)
    assert r["ec"] == [pytest.approx(0.99)]
    assert r["fmt"] == [0.5]
    (analysis,) = make_analyzer().analyze([NO_ANSWER], [COLUMN])
    assert analysis.answer is None and any(p.startswith("no answer step") for p in analysis.problems)


def test_unknown_correctness_is_none_like_trl() -> None:
    bare = Sample(id="s2", dataset="toy", question="How many?").model_dump_json()
    r = rewards([PERFECT], internal=0.9, sample=bare)
    assert r["ka"] == [None] and r["ec"] == [None]
    assert r["cs"] == [pytest.approx(1.0)]  # R_CS needs no gold


def test_conversational_completions_and_multiple_choice() -> None:
    mc = Sample(id="mc", dataset="toy", question="Colour?", choices=["red", "blue"],
                correct_choice_idx=1,
                reference=ReferenceChain(reasoning_level=["So, the answer is blue."]))
    texts = [[{"role": "assistant", "content": "So, the answer is blue, with total certainty."}],
             [{"role": "assistant", "content": "So, the answer is red, with total certainty."}]]
    r = knowledge_accuracy_reward(texts, [mc.model_dump_json()] * 2, analyzer=make_analyzer())
    assert r == [1.0, 0.0]  # "red": 4/6 words shared with the reference step, < tau


def test_three_rewards_share_one_analysis() -> None:
    analyzer = make_analyzer(0.5)
    calls = {"parse": 0}
    parse = analyzer._parse

    def counting(text: str):
        calls["parse"] += 1
        return parse(text)

    analyzer._parse = counting
    texts = [PERFECT, OVERCONFIDENT, PERFECT]  # a duplicate completion is parsed once too
    cols = [COLUMN] * 3

    class State:
        global_step = 0

    for fn in (knowledge_accuracy_reward, expected_calibration_reward,
               confidence_self_calibration_reward, format_reward):
        fn(texts, cols, analyzer=analyzer, trainer_state=State())
    assert calls["parse"] == 2 and analyzer.internal.calls == 1
    State.global_step = 1  # a new training step: i_t may have moved (policy scoring)
    knowledge_accuracy_reward(texts, cols, analyzer=analyzer, trainer_state=State())
    assert calls["parse"] == 4 and analyzer.internal.calls == 2


def test_logging_once_per_batch_with_readable_names() -> None:
    from collections import defaultdict

    extra, metrics = defaultdict(list), defaultdict(list)
    analyzer = make_analyzer(0.5)
    texts, cols = [PERFECT, ""], [COLUMN] * 2
    for fn in (knowledge_accuracy_reward, expected_calibration_reward):
        fn(texts, cols, analyzer=analyzer, log_extra=lambda k, v: extra[k].extend(v),
           log_metric=lambda k, v: metrics[k].append(v))
    assert extra["mmb/problems"] == ["", "empty completion"]
    assert extra["mmb/answer"] == ["2", None]
    assert metrics["mmb/answer_accuracy"] == [0.5] and metrics["mmb/format_score"] == [0.5]

    from trl.trainer.utils import get_callable_name

    bound = functools.partial(expected_calibration_reward, analyzer=analyzer)
    assert get_callable_name(bound) == "expected_calibration_reward"


def test_cs_needs_a_scorer_and_skips_unscorable_steps() -> None:
    with pytest.raises(ValueError, match="internal-confidence scorer"):
        confidence_self_calibration_reward([PERFECT], [COLUMN], analyzer=make_analyzer())
    assert confidence_self_calibration([0.9, 0.1], [0.5, float("nan")]) == pytest.approx(0.6)
    assert np.isnan(confidence_self_calibration([0.9], [float("nan")]))


def test_parser_failure_scores_low() -> None:
    def broken(text: str):
        raise RuntimeError("boom")

    analyzer = StepAnalyzer(parse=broken, similarity=Overlap())
    assert expected_calibration_reward(["Anything."], [COLUMN], analyzer=analyzer) == [0.0]
    (analysis,) = analyzer.analyze(["Anything."], [COLUMN])
    assert analysis.problems[0].startswith("unparseable: RuntimeError")


unit = st.floats(0.0, 1.0)


@given(st.lists(st.tuples(unit, st.integers(0, 1)), min_size=1, max_size=8))
def test_ec_is_one_minus_stepwise_brier(pairs: list[tuple[float, int]]) -> None:
    e, a = [p[0] for p in pairs], [float(p[1]) for p in pairs]
    brier = sum((x - y) ** 2 for x, y in pairs) / len(pairs)  # RLCR's term, averaged over steps
    assert expected_calibration(e, a) == pytest.approx(1 - brier, abs=1e-9)
    assert 0.0 <= expected_calibration(e, a) <= 1.0
    assert knowledge_accuracy(1.0, a) >= knowledge_accuracy(0.0, a)


@given(st.lists(st.tuples(unit, unit), min_size=1, max_size=8))
def test_cs_bounds(pairs: list[tuple[float, float]]) -> None:
    e, i = [p[0] for p in pairs], [p[1] for p in pairs]
    value = confidence_self_calibration(e, i)
    assert 0.0 <= value <= 1.0
    assert confidence_self_calibration(e, e) == pytest.approx(1.0)


def test_cs_squared_form_by_hand_and_what_each_form_pays_an_unsure_policy() -> None:
    """R_CS's two distances (``RLConfig.cs_form``): by hand, and the reason to offer the
    squared one. A policy that cannot tell whether a step's i_t is level 1 (.1, 60% of such
    steps) or level 5 (.9, 40%) and states one value for all of them: under |e - i| the best
    value is the median, .1 (its expected R_CS beats the mean's .42); under (e - i)^2 it is the
    mean, .42 (which beats stating .1 or the middle level .5)."""
    assert confidence_self_calibration([0.9, 0.1], [0.5, 0.5], form="squared") == \
        pytest.approx(1 - (0.16 + 0.16) / 2)
    assert np.isnan(confidence_self_calibration([0.3], [float("nan")], form="squared"))
    with pytest.raises(ValueError, match="R_CS form"):
        confidence_self_calibration([0.5], [0.5], form="l1")
    from mmboundary.demo.config import DemoConfig
    from mmboundary.training.rl_config import RLConfig

    with pytest.raises(ValueError, match="RLConfig.cs_form"):
        RLConfig(cs_form="l1", gamma=0.0)
    with pytest.raises(ValueError, match="rl_cs_form"):
        DemoConfig(rl_cs_form="l1")
    internal = np.array([0.1] * 6 + [0.9] * 4)

    def paid(value: float, form: str) -> float:
        return confidence_self_calibration([value] * len(internal), internal, form=form)

    grid = np.round(np.arange(0.0, 1.001, 0.01), 2)
    assert grid[np.argmax([paid(v, "abs") for v in grid])] == pytest.approx(0.1)
    assert grid[np.argmax([paid(v, "squared") for v in grid])] == pytest.approx(0.42)
    assert paid(0.42, "squared") > max(paid(0.1, "squared"), paid(0.5, "squared"))


def _synthetic_rollouts(seed: int = 0, n: int = 400, steps: int = 5) -> np.ndarray:
    """Fused C of n rollouts x steps: concentrated around the middle, as a real model's C is."""
    return np.clip(np.random.default_rng(seed).normal(0.5, 0.1, (n, steps)), 0.0, 1.0)


def _mean_cs(expressed: np.ndarray, internal: np.ndarray) -> float:
    return float(np.mean([confidence_self_calibration(e, i)
                          for e, i in zip(expressed, internal, strict=True)]))


def test_cs_on_the_level_scale_rewards_the_taught_levels_over_always_level_3() -> None:
    """METHOD.md section 6's synthetic check: a model that states the level it was taught
    (the level of its own C) against one that always states level 3 ("but I can't be entirely
    sure", 0.5)."""
    from mmboundary.confidence.fusion import LevelCuts
    from mmboundary.text.statements import level_to_value

    fused = _synthetic_rollouts()
    cuts = LevelCuts().fit(fused.ravel())
    values = np.vectorize(level_to_value)(cuts.transform(fused))  # (2k - 1) / 10
    taught, middle = values, np.full_like(fused, 0.5)
    noisy_fused = fused + np.random.default_rng(1).normal(0.0, 0.05, fused.shape)
    noisy = np.vectorize(level_to_value)(cuts.transform(noisy_fused))  # levels learned roughly
    # old scale, i_t = the raw fused C: the middle level wins (the bug)
    assert _mean_cs(taught, fused) == pytest.approx(0.911, abs=0.005)
    assert _mean_cs(middle, fused) == pytest.approx(0.920, abs=0.005)
    assert _mean_cs(middle, fused) > _mean_cs(taught, fused)
    # new scale, i_t = the level value of C: stating the taught level wins, even roughly learned
    assert _mean_cs(taught, values) == pytest.approx(1.0)
    assert _mean_cs(middle, values) == pytest.approx(0.85, abs=0.01)  # 1 - (.0668*.8 + .2417*.4)
    assert _mean_cs(taught, values) > _mean_cs(noisy, values) > _mean_cs(middle, values)


def test_a_step_stated_as_a_guess_pays_more_wrong_at_equal_weights() -> None:
    """docs/RL.md: a two-step chain, the first step stated at level 1 (0.1), the answer (right)
    at level 3 (0.5). Turning the first step from wrong to right: R_KA 0.75 -> 1.0 (+0.5 / T),
    R_EC 1 - (0.01 + 0.25) / 2 = 0.87 -> 1 - (0.81 + 0.25) / 2 = 0.47 (-0.8 / T); at weights (1, 1)
    the wrong step earns 0.15 more, at (2, 1) the right one earns 0.1 more."""
    from mmboundary.training.rewards import correctness_incentive

    e = [0.1, 0.5]
    right, wrong = [1.0, 1.0], [0.0, 1.0]
    d_ka = knowledge_accuracy(1.0, right) - knowledge_accuracy(1.0, wrong)
    d_ec = expected_calibration(e, right) - expected_calibration(e, wrong)
    assert (d_ka, d_ec) == (pytest.approx(0.25), pytest.approx(-0.40))
    for alpha, beta, gain in [(1.0, 1.0, -0.15), (2.0, 1.0, 0.10), (1.6, 1.0, 0.0)]:
        assert alpha * d_ka + beta * d_ec == pytest.approx(gain)
        assert correctness_incentive(alpha, beta, 0.1, 2) == pytest.approx(gain)
    with pytest.raises(ValueError, match="steps"):
        correctness_incentive(1.0, 1.0, 0.1, 0)


@given(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.integers(1, 6), st.integers(0, 5),
       st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_correctness_incentive_matches_the_rewards(e: float, steps: int, right_before: int,
                                                   alpha: float, beta: float) -> None:
    """The closed form equals the change of alpha R_KA + beta R_EC on any chain of level values
    when one more non-answer step is right; with alpha >= 1.6 beta it is never negative."""
    from mmboundary.training.rewards import correctness_incentive

    right_before = min(right_before, steps - 1)
    before = [1.0] * right_before + [0.0] * (steps - right_before)
    after = [1.0] * (right_before + 1) + [0.0] * (steps - right_before - 1)
    expressed = [e] * steps
    change = (alpha * (knowledge_accuracy(1.0, after) - knowledge_accuracy(1.0, before))
              + beta * (expected_calibration(expressed, after)
                        - expected_calibration(expressed, before)))
    assert correctness_incentive(alpha, beta, e, steps) == pytest.approx(change, abs=1e-9)
    if alpha >= 1.6 * beta:
        assert correctness_incentive(alpha, beta, e, steps) >= -1e-12


# ---------------------------------------------------------------------------------------------
# Credit per step (training.step_credit, RLConfig.credit = "step")
# ---------------------------------------------------------------------------------------------
def test_step_scores_and_their_standardisation_by_hand() -> None:
    """PERFECT (e .9 .9 .9, a 1 1 1) and OVERCONFIDENT (e .9 .9, a 0 0), i_t .9 everywhere:
    s = -(e - a)^2 - |e - i| = -.01 x 3 and -.81 x 2; mean -.33, sd sqrt(.1536)."""
    from mmboundary.training.step_credit import standardise, step_scores

    analyses = make_analyzer(0.9).analyze([PERFECT, OVERCONFIDENT], [COLUMN] * 2)
    scores = [step_scores(a, beta=1.0, gamma=1.0) for a in analyses]
    assert scores == [pytest.approx([-0.01] * 3), pytest.approx([-0.81] * 2)]
    sd = np.sqrt(0.1536) + 1e-4
    z = standardise(scores)
    assert z == [pytest.approx([0.32 / sd] * 3), pytest.approx([-0.48 / sd] * 2)]
    # beta only (w/o R_CS); steps without a statement count e = 0.5 as in R_EC (right steps:
    # -(.5 - 1)^2 - |.5 - .9| = -.65); unknown correctness; a lone score
    assert step_scores(analyses[1], beta=2.0, gamma=0.0) == pytest.approx([-1.62, -1.62])
    (bare,) = make_analyzer(0.9).analyze([NO_STATEMENTS], [COLUMN])
    assert step_scores(bare, 1.0, 1.0) == pytest.approx([-0.65, -0.65])
    # cs_form "squared": -(.5 - 1)^2 - (.5 - .9)^2 = -.41
    assert step_scores(bare, 1.0, 1.0, cs_form="squared") == pytest.approx([-0.41, -0.41])
    unknown = Sample(id="u", dataset="toy", question="?", answers=["2"]).model_dump_json()
    (blind,) = make_analyzer(0.9).analyze([PERFECT], [unknown])
    assert step_scores(blind, 1.0, 1.0) == [None] * 3
    assert standardise([[None, -0.5]]) == [[None, 0.0]]


def test_token_advantages_put_each_statement_score_on_its_own_tokens(tiny_model_dir) -> None:
    """Content tokens keep the completion's advantage; the tokens of ", with total certainty"
    get the step's z_t; padding keeps the row's value (the loss masks it)."""
    import torch
    from transformers import AutoTokenizer

    from mmboundary.training.step_credit import standardise, step_scores, token_advantages

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("llava"))
    texts = [PERFECT, OVERCONFIDENT]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded)) + 2
    ids = torch.tensor([e + [tokenizer.pad_token_id or 0] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    analyses = make_analyzer(0.9).analyze(texts, [COLUMN] * 2)
    z = standardise([step_scores(a, 1.0, 1.0) for a in analyses])
    out, credited = token_advantages(torch.tensor([0.7, -0.7]), ids, mask, texts, analyses,
                                     tokenizer, beta=1.0, gamma=1.0)
    assert out.shape == ids.shape and credited == 5
    for b, text in enumerate(texts):
        statement = [i for i in range(len(encoded[b])) if out[b, i] == pytest.approx(z[b][0])]
        content = [i for i in range(len(encoded[b])) if out[b, i] == pytest.approx([0.7, -0.7][b])]
        assert len(statement) + len(content) == len(encoded[b])
        said = tokenizer.decode([encoded[b][i] for i in statement])
        assert said.count("total certainty") == text.count("total certainty")
        kept = tokenizer.decode([encoded[b][i] for i in content])
        assert "certainty" not in kept and ("circles" in kept or "squares" in kept)
        assert torch.all(out[b, len(encoded[b]):] == [0.7, -0.7][b])


def test_a_step_without_statement_is_credited_on_its_final_punctuation(tiny_model_dir) -> None:
    """NO_STATEMENTS's two steps (no statement, right: s = -.65 each) beside PERFECT's three
    (-.01 each): the steps' final "." carry the bare steps' z; nothing else of them changes."""
    import torch
    from transformers import AutoTokenizer

    from mmboundary.training.step_credit import (
        credit_span,
        standardise,
        step_scores,
        token_advantages,
    )

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("llava"))
    texts = [NO_STATEMENTS, PERFECT]
    analyses = make_analyzer(0.9).analyze(texts, [COLUMN] * 2)
    assert [NO_STATEMENTS[slice(*credit_span(NO_STATEMENTS, st))] for st in analyses[0].steps] \
        == [".", "."]
    z = standardise([step_scores(a, 1.0, 1.0) for a in analyses])
    assert z[0][0] == pytest.approx(-0.384 / (np.sqrt(0.098304) + 1e-4))  # mean -.266
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    out, credited = token_advantages(torch.tensor([0.3, 0.3]), ids, mask, texts, analyses,
                                     tokenizer, beta=1.0, gamma=1.0)
    assert credited == 5
    hit = [i for i in range(len(encoded[0])) if out[0, i] != pytest.approx(0.3)]
    assert len(hit) == 2 and all(out[0, i] == pytest.approx(z[0][0]) for i in hit)
    assert all(tokenizer.decode([encoded[0][i]]).strip().endswith(".") for i in hit)
