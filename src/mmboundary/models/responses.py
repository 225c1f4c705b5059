"""A VLM answers a batch of samples: ``Response`` objects with per-token statistics.

Shared by `mmboundary generate` (streamed to a resumable JSONL) and the demo. A sample whose image
cannot be loaded, or whose generation fails, becomes a ``Response`` with ``text == ""`` and
``meta["error"]`` = the reason; the other samples of the batch are unaffected (a failing batch is
redone sample by sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mmboundary.data.schema import Response, Sample


def generate_responses(vlm: Any, samples: Sequence[Sample], load_image: Callable[[Sample], Any],
                       *, instruction: str | None = None, meta: dict[str, Any] | None = None,
                       **decoding: Any) -> list[Response]:
    """``num_return_sequences`` responses per sample, sample-major, in input order.

    ``decoding`` goes to ``VLM.generate`` (max_new_tokens, do_sample, temperature, top_p,
    num_return_sequences, seed); every response's ``meta`` = ``meta`` + ``sample_index`` +
    ``finished`` (or ``error``).
    """
    meta = meta or {}
    out = []
    for sample, index, outcome in _run_batch(vlm, list(samples), load_image, decoding,
                                             instruction):
        base = {"sample_index": index, **meta}
        if isinstance(outcome, str):
            out.append(Response(sample_id=sample.id, text="", model=vlm.name,
                                meta={**base, "error": outcome}))
        else:
            out.append(Response(sample_id=sample.id, text=outcome.text, model=vlm.name,
                                token_stats=outcome.token_stats,
                                meta={**base, "finished": outcome.finished}))
    return out


def _run_batch(vlm: Any, batch: list[Sample], load: Callable[[Sample], Any],
               decoding: dict[str, Any], instruction: str | None
               ) -> list[tuple[Sample, int, Any | str]]:
    """(sample, sample_index, Generation or error reason) for every response of the batch."""
    n = decoding.get("num_return_sequences", 1)
    results: list[tuple[Sample, int, Any | str]] = []
    ready, images = [], []
    for sample in batch:
        try:
            images.append(load(sample))
            ready.append(sample)
        except Exception as err:  # noqa: BLE001 - recorded as this sample's error line
            results += [(sample, k, f"image: {err}") for k in range(n)]
    if not ready:
        return results
    prompts = [vlm.prompt_text(s, instruction) for s in ready]
    try:
        gens = vlm.generate(prompts, images, batch_size=len(prompts), **decoding)
    except Exception as err:  # noqa: BLE001 - isolate the failing sample one by one
        if len(ready) == 1:
            return results + [(ready[0], k, f"generate: {err!r}") for k in range(n)]
        for sample in ready:
            results += _run_batch(vlm, [sample], load, decoding, instruction)
        return results
    for j, gen in enumerate(gens):
        results.append((ready[gen.prompt_index], j % n, gen))
    order = {id(s): i for i, s in enumerate(batch)}  # input order, errors included
    return sorted(results, key=lambda r: (order[id(r[0])], r[1]))
