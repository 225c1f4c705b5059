"""The demo's test-time side: every system and baseline answers the test split, cached as JSONL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mmboundary.data.schema import Response, Sample
from mmboundary.demo.config import DemoConfig


def generate(model: str | Path, samples: Sequence[Sample], out: Path, config: DemoConfig, *,
             instruction: str | None = None, num_samples: int = 1, desc: str = "generate"
             ) -> list[list[Response]]:
    """Responses of ``model`` to every sample (greedy, or ``num_samples`` sampled ones), cached in
    ``out`` (JSONL); returns one list of responses per sample, in sample order."""
    from mmboundary.data.io import read_responses, write_jsonl_atomic

    if out.is_file():
        rows = read_responses(out)
        if len(rows) == len(samples) * num_samples:
            return [rows[i * num_samples:(i + 1) * num_samples] for i in range(len(samples))]
    from mmboundary.data.shapes import load_image
    from mmboundary.models.responses import generate_responses
    from mmboundary.models.vlm import VLM

    vlm = VLM.from_pretrained(model, device="cpu", dtype="float32")
    rows: list[Response] = []
    bar = tqdm(total=len(samples), desc=desc, unit="sample")
    for start in range(0, len(samples), config.batch_size):
        batch = list(samples[start:start + config.batch_size])
        rows += generate_responses(vlm, batch, load_image, instruction=instruction,
                                   max_new_tokens=config.max_new_tokens,
                                   do_sample=num_samples > 1, temperature=1.0,
                                   num_return_sequences=num_samples, seed=config.seed + start)
        bar.update(len(batch))
    bar.close()
    write_jsonl_atomic(out, rows)
    return [rows[i * num_samples:(i + 1) * num_samples] for i in range(len(samples))]


def system_predictions(config: DemoConfig, samples: list[Sample], models: dict[str, str],
                       vanilla: Path, calibrator: str, clip: Path, constant: float
                       ) -> dict[str, list[Response]]:
    """Predictions with step confidences for every system and baseline, by display name."""
    from mmboundary.confidence import ConfidenceCalibrator
    from mmboundary.evaluation import baselines as B
    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.similarity import default_similarity
    from mmboundary.models.vlm import VLM
    from mmboundary.text.matching import DEFAULT_STEP_TAU
    from mmboundary.text.statements import StatementParser, default_parser

    folder = config.out / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    sim = default_similarity()
    parser = default_parser()
    preds: dict[str, list[Response]] = {}

    greedy = [g[0] for g in generate(vanilla, samples, folder / "vanilla.jsonl", config,
                                     desc="vanilla")]
    preds["Vanilla (no confidence)"] = [B.plain_steps(r) for r in greedy]
    preds["Constant (train accuracy)"] = B.constant_confidence(greedy, constant)
    preds["Token probability"] = B.token_probability(greedy)
    vlm = VLM.from_pretrained(vanilla, device="cpu", dtype="float32")
    preds["Internal C (not verbalised)"] = B.internal_confidence(
        vlm, samples, greedy, calibrator=ConfidenceCalibrator.load(calibrator), similarity=sim,
        clip=ClipScorer.from_pretrained(clip, device="cpu"), image_loader=_loader())
    dpv = [g[0] for g in generate(vanilla, samples, folder / "dpv.jsonl", config,
                                  instruction=B.DPV_INSTRUCTION, desc="DPV")]
    preds["DPV (prompted number)"] = B.verbal_confidence(dpv, StatementParser(mode="numeric"))
    dps = [g[0] for g in generate(vanilla, samples, folder / "dps.jsonl", config,
                                  instruction=B.DPS_INSTRUCTION, desc="DPS")]
    preds["DPS (prompted statement)"] = B.verbal_confidence(dps, parser)
    k = config.sc_samples
    sampled = generate(vanilla, samples, folder / f"sampled{k}.jsonl", config, num_samples=k,
                       desc=f"SC x{k}")
    preds[f"SC (k={k})"] = B.self_consistency(greedy, sampled, sim, DEFAULT_STEP_TAU)
    sampled_dps = generate(vanilla, samples, folder / f"sampled{k}-dps.jsonl", config,
                           num_samples=k, instruction=B.DPS_INSTRUCTION, desc=f"Multisample x{k}")
    preds[f"Multisample (k={k})"] = B.multisample(sampled_dps, parser, sim, DEFAULT_STEP_TAU)
    for name, model in models.items():
        responses = [g[0] for g in generate(model, samples, folder / f"{slug(name)}.jsonl",
                                            config, desc=name)]
        preds[name] = B.verbal_confidence(responses, parser)
    return preds


def _loader() -> Any:
    from mmboundary.data.shapes import load_image

    def load(sample: Sample) -> tuple[Any, str]:
        return load_image(sample), sample.id

    return load


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
