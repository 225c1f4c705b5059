"""Issue #12's diagnostics: the linear probe (synthetic values, hidden states of the tiny models,
steps and labels from the one parser and rule set) and stated vs internal level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmboundary.data.schema import Response, Step
from mmboundary.evaluation.probe import StepSet, collect_steps, probe_auroc, probe_table


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _synthetic(n: int, seed: int, w: np.ndarray, shuffle: bool = False) -> StepSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, w.size))
    y = (x @ w > 0).astype(float)
    if shuffle:
        y = rng.permutation(y)
    stated = np.where(np.arange(n) % 2 == 0, y * 0.8 + 0.1, np.nan)  # half the steps state one
    return StepSet(x, y, stated, [(f"s{i}", 0) for i in range(n)])


def test_probe_reads_a_linear_label_and_not_a_shuffled_one() -> None:
    w = np.random.default_rng(0).normal(size=16)
    linear = probe_auroc(_synthetic(400, 1, w), _synthetic(300, 2, w))
    assert linear.auroc > 0.97 and linear.train_auroc > 0.97
    assert (linear.n_train, linear.n_val, linear.stated_n) == (400, 300, 150)
    assert linear.stated_auroc == 1.0 and linear.internal_auroc is None  # stated = the label
    shuffled = probe_auroc(_synthetic(400, 1, w, shuffle=True), _synthetic(300, 2, w, shuffle=True))
    assert abs(shuffled.auroc - 0.5) < 0.1
    # the control: a label that is the step's kind is read off the kind alone; within each
    # kind nothing is left to rank
    train, val = _synthetic(400, 1, w), _synthetic(300, 2, w)
    train.answer_step, val.answer_step = train.correct > 0, val.correct > 0
    by_kind = probe_auroc(train, val)
    assert by_kind.kind_position_auroc == 1.0 and linear.kind_position_auroc == 0.5
    assert by_kind.by_kind["answer"]["probe"] is None and by_kind.by_kind["other"]["n"] == int(
        (val.correct == 0).sum())
    table = probe_table({"linear": linear, "shuffled": shuffled.to_dict()})
    assert [r[0] for r in table.rows] == ["linear", "shuffled"] and table.rows[0][2] == "1.000"
    with pytest.raises(ValueError, match="all correct"):
        probe_auroc(StepSet(np.zeros((3, 2)), np.ones(3), np.ones(3), [("a", 0)] * 3),
                    _synthetic(10, 0, np.ones(2)))


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava", "idefics3"])
def test_hidden_states_are_what_the_output_layer_reads(arch, tiny_model_dir) -> None:
    """Row i of ``VLM.hidden_states`` through the output layer gives score()'s log p of token
    i + 1, so the probe reads the state the model's next-token distribution comes from."""
    from PIL import Image

    from mmboundary.models.vlm import VLM

    vlm = VLM.from_pretrained(tiny_model_dir(arch), device="cpu")
    prompts = [vlm.prompt_text("How many circles?"), vlm.prompt_text("Is it red?")]
    images = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (48, 64), "blue")]
    texts = ["There are two red circles. So, the answer is 2.", "So, the answer is yes."]
    states = vlm.hidden_states(prompts, images, texts, batch_size=2)
    stats = vlm.score(prompts, images, texts, batch_size=1)  # other padding: same numbers
    head = vlm.model.get_output_embeddings()
    for (hidden, offsets), st in zip(states, stats, strict=True):
        assert hidden.shape == (len(st.token_ids), head.in_features) and offsets == st.offsets
        with torch.no_grad():
            logp = torch.log_softmax(head(torch.tensor(hidden)).float(), -1)
        got = [float(logp[i, st.token_ids[i + 1]]) for i in range(len(st.token_ids) - 1)]
        assert got == pytest.approx(st.logprobs[1:], abs=1e-4)


