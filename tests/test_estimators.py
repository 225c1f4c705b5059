"""The four step estimators against hand-computed values, fakes with known answers, a direct CLIP
cosine, and (optionally) lm-polygraph's own implementations."""

from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.confidence.estimators import (
    StepInput,
    clip_score,
    estimate,
    get_estimators,
    length_normalized_perplexity,
    mean_token_entropy,
    token_removal_variants,
    token_sar,
    tokensar_similarities,
)

P = np.array([0.5, 0.25, 0.8])
LOGP = np.log(P)
H = np.array([0.1, 0.5, 0.9])
G = np.array([0.9, 0.5, 0.6])  # g(s, s without y_l): R = 0.1, 0.5, 0.4 (sums to 1)


def test_lnlp_is_the_geometric_mean_inverse_probability():
    assert length_normalized_perplexity(LOGP) == pytest.approx(0.1 ** (-1 / 3))  # 2.15443


def test_mte_is_the_mean_entropy():
    assert mean_token_entropy(H) == pytest.approx(0.5)


def test_tokensar_hand_computed():
    expected = 0.1 * math.log(2) + 0.5 * math.log(4) + 0.4 * -math.log(0.8)  # 0.85173
    assert token_sar(LOGP, G) == pytest.approx(expected)
    # relevance is renormalised: scaling every R_l by the same factor changes nothing
    assert token_sar(LOGP, 1 - 0.5 * (1 - G)) == pytest.approx(expected)


def test_tokensar_without_relevant_tokens_is_the_mean_nll():
    assert token_sar(LOGP, [1.0, 1.0, 1.0]) == pytest.approx(-LOGP.mean())


def test_clips_clips_negative_cosines():
    assert clip_score(0.31) == pytest.approx(0.31)
    assert clip_score(-0.2) == 0.0


@pytest.mark.parametrize("bad", [[], [float("nan")], [[0.1]]])
def test_bad_inputs_fail_loudly(bad):
    with pytest.raises(ValueError, match="lnlp"):
        length_normalized_perplexity(bad)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-4, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=12))
def test_tokensar_is_a_convex_combination_of_nlls(rows):
    logp = np.log([r[0] for r in rows])
    sims = [r[1] for r in rows]
    value = token_sar(logp, sims)
    assert -logp.max() - 1e-9 <= value <= -logp.min() + 1e-9
    assert length_normalized_perplexity(logp) >= 1.0


def test_token_removal_variants_cut_characters_and_collapse_spaces():
    content = "a cat sat"
    spans = [(0, 1), (1, 5), (5, 9), (20, 25)]  # "a", " cat", " sat", beyond the content
    assert token_removal_variants(content, spans) == ["cat sat", "a sat", "a cat", "a cat sat"]


