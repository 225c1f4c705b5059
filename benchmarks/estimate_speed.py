"""How fast is step-level confidence? ``python benchmarks/estimate_speed.py [--n 32]``

Scores N multi-step responses (ShapesWorld reference chains) with a VLM and prints, per response,
the time of:

- bare:   one plain forward pass over prompt + response (batched, logits of the response only);
- lnlp+mte: the pipeline with LNLP and MTE (one teacher-forced pass + per-token log-probs and
  entropies + step alignment); target: within 1.2x of bare;
- all four: LNLP, MTE, TokenSAR (one similarity batch), CLIPS (one image embedding per image);
- naive:  the same four scores the naive way: one forward pass per step (prompt + response up to
  that step) and one similarity call per removed token, one CLIP call per step; target: all four
  >= 5x faster than naive.

``--config tiny`` (default) builds a tiny random LLaVA offline. ``--config qwen2-vl-7b`` builds a
random-weight Qwen2-VL of the paper's size from its config (no download; needs a GPU with ~20 GB;
bf16) and also prints response tokens per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN2_VL_7B = dict(  # Qwen/Qwen2-VL-7B-Instruct config.json
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
              rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                               "rope_theta": 1000000.0}),
    vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
)


def _timed(fn: Any, repeats: int) -> float:
    """Best wall time of ``repeats`` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_tiny(workdir: Path) -> tuple[Any, Any]:
    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.tiny import make_tiny
    from mmboundary.models.vlm import VLM

    make_tiny("llava", workdir / "vlm", hidden_size=128, intermediate_size=256)
    make_tiny("clip", workdir / "clip")
    return VLM.from_pretrained(workdir / "vlm", device="cpu"), \
        ClipScorer.from_pretrained(workdir / "clip")


def build_qwen2_vl_7b(workdir: Path, device: str) -> tuple[Any, Any]:
    """Random Qwen2-VL-7B-sized weights in bf16 on ``device``, with a tiny offline tokenizer."""
    import torch
    import transformers as tf

    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.tiny import make_tiny
    from mmboundary.models.vlm import VLM, load_processor

    make_tiny("qwen2-vl", workdir / "proc", image_size=224, patch_size=14)
    processor = load_processor(workdir / "proc", "qwen2_vl")
    small = tf.AutoConfig.from_pretrained(workdir / "proc")
    ids = {k: getattr(small, k) for k in ("image_token_id", "video_token_id",
                                          "vision_start_token_id", "vision_end_token_id")}
    tok = processor.tokenizer
    text = dict(QWEN2_VL_7B["text"], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.pad_token_id)
    config = tf.Qwen2VLConfig(text_config=text, vision_config=QWEN2_VL_7B["vision"], **ids)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = tf.Qwen2VLForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    model.generation_config = tf.AutoModelForImageTextToText.from_pretrained(
        workdir / "proc").generation_config
    make_tiny("clip", workdir / "clip")
    return VLM(model, processor, name="random-qwen2-vl-7b"), \
        ClipScorer.from_pretrained(workdir / "clip", device=device)


