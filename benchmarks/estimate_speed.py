"""How fast is step-level confidence, cold? ``python benchmarks/estimate_speed.py [--n 16]``

Scores N multi-step responses (ShapesWorld reference chains) with a VLM and prints, per response,
the median and the spread (min-max) over ``--repeats`` timed runs of:

- bare:   one plain forward pass over prompt + response (batched, logits of the response only);
- lnlp+mte: the pipeline with LNLP and MTE (one teacher-forced pass + per-token log-probs and
  entropies + step alignment); target: within 1.2x of bare;
- all four: LNLP, MTE, TokenSAR (one similarity batch), CLIPS (one image embedding per image),
  with its breakdown: VLM pass, similarity (TokenSAR), CLIP, and the rest (step splitting,
  token alignment, estimator math);
- naive:  the same four scores the naive way: one forward pass per step (prompt + response up to
  that step) and one similarity call per removed token, one CLIP call per step; target: all four
  >= 5x faster than naive;
- raw encoder: the similarity model alone (tokenise + forward + pool; same batches, precision)
  on exactly the distinct texts TokenSAR embedded in the run. ``similarity / raw`` target <= 1.1x.

COLD: the similarity model's embedding cache and CLIP's image cache are emptied before every
timed run, as in a user's single pass over a dataset (one untimed warm-up run first pays the
process's one-off costs: kernel selection, allocator). One "warm" row shows what re-scoring the
same texts costs (every TokenSAR variant already embedded): that is not a first pass. Ratios are
taken within each repeat (same machine load), then summarised by median [min-max]; the machine
load (``os.getloadavg``) is printed before and after. On a shared, busy machine, 2 torch threads
spin-waiting for cores that others hold can slow every row 10-30x and scatter the ratios: use
``--threads 1`` or ``OMP_WAIT_POLICY=PASSIVE`` there (docs/PERFORMANCE.md).

``--config tiny`` (default) builds a tiny random LLaVA offline. ``--config qwen2-vl-7b`` builds a
random-weight Qwen2-VL of the paper's size from its config (no download; needs a GPU with ~20 GB;
bf16) and also prints response tokens per second. ``--precision bfloat16`` runs the similarity
model in bf16 autocast (``BiEncoderSimilarity(precision=...)``, opt-in).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
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

    from mmboundary.models.token_stats import append_responses

    tok = vlm.tokenizer
    for start in range(0, len(prompts), batch_size):
        batch = slice(start, start + batch_size)
        enc = vlm._encode(prompts[batch], images[batch])
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[batch]]
        inputs, keep = append_responses(enc, ids, tok.pad_token_id)
        with torch.inference_mode():
            vlm.model(**inputs, logits_to_keep=keep)
    _sync()


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


def clear_caches(sim: Any, clip: Any) -> None:
    """Cold start: no embedding of any text or image survives from an earlier run."""
    sim.clear_cache()
    clip._image_cache.clear()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():  # wall times of GPU work
        torch.cuda.synchronize()


@contextlib.contextmanager
def stage_clock(vlm: Any, sim: Any, clip: Any) -> Iterator[dict[str, Any]]:
    """Within the block, the wall time spent in the pipeline's stages (``vlm.score``,
    ``estimators.tokensar_similarities``, ``clip.cosine``, patched then restored) and the texts
    the similarity model embedded (``sim._embed``): ``{"seconds": {stage: s}, "texts": [...]}``."""
    import mmboundary.confidence.estimators as est

    out: dict[str, Any] = {"seconds": {"VLM pass": 0.0, "similarity": 0.0, "CLIP": 0.0},
                           "texts": []}
    targets = [("VLM pass", vlm, "score"), ("similarity", est, "tokensar_similarities"),
               ("CLIP", clip, "cosine"), ("texts", sim, "_embed")]
    saved = [(obj, attr, getattr(obj, attr), attr in vars(obj)) for _, obj, attr in targets]

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if name == "texts":
                out["texts"].extend(args[0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                if name != "texts":
                    out["seconds"][name] += time.perf_counter() - start
        return wrapper

    for name, obj, attr in targets:
        setattr(obj, attr, timed(name, getattr(obj, attr)))
    try:
        yield out
    finally:
        for obj, attr, fn, own in saved:
            setattr(obj, attr, fn) if own else delattr(obj, attr)


def raw_encoder_pass(sim: Any, texts: list[str]) -> None:
    """The encoder alone: tokenise + forward + pool + normalise, in batches of
    ``sim.batch_size`` sorted longest first (as sentence-transformers does), under
    ``sim.precision``; no cache, no pairing, no per-text Python."""
    import torch

    model = sim.model
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    ordered = sorted(texts, key=len, reverse=True)
    autocast = (torch.autocast(model.device.type, dtype=torch.bfloat16)
                if sim.precision == "bfloat16" else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for start in range(0, len(ordered), sim.batch_size):
            features = preprocess(ordered[start:start + sim.batch_size])
            features = {k: v.to(model.device) if hasattr(v, "to") else v
                        for k, v in features.items()}
            emb = model(features)["sentence_embedding"]
            torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
    _sync()


def _clock(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _summary(values: list[float], scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return f"{statistics.median(v):8.1f} [{min(v):.1f}-{max(v):.1f}]"


def _ratio(num: list[float], den: list[float]) -> str:
    r = [a / b for a, b in zip(num, den, strict=True)]
    return f"{statistics.median(r):5.2f}x [{min(r):.2f}-{max(r):.2f}]"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "qwen2-vl-7b"])
    parser.add_argument("--n", type=int, default=16, help="responses to score")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed cold runs of each row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="similarity model precision (BiEncoderSimilarity)")
    parser.add_argument("--agreement", nargs="*", default=[], metavar="SOURCE", help="compare "
                        "bf16 with fp32 similarity on: 'shapes' and/or an annotated file")
    parser.add_argument("--agreement-n", type=int, default=32, help="chains per agreement set")
    return parser.parse_args()


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Models, samples (ShapesWorld reference chains as responses) and the runs to time."""
    import torch
    from PIL import Image

    from mmboundary.confidence.pipeline import EstimateConfig, estimate_batch
    from mmboundary.models.similarity import default_similarity
    from mmboundary.shapesworld.scenes import read_split, write_split

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="estimate-speed-"))
    vlm, clip = build_tiny(work) if args.config == "tiny" else build_qwen2_vl_7b(work, args.device)
    sim = default_similarity(args.precision)
    samples = read_split(write_split(work / "data", args.n, "train"))
    texts = [" ".join(s.reference.steps) for s in samples]
    images = [Image.open(s.image).convert("RGB") for s in samples]
    prompts = [vlm.prompt_text(s) for s in samples]
    by_id = {s.id: im for s, im in zip(samples, images, strict=True)}

    def ours(names: tuple[str, ...]) -> Callable[[], None]:
        config = EstimateConfig(estimators=names, batch_size=args.batch_size,
                                parse_statements=False)

        def run() -> None:  # the same decoded images the bare pass gets (no PNG decoding)
            for start in range(0, len(samples), args.batch_size):
                batch = slice(start, start + args.batch_size)
                out = estimate_batch(vlm, samples[batch], texts[batch], similarity=sim,
                                     clip=clip, config=config,
                                     image_loader=lambda s: (by_id[s.id], s.id))
                bad = [r.meta["error"] for r in out if "error" in r.meta]
                assert not bad, bad
        return run

    return dict(
        vlm=vlm, sim=sim, clip=clip, n_steps=sum(len(s.reference.steps) for s in samples),
        n_tokens=sum(len(vlm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts),
        bare=lambda: bare_pass(vlm, prompts, images, texts, args.batch_size),
        fast=ours(("lnlp", "mte")), all=ours(("lnlp", "mte", "tokensar", "clips")),
        naive=lambda: naive(vlm, prompts, images, texts, sim, clip))


def measure(ctx: dict[str, Any], repeats: int) -> tuple[dict[str, list[float]], int]:
    """Per repeat, interleaved: bare, lnlp+mte, all four (cold, by stage), warm all four, the raw
    encoder on the texts that run embedded, naive. Returns seconds per row and the text count."""
    sim, clip = ctx["sim"], ctx["clip"]
    for name in ("bare", "fast", "all"):  # warm-up (untimed): one-off process costs
        clear_caches(sim, clip)
        ctx[name]()
    raw_encoder_pass(sim, ["warm-up text", "a second warm-up text"])
    t: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        t.setdefault(name, []).append(seconds)

    for _ in range(repeats):
        for name in ("bare", "fast"):
            clear_caches(sim, clip)
            add(name, _clock(ctx[name]))
        clear_caches(sim, clip)
        with stage_clock(ctx["vlm"], sim, clip) as clock:
            add("all", _clock(ctx["all"]))
        for stage, seconds in clock["seconds"].items():
            add(stage, seconds)
        add("rest", t["all"][-1] - sum(clock["seconds"].values()))
        add("warm", _clock(ctx["all"]))  # every text and image still cached
        texts = list(dict.fromkeys(clock["texts"]))
        add("raw encoder", _clock(lambda texts=texts: raw_encoder_pass(sim, texts)))
        clear_caches(sim, clip)
        add("naive", _clock(ctx["naive"]))
    return t, len(texts)


def report(args: argparse.Namespace, ctx: dict[str, Any], t: dict[str, list[float]],
           n_texts: int, load_before: str) -> None:
    per = 1000.0 / args.n
    print(f"{args.config}: {args.n} responses, {ctx['n_steps']} steps, {ctx['n_tokens']} response "
          f"tokens, batch {args.batch_size}, {args.threads} threads, device {ctx['vlm'].device}, "
          f"similarity {Path(ctx['sim'].model_path).parent.name} {ctx['sim'].precision}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"COLD (similarity and CLIP caches emptied before every timed run), {args.repeats} "
          "repeats; ms/response median [min-max], tok/s at the median:")
    rows = [("bare forward pass", "bare"), ("lnlp+mte", "fast"), ("all four", "all"),
            ("  VLM pass", "VLM pass"), ("  similarity (TokenSAR)", "similarity"),
            ("  CLIP (CLIPS)", "CLIP"), ("  rest: steps, alignment, estimators", "rest"),
            ("naive (pass per step, call per token)", "naive"),
            (f"raw encoder alone, {n_texts} distinct texts", "raw encoder"),
            ("all four, WARM caches (not a first pass)", "warm")]
    for label, key in rows:
        speed = f"{ctx['n_tokens'] / statistics.median(t[key]):9.0f} tok/s" \
            if not label.startswith("  ") and key != "raw encoder" else ""
        print(f"  {label:42s} {_summary(t[key], per)}  {speed}")
    print("ratios within each repeat, median [min-max]:")
    print(f"  lnlp+mte / bare                   = {_ratio(t['fast'], t['bare'])}  (target <= 1.2x)")
    print(f"  naive / all four                  = {_ratio(t['naive'], t['all'])}  (target >= 5x)")
    print(f"  all four / bare                   = {_ratio(t['all'], t['bare'])}")
    print(f"  all four cold / warm              = {_ratio(t['all'], t['warm'])}")
    print(f"  similarity / raw encoder time     = {_ratio(t['similarity'], t['raw encoder'])}"
          "  (target <= 1.1x)")
    share = [s / a for s, a in zip(t["similarity"], t["all"], strict=True)]
    print(f"  similarity share of all four      = {100 * statistics.median(share):.0f}%")
    print(f"{load_before} (before), {_load()} (after), {os.cpu_count()} CPUs")


def reference_chains(source: str, n: int, workdir: Path) -> tuple[list[Any], list[str], Any]:
    """(samples, response texts, image loader): ShapesWorld chains with their images, or the
    first ``n`` A-OKVQA reference chains (``source`` = the annotated file; each step gets a final
    "." so it splits as a sentence; one grey image for every sample: COCO is not here)."""
    from PIL import Image

    from mmboundary.shapesworld.scenes import read_split, write_split

    if source == "shapes":
        samples = read_split(write_split(workdir / "agreement", n, "test"))
        return samples, [" ".join(s.reference.steps) for s in samples], \
            lambda s: (Image.open(s.image).convert("RGB"), s.id)
    from mmboundary.data.loaders import load_annotated

    samples = load_annotated(source).samples[:n]
    texts = [" ".join(t.rstrip(" .") + "." for t in s.reference.steps) for s in samples]
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    return samples, texts, lambda s: (grey, "grey")


def precision_agreement(source: str, n: int) -> None:
    """float32 vs bfloat16 similarity on the same responses: max |delta TokenSAR|, Spearman of
    the fused C and level agreement (calibrator fitted on the float32 scores), similarity time.
    Scored by the shipped (trained) ShapesWorld VLM and CLIP, whose log-probs vary: a random
    model's are all ~log(vocab), which would hide any change in TokenSAR's weights."""
    import numpy as np
    from scipy.stats import spearmanr

    from mmboundary.confidence.normalize import ConfidenceCalibrator
    from mmboundary.confidence.pipeline import EstimateConfig, estimate_batch
    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.similarity import default_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import shipped_world_clip_path, shipped_world_model_path

    vlm = VLM.from_pretrained(shipped_world_model_path(), device="cpu")
    clip = ClipScorer.from_pretrained(shipped_world_clip_path())

    samples, texts, loader = reference_chains(source, n, Path(tempfile.mkdtemp()))
    config = EstimateConfig(batch_size=8, parse_statements=False)
    raw, seconds = {}, {}
    for precision in ("float32", "bfloat16"):
        sim = default_similarity(precision)
        clear_caches(sim, clip)
        with stage_clock(vlm, sim, clip) as clock:
            out = [r for i in range(0, len(samples), 8) for r in estimate_batch(
                vlm, samples[i:i + 8], texts[i:i + 8], similarity=sim, clip=clip,
                config=config, image_loader=loader)]
        seconds[precision] = clock["seconds"]["similarity"]
        raw[precision] = [st.raw_scores for r in out for st in r.steps if st.raw_scores]
    calibrator = ConfidenceCalibrator().fit(raw["float32"])
    c32, c16 = (calibrator.transform(raw[p]) for p in ("float32", "bfloat16"))
    t32, t16 = (np.array([r["tokensar"] for r in raw[p]]) for p in ("float32", "bfloat16"))
    name = "ShapesWorld" if source == "shapes" else Path(source).name
    print(f"  {name}: {len(samples)} chains, {len(t32)} steps: max |delta TokenSAR| "
          f"{np.max(np.abs(t16 - t32)):.2e} (TokenSAR range {t32.min():.3f}-{t32.max():.3f}); "
          f"Spearman(C) {spearmanr([c.confidence for c in c32], [c.confidence for c in c16])[0]:.5f}; "
          f"levels equal {np.mean([a.level == b.level for a, b in zip(c32, c16, strict=True)]):.1%}; "
          f"similarity time bf16 / fp32 = {seconds['bfloat16'] / seconds['float32']:.2f}x")


def main() -> None:
    args = parse_args()
    load_before = _load()
    ctx = setup(args)
    times, n_texts = measure(ctx, args.repeats)
    report(args, ctx, times, n_texts, load_before)
    if args.agreement:
        print("similarity precision agreement, bfloat16 vs float32 (one cold run each):")
        for source in args.agreement:
            precision_agreement(source, args.agreement_n)
        print(f"{_load()} (after agreement)")


if __name__ == "__main__":
    main()