def test_collect_steps_takes_the_last_content_token_and_the_rule_sets_labels(
        tiny_model_dir, tmp_path) -> None:
    from mmboundary.judging.rules import StepRules
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, read_split, write_split
    from mmboundary.text import default_parser, insert_statement

    samples = read_split(write_split(tmp_path, 3, "train", seed=0))
    vlm = VLM.from_pretrained(tiny_model_dir("llava"), device="cpu")
    right = samples[0].reference.steps
    stated = [insert_statement(right[0], "with total certainty"), *right[1:]]
    wrong = ["There are 7 purple hexagons.", "So, the answer is 7."]  # not in any reference
    responses = [Response(sample_id=samples[0].id, text=" ".join(stated)),
                 " ".join(wrong), Response(sample_id=samples[2].id, text="", meta={"error": "x"})]
    rules = StepRules()
    steps = collect_steps(vlm, samples, responses, rules, load_image, batch_size=2)
    judged = rules.judge_chains(samples[:2], default_parser().parse_many([" ".join(stated),
                                                                        " ".join(wrong)]))
    expected = [(samples[k].id, i) for k in range(2) for i, v in enumerate(judged[k].steps)
                if v.ref_index is not None]
    assert steps.keys == expected and steps.skipped["failed_responses"] == 1
    assert steps.skipped["unaligned"] == len(stated) + len(wrong) - len(expected)
    assert steps.correct.tolist() == [float(judged[k].steps[i].correct)
                                      for k in range(2) for i in range(len(judged[k].steps))
                                      if judged[k].steps[i].ref_index is not None]
    assert steps.correct[0] == 1.0 and steps.stated[0] == pytest.approx(0.9)  # level 5
    answers = [judged[k].answer_index == i for k, i in [(0 if sid == samples[0].id else 1, i)
                                                        for sid, i in steps.keys]]
    assert steps.answer_step.tolist() == answers and sum(answers) == 2
    assert np.isnan(steps.stated[1:]).all()
    # the first step's feature: the hidden state at its last content token ("...circle"), not
    # at the statement or the full stop
    text = " ".join(stated)
    parsed = default_parser().parse(text)[0]
    hidden, offsets = vlm.hidden_states([samples[0]], [load_image(samples[0])], [text])[0]
    last = max(i for i, (a, b) in enumerate(offsets) if a < parsed.content_end)
    assert text[offsets[last][0]:offsets[last][1]].strip() == parsed.content.split()[-1]
    assert steps.features[0] == pytest.approx(hidden[last], abs=1e-5)
    scored = [Response(sample_id=samples[0].id, text=text,
                       steps=[Step(index=0, text="x", start=0, end=1, confidence=0.25)])]
    with_c = steps.with_internal(scored)
    assert with_c.internal[0] == 0.25 and np.isnan(with_c.internal[1:]).all()


def test_stated_vs_internal_pairs_each_steps_two_levels() -> None:
    from mmboundary.data.schema import Sample
    from mmboundary.evaluation.diagnostics import agreement_table, stated_vs_internal

    def step(i: int, stated: float | None, level: int | None) -> Step:
        return Step(index=i, text="x", start=0, end=1, expressed_confidence=stated, level=level)

    class Scorer:  # a scorer that already knows each response's steps
        def score(self, samples, texts):
            table = {"a": [step(0, 0.9, 5), step(1, 0.5, 4)], "b": [step(0, 0.3, 2),
                                                                   step(1, None, 3)]}
            return [Response(sample_id=s.id, text=t, steps=table[s.id])
                    for s, t in zip(samples, texts, strict=True)]

    samples = [Sample(id=k, dataset="toy", question="?") for k in "abc"]
    responses = [Response(sample_id="a", text="A."), Response(sample_id="b", text="B."),
                 Response(sample_id="c", text="", meta={"error": "x"})]
    result = stated_vs_internal(Scorer(), samples, responses)
    assert result.n == 3 and result.exact == pytest.approx(2 / 3) and result.within_one == 1.0
    assert result.confusion[4][4] == 1 and result.confusion[2][3] == 1
    table = agreement_table("toy", result.to_dict())
    assert table.rows[4][:6] == ["stated 5", "0", "0", "0", "0", "1"]
    assert "3 steps" in table.caption and table.rows[-1][0] == "internal share"