def bare_pass(vlm: Any, prompts: list[str], images: list[Any], texts: list[str],
              batch_size: int) -> None:
    """One plain forward over prompt + response, logits of the response tokens only."""
    import torch

    from mmboundary.models.vlm import _append_responses

    tok = vlm.tokenizer
    for start in range(0, len(prompts), batch_size):
        batch = slice(start, start + batch_size)
        enc = vlm._encode(prompts[batch], images[batch])
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[batch]]
        inputs, keep = _append_responses(enc, ids, tok.pad_token_id)
        with torch.inference_mode():
            vlm.model(**inputs, logits_to_keep=keep)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def naive(vlm: Any, prompts: list[str], images: list[Any], texts: list[str],
          sim: Any, clip: Any) -> None:
    """One forward pass per step, one similarity call per removed token, one CLIP call per step."""
    import numpy as np

    from mmboundary.confidence.estimators import token_removal_variants, token_sar
    from mmboundary.text.steps import split_steps

    for prompt, image, text in zip(prompts, images, texts, strict=True):
        for step in split_steps(text):
            prefix = text[: step.end]
            stats = vlm.score([prompt], [image], [prefix], batch_size=1)[0]
            mine = [i for i, (a, _) in enumerate(stats.offsets) if a >= step.start]
            lp = np.array([stats.logprobs[i] for i in mine])
            _ = float(np.exp(-lp.mean())), float(np.mean([stats.entropies[i] for i in mine]))
            spans = [(stats.offsets[i][0] - step.start, stats.offsets[i][1] - step.start)
                     for i in mine]
            g = [sim.paired([step.text], [v])[0] for v in token_removal_variants(step.text, spans)]
            _ = token_sar(lp, g)
            clip._image_cache.clear()
            _ = max(float(clip.cosine([image], [step.text])[0]), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "qwen2-vl-7b"])
    parser.add_argument("--n", type=int, default=16, help="responses to score")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    import torch

    from mmboundary.confidence.pipeline import EstimateConfig, estimate_batch
    from mmboundary.data.shapes import read_split, write_split
    from mmboundary.models.similarity import default_similarity

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="estimate-speed-"))
    if args.config == "tiny":
        vlm, clip = build_tiny(work)
    else:
        vlm, clip = build_qwen2_vl_7b(work, args.device)
    sim = default_similarity()
    samples = read_split(write_split(work / "data", args.n, "train"))
    texts = [" ".join(s.reference.steps) for s in samples]
    from PIL import Image

    images = [Image.open(s.image).convert("RGB") for s in samples]
    prompts = [vlm.prompt_text(s) for s in samples]
    n_tokens = sum(len(vlm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    n_steps = sum(len(s.reference.steps) for s in samples)

    by_id = {s.id: im for s, im in zip(samples, images, strict=True)}

    def preloaded(sample: Any) -> tuple[Any, str]:
        """The same decoded images the bare pass gets (no PNG decoding inside the timing)."""
        return by_id[sample.id], sample.id

    def ours(names: tuple[str, ...]) -> Any:
        config = EstimateConfig(estimators=names, batch_size=args.batch_size,
                                parse_statements=False)

        def run() -> None:
            clip._image_cache.clear()
            for start in range(0, len(samples), args.batch_size):
                batch = slice(start, start + args.batch_size)
                out = estimate_batch(vlm, samples[batch], texts[batch], similarity=sim,
                                     clip=clip, config=config, image_loader=preloaded)
                bad = [r.meta["error"] for r in out if "error" in r.meta]
                assert not bad, bad
        return run

    t_bare = _timed(lambda: bare_pass(vlm, prompts, images, texts, args.batch_size), args.repeats)
    t_fast = _timed(ours(("lnlp", "mte")), args.repeats)
    t_all = _timed(ours(("lnlp", "mte", "tokensar", "clips")), args.repeats)
    t_naive = _timed(lambda: naive(vlm, prompts, images, texts, sim, clip),
                     max(1, args.repeats - 2))
    print(f"{args.config}: {args.n} responses, {n_steps} steps, {n_tokens} response tokens, "
          f"batch {args.batch_size}, {args.threads} threads, device {vlm.device}")
    rows = [("bare forward pass", t_bare), ("lnlp+mte", t_fast), ("all four", t_all),
            ("naive (pass per step, call per token)", t_naive)]
    for name, t in rows:
        print(f"  {name:40s} {1000 * t / args.n:8.1f} ms/response  {n_tokens / t:9.0f} tok/s")
    print(f"  lnlp+mte / bare  = {t_fast / t_bare:5.2f}x   (target <= 1.2x)")
    print(f"  naive / all four = {t_naive / t_all:5.2f}x   (target >= 5x)")


if __name__ == "__main__":
    main()
