"""VLM backend: generation and teacher-forced scoring agree, batch == one-by-one, raw-logit stats."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmboundary.data.schema import Sample
from mmboundary.models.prompts import build_messages, question_prompt
from mmboundary.models.token_stats import decode_offsets, logprobs_and_entropies
from mmboundary.models.vlm import VLM

ARCHS = ["qwen2-vl", "qwen2.5-vl", "llava", "idefics3"]
QUESTIONS = ["How many shapes?", "What colour is the big square in the middle of the picture?",
             "Is there a triangle?"]
TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (80, 50), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255)),
            Image.new("RGB", (40, 90), (0, 200, 30))]


def _load(tiny_model_dir, arch: str) -> VLM:
    return VLM.from_pretrained(tiny_model_dir(arch), device="cpu")


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b, strict=False)), default=0.0)


def _assert_covers(offsets: list[tuple[int, int]], text: str) -> None:
    """Spans run left to right without gaps from 0 to len(text) (they overlap only where
    several byte tokens share one character)."""
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    for (s0, e0), (s1, e1) in zip(offsets, offsets[1:], strict=False):
        assert s0 <= s1 <= e0 <= e1 and s1 < e1


def _direct_stats(vlm: VLM, prompt: str, image, ids: list[int]):
    """Independent reference: one unpadded forward, torch.distributions over the full logits."""
    enc = vlm.processor(text=[prompt], images=[[image]], return_tensors="pt")
    n_prompt = enc["input_ids"].shape[1]
    enc["input_ids"] = torch.cat([enc["input_ids"], torch.tensor([ids])], dim=1)
    enc["attention_mask"] = torch.ones_like(enc["input_ids"])
    if "mm_token_type_ids" in enc:
        enc["mm_token_type_ids"] = (enc["input_ids"] == vlm.model.config.image_token_id).long()
    with torch.inference_mode():
        logits = vlm.model(**enc).logits[0, n_prompt - 1 : -1]
    dist = torch.distributions.Categorical(logits=logits.double())
    return dist.log_prob(torch.tensor(ids)).tolist(), dist.entropy().tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_score_and_direct_computation_agree(arch, tiny_model_dir, images):
    vlm = _load(tiny_model_dir, arch)
    prompts = [vlm.prompt_text(q) for q in QUESTIONS]
    gens = vlm.generate(prompts, images, max_new_tokens=10, batch_size=3)
    assert [g.prompt_index for g in gens] == [0, 1, 2]
    scored = vlm.score_ids(prompts, images, [g.token_stats.token_ids for g in gens])
    for gen, stats, prompt, image in zip(gens, scored, prompts, images, strict=False):
        ts = gen.token_stats
        assert 0 < len(ts.token_ids) <= 10
        assert len(ts.logprobs) == len(ts.entropies) == len(ts.offsets) == len(ts.token_ids)
        assert _max_diff(ts.logprobs, stats.logprobs) < TOL
        assert _max_diff(ts.entropies, stats.entropies) < TOL
        assert stats.offsets == ts.offsets
        _assert_covers(ts.offsets, gen.text)
        ref_lp, ref_ent = _direct_stats(vlm, prompt, image, ts.token_ids)
        assert _max_diff(ts.logprobs, ref_lp) < TOL and _max_diff(ts.entropies, ref_ent) < TOL
        # greedy: each token is the argmax, so log p >= log(1/V) and entropy <= log V
        vocab = len(vlm.tokenizer)
        assert all(lp >= -torch.log(torch.tensor(vocab)).item() for lp in ts.logprobs)
        assert all(0 <= h <= torch.log(torch.tensor(vocab)).item() + 1e-5 for h in ts.entropies)


@pytest.mark.parametrize("arch", ARCHS)
def test_score_of_generated_text_matches_generate_on_ids(arch, tiny_model_dir, images):
    """score(text) re-tokenises: its log-probs equal generate's wherever the ids agree (a prefix:
    a token's log-prob depends only on the tokens before it); all of them when ids are equal."""
    vlm = _load(tiny_model_dir, arch)
    prompts = [vlm.prompt_text(q) for q in QUESTIONS]
    gens = vlm.generate(prompts, images, max_new_tokens=12, do_sample=True, temperature=0.7,
                        num_return_sequences=3, seed=1)
    assert [g.prompt_index for g in gens] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    keep = [g for g in gens if g.text]
    scored = vlm.score([prompts[g.prompt_index] for g in keep],
                       [images[g.prompt_index] for g in keep], [g.text for g in keep])
    compared = 0
    for gen, stats in zip(keep, scored, strict=False):
        assert vlm.tokenizer.decode(stats.token_ids) == gen.text
        common = 0
        for a, b in zip(gen.token_stats.token_ids, stats.token_ids, strict=False):
            if a != b:
                break
            common += 1
        compared += common
        assert _max_diff(gen.token_stats.logprobs[:common], stats.logprobs[:common]) < TOL
        assert _max_diff(gen.token_stats.entropies[:common], stats.entropies[:common]) < TOL
        if stats.token_ids == gen.token_stats.token_ids:
            assert stats.offsets == gen.token_stats.offsets
    assert compared >= 3


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava", "idefics3"])
def test_batched_equals_one_by_one(arch, tiny_model_dir, images):
    vlm = _load(tiny_model_dir, arch)
    prompts = [vlm.prompt_text(q) for q in QUESTIONS]
    batched = vlm.generate(prompts, images, max_new_tokens=8, batch_size=3)
    single = [vlm.generate([p], [im], max_new_tokens=8)[0] for p, im in zip(prompts, images, strict=False)]
    responses = ["There are two red circles.", "The square is blue, but I can't be entirely sure.",
                 "So, the answer is yes."]
    scored_b = vlm.score(prompts, images, responses, batch_size=3)
    scored_1 = [vlm.score([p], [im], [r])[0] for p, im, r in zip(prompts, images, responses, strict=False)]
    for b, s in zip(batched, single, strict=False):
        assert b.token_stats.token_ids == s.token_stats.token_ids and b.text == s.text
        assert _max_diff(b.token_stats.logprobs, s.token_stats.logprobs) < TOL
        assert _max_diff(b.token_stats.entropies, s.token_stats.entropies) < TOL
    for b, s, r in zip(scored_b, scored_1, responses, strict=False):
        assert b.token_ids == s.token_ids and b.offsets == s.offsets
        _assert_covers(b.offsets, r)
        assert "".join(r[x:y] for x, y in b.offsets) == r  # ASCII: the spans tile the text
        assert _max_diff(b.logprobs, s.logprobs) < TOL
        assert _max_diff(b.entropies, s.entropies) < TOL