class LengthRatioSimilarity:
    """A fake g with a known answer: len(b) / len(a); counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        self.calls.append(len(a))
        return np.array([len(y) / len(x) for x, y in zip(a, b, strict=True)])


def _step(content: str, spans, logp, image=None, question=None) -> StepInput:
    logp = np.asarray(logp, dtype=float)
    return StepInput(content, logp, np.zeros_like(logp), list(spans), image, question)


def test_tokensar_similarities_one_batched_call_for_all_steps():
    sim = LengthRatioSimilarity()
    steps = [_step("a cat sat", [(0, 1), (1, 5), (5, 9)], LOGP),
             _step("dog", [(0, 3)], [-1.0]),
             _step("a cat sat", [(0, 1), (1, 5), (5, 9)], LOGP)]  # duplicates scored once
    sims = tokensar_similarities(steps, sim)
    assert sim.calls == [4]
    np.testing.assert_allclose(sims[0], [7 / 9, 5 / 9, 5 / 9])
    np.testing.assert_allclose(sims[1], [0.0])
    # with the question: s = "Q? a cat sat", removing "cat" -> "Q? a sat"
    sims_q = tokensar_similarities([_step("a cat sat", [(1, 5)], [-1.0], question="Q?")], sim,
                                   include_question=True)
    np.testing.assert_allclose(sims_q[0], [8 / 12])


def _word_spans(text: str) -> list[tuple[int, int]]:
    """Byte-level-BPE-like spans: each word with its leading space."""
    import re

    return [m.span() for m in re.finditer(r"\s?\S+", text)]


@pytest.mark.parametrize("include_question", [False, True])
def test_batched_tokensar_similarities_equal_one_call_per_token(include_question, monkeypatch):
    """The batched, deduplicated path gives the values of the definition: one
    ``paired([s], [s without y_l])`` call per token, each on an empty cache."""
    from mmboundary.confidence.estimators import _squash
    from mmboundary.models.similarity import default_similarity

    sim = default_similarity()
    texts = ["The image shows two red circles and a blue square.", "There are two red shapes.",
             "So, the answer is 2.", "There are two red shapes.", "Yes."]
    steps = [_step(t, _word_spans(t) + ([(90, 95)] if i == 0 else []), [-1.0] * (
        len(_word_spans(t)) + (i == 0)), question="How many red shapes?")
        for i, t in enumerate(texts)]
    calls: list[int] = []
    embed = sim._embed
    monkeypatch.setattr(sim, "_embed", lambda t: calls.append(len(t)) or embed(t))
    sim.clear_cache()
    batched = tokensar_similarities(steps, sim, include_question=include_question)
    assert len(calls) == 1  # every text of the batch in ONE encoder pass, each distinct once
    prefix = "How many red shapes? " if include_question else ""
    for step, got in zip(steps, batched, strict=True):
        s = prefix + _squash(step.content)
        want = []
        for v in token_removal_variants(step.content, step.token_spans):
            sim.clear_cache()
            want.append(sim.paired([s], [prefix + v])[0])
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert batched[0][-1] == pytest.approx(1.0, abs=1e-6)  # a span outside s leaves s unchanged


def test_estimate_shares_statistics_and_matches_the_formulas():
    sim = LengthRatioSimilarity()
    steps = [_step("a cat sat", [(0, 1), (1, 5), (5, 9)], LOGP),
             _step("dog", [(0, 3)], [-1.0])]
    steps[0].entropies = H
    scores = estimate(steps, ["lnlp", "mte", "tokensar"], similarity=sim)
    assert sim.calls == [4]
    r = 1 - np.array([7 / 9, 5 / 9, 5 / 9])
    np.testing.assert_allclose(scores["tokensar"], [np.sum(r / r.sum() * -LOGP), 1.0])
    np.testing.assert_allclose(scores["lnlp"], [0.1 ** (-1 / 3), math.e])
    np.testing.assert_allclose(scores["mte"], [0.5, 0.0])


def test_estimator_metadata():
    ests = get_estimators(["lnlp", "mte", "tokensar", "clips"])
    assert [e.uncertainty for e in ests] == [True, True, True, False]
    with pytest.raises(ValueError, match="unknown estimator"):
        get_estimators(["ppl"])
    with pytest.raises(ValueError, match="similarity model"):
        estimate([_step("x", [(0, 1)], [-1.0])], ["tokensar"])


def test_clips_matches_a_direct_clipmodel_cosine(tiny_model_dir):
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from mmboundary.models.clip import ClipScorer

    torch.set_num_threads(1)
    path = tiny_model_dir("clip")
    scorer = ClipScorer.from_pretrained(path)
    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (0, 90, 200))]
    texts = ["The image shows a red circle.", "There are two green triangles in the picture."]
    model, proc = CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)
    with torch.no_grad():
        out = model(**proc(text=texts, images=images, return_tensors="pt", padding=True))
    direct = (out.logits_per_image / model.logit_scale.exp()).detach().numpy()  # [image, text] cosines
    got = scorer.cosine([images[0], images[1], images[0]], [texts[0], texts[1], texts[1]])
    np.testing.assert_allclose(got, [direct[0, 0], direct[1, 1], direct[0, 1]], atol=1e-5)
    steps = [_step(t, [(0, 1)], [-1.0], image=images[0]) for t in texts]
    clips = estimate(steps, ["clips"], clip=scorer)["clips"]
    np.testing.assert_allclose(clips, np.maximum(direct[0], 0.0), atol=1e-5)
    # a very long text is truncated to 77 positions and still ends with EOS
    ids, _ = scorer._text_ids(["red " * 500])
    assert ids.shape[1] == 77 and ids[0, -1].item() == scorer.eos_id
    assert len(scorer._image_cache) == 2


# ---------------------------------------------------------------------------------------------
# Optional cross-check against lm-polygraph (pip install lm-polygraph --no-deps).
# ---------------------------------------------------------------------------------------------


def _import_polygraph_estimators() -> types.ModuleType:
    """lm_polygraph's estimator modules, skipping its package __init__ (which needs openai etc.)."""
    try:
        return importlib.import_module("lm_polygraph.estimators")
    except ImportError:
        pass
    spec = importlib.util.find_spec("lm_polygraph")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lm-polygraph is not installed (pip install lm-polygraph --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in [k for k in sys.modules if k == "lm_polygraph" or k.startswith("lm_polygraph.")]:
        del sys.modules[name]
    for pkg, sub in [("lm_polygraph", ""), ("lm_polygraph.utils", "utils"),
                     ("lm_polygraph.estimators", "estimators")]:
        module = types.ModuleType(pkg)
        module.__path__ = [str(root / sub) if sub else str(root)]
        sys.modules[pkg] = module
    try:
        mods = {n: importlib.import_module(f"lm_polygraph.estimators.{n}")
                for n in ("token_entropy", "perplexity", "token_sar")}
    except ImportError as err:
        pytest.skip(f"lm-polygraph estimators not importable here: {err}")
    finally:
        for pkg in ("lm_polygraph", "lm_polygraph.utils", "lm_polygraph.estimators"):
            sys.modules.pop(pkg, None)
    ns = types.SimpleNamespace(MeanTokenEntropy=mods["token_entropy"].MeanTokenEntropy,
                               Perplexity=mods["perplexity"].Perplexity,
                               TokenSAR=mods["token_sar"].TokenSAR)
    return ns  # type: ignore[return-value]


def test_cross_check_with_lm_polygraph():
    lmp = _import_polygraph_estimators()
    rng = np.random.default_rng(0)
    logps = [np.log(rng.uniform(0.05, 1.0, n)) for n in (1, 3, 7)]
    ents = [rng.uniform(0.0, 3.0, n) for n in (1, 3, 7)]
    sims = [rng.uniform(0.0, 0.99, n) for n in (1, 3, 7)]
    stats = {"entropy": ents, "greedy_log_likelihoods": logps, "token_similarity": sims}
    np.testing.assert_allclose(lmp.MeanTokenEntropy()(stats), [mean_token_entropy(e) for e in ents])
    # lm-polygraph's Perplexity is the log of ours: -mean log p
    np.testing.assert_allclose(np.exp(lmp.Perplexity()(stats)),
                               [length_normalized_perplexity(lp) for lp in logps])
    np.testing.assert_allclose(lmp.TokenSAR()(stats),
                               [token_sar(lp, g) for lp, g in zip(logps, sims, strict=True)])