def test_sampling_reads_raw_logits(tiny_model_dir, images):
    """Temperature/top-p change what is sampled, never the stats: they equal teacher forcing."""
    vlm = _load(tiny_model_dir, "qwen2-vl")
    prompt = vlm.prompt_text(QUESTIONS[0])
    gens = vlm.generate([prompt], images[:1], max_new_tokens=8, do_sample=True,
                        temperature=0.3, top_p=0.5, num_return_sequences=2, seed=0)
    again = vlm.generate([prompt], images[:1], max_new_tokens=8, do_sample=True,
                         temperature=0.3, top_p=0.5, num_return_sequences=2, seed=0)
    assert [g.text for g in gens] == [g.text for g in again]
    for gen in gens:
        stats = vlm.score_ids([prompt], images[:1], [gen.token_stats.token_ids])[0]
        assert _max_diff(gen.token_stats.logprobs, stats.logprobs) < TOL


def test_logprobs_and_entropies_by_hand():
    logits = torch.tensor([[0.0, 0.0], [torch.log(torch.tensor(3.0)).item(), 0.0]])
    lp, ent = logprobs_and_entropies(logits, torch.tensor([1, 0]), chunk_size=1)
    assert lp.tolist() == pytest.approx([-0.693147, -0.287682], abs=1e-5)  # log 1/2, log 3/4
    # H(1/2,1/2) = log 2; H(3/4,1/4) = -(.75 log .75 + .25 log .25)
    assert ent.tolist() == pytest.approx([0.693147, 0.562335], abs=1e-5)


def test_decode_offsets_for_non_canonical_ids(tiny_model_dir):
    tok = VLM.from_pretrained(tiny_model_dir("llava"), device="cpu").tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in ["t", "h", "e"]]
    assert decode_offsets(tok, ids, "the") == [(0, 1), (1, 2), (2, 3)]
    snow = tok("☃", add_special_tokens=False)["input_ids"]  # 3 byte tokens: E2 98 83
    assert len(snow) == 3
    # canonical ids: the tokenizer's offset mapping; every byte token spans the character
    assert decode_offsets(tok, [tok.convert_tokens_to_ids("a"), *snow], "a☃") == [
        (0, 1), (1, 2), (1, 2), (1, 2)]
    # non-canonical ids: the decoded-prefix computation gives the same convention
    assert decode_offsets(tok, [*ids, *snow], "the☃") == [
        (0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (3, 4)]


def test_prompts_render_question_choices_and_instruction(tiny_model_dir):
    sample = Sample(id="1", dataset="aokvqa", question="Which birthday?",
                    choices=["one", "thirty"], correct_choice_idx=1)
    text = question_prompt(sample)
    assert text.startswith("Question: Which birthday?\nChoices:\n(A) one\n(B) thirty\n")
    assert "So, the answer is X." in text
    assert build_messages("q")[0]["content"] == [{"type": "image"}, {"type": "text", "text": "q"}]
    vlm = VLM.from_pretrained(tiny_model_dir("qwen2-vl"), device="cpu")
    prompt = vlm.prompt_text(sample)
    assert prompt.endswith("<|im_start|>assistant\n") and "(B) thirty" in prompt
    assert "<|image_pad|>" in prompt
    image = Image.new("RGB", (64, 64))
    from_sample = vlm.score([sample], [image], ["So, the answer is thirty."])[0]
    from_text = vlm.score([prompt], [image], ["So, the answer is thirty."])[0]
    assert from_sample.logprobs == from_text.logprobs


def test_clear_errors(tiny_model_dir, images, tmp_path):
    vlm = VLM.from_pretrained(tiny_model_dir("llava"), device="cpu")
    prompt = vlm.prompt_text("q")
    with pytest.raises(ValueError, match="image 0 is missing"):
        vlm.generate([prompt], [None])
    with pytest.raises(ValueError, match="response 1 is empty"):
        vlm.score([prompt, prompt], images[:2], ["ok", ""])
    with pytest.raises(ValueError, match="greedy"):
        vlm.generate([prompt], images[:1], num_return_sequences=2)
    with pytest.raises(ValueError, match="dtype"):
        VLM.from_pretrained(tiny_model_dir("llava"), dtype="int3")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not an image-text-to-text"):
        VLM.from_pretrained(tiny_model_dir("clip"))


def test_cli_generate_writes_resumes_and_records_errors(tiny_model_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.data.schema import Response
    from mmboundary.shapesworld.scenes import write_split

    split = write_split(tmp_path / "shapes", 3, "test")
    records = json.loads(split.read_text())
    records[1]["image"] = "images/does-not-exist.png"
    split.write_text(json.dumps(records))
    out = tmp_path / "responses.jsonl"
    args = ["generate", "--model", str(tiny_model_dir("llava")), "--data", str(split),
            "--images", str(split.parent), "--dataset", "sample", "--out", str(out),
            "--max-new-tokens", "5", "--batch-size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [Response.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [r.sample_id for r in lines] == [r["id"] for r in records]
    bad = lines[1]
    assert bad.text == "" and "not found" in bad.meta["error"] and bad.sample_id in bad.meta["error"]
    for good in (lines[0], lines[2]):
        assert good.token_stats is not None and 0 < len(good.token_stats.token_ids) <= 5
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "3 sample(s) were already done" in again.output
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("arch", [*ARCHS, "llava-next"])
def test_prompt_token_count_equals_the_processor_for_every_prompt_and_image(arch, tiny_model_dir,
                                                                          images):
    """The input-length check counts image tokens once per image size (the processor is slow);
    the count must still equal the processor's, prompt by prompt and size by size."""
    vlm = _load(tiny_model_dir, arch)
    prompts = [vlm.prompt_text(q) for q in QUESTIONS] + [vlm.prompt_text("word " * 40)]
    for image in [*images, images[0].resize((33, 77))]:
        for prompt in prompts:
            exact = int(vlm.processor(text=[prompt], images=[[image]],
                                      return_tensors="pt")["input_ids"].shape[1])
            assert vlm.prompt_token_count(prompt, image) == exact, (arch, image.size)
