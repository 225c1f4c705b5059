"""A VLM answers a batch of samples: ``Response`` objects with per-token statistics.

Shared by `mmboundary generate` (streamed to a resumable JSONL) and the demo. A sample whose image
is missing or not decodable, whose prompt does not fit the model's context (checked before the
model runs), or whose generation fails, becomes a ``Response`` with ``text == ""`` and
``meta["error"]`` / ``error_reason`` / ``error_field`` (``data.failures.RecordFailure``); the other
samples of the batch are unaffected (a failing batch is redone sample by sample).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from mmboundary.data.failures import RecordFailure
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
        if isinstance(outcome, RecordFailure):
            out.append(Response(sample_id=sample.id, text="", model=vlm.name,
                                meta={**base, **outcome.to_meta()}))
        else:
            out.append(Response(sample_id=sample.id, text=outcome.text, model=vlm.name,
                                token_stats=outcome.token_stats,
                                meta={**base, "finished": outcome.finished}))
    return out


_LONGEST_TOKEN: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _longest_token(tokenizer: Any) -> int:
    """Characters of the vocabulary's longest token (cached per tokenizer)."""
    if tokenizer not in _LONGEST_TOKEN:
        _LONGEST_TOKEN[tokenizer] = max(1, max(map(len, tokenizer.get_vocab()), default=1))
    return _LONGEST_TOKEN[tokenizer]


def check_input_length(vlm: Any, prompt: str, image: Any, response: str | None = None,
                       max_new_tokens: int = 0) -> int:
    """Tokens of prompt + image (+ ``response``, + ``max_new_tokens``); ``InputTooLongError``
    (naming the field and the length) beyond ``vlm.context_length``, before the model runs. A
    text longer than the context even at the vocabulary's longest token per token is refused
    without tokenising it (a lower bound: never a false refusal). 0 when the limit is unknown."""
    from mmboundary.models.vlm import InputTooLongError

    limit = getattr(vlm, "context_length", None)
    if not isinstance(limit, int):
        return 0
    longest = _longest_token(vlm.tokenizer)
    for field, text in (("question", prompt), ("response", response or "")):
        if (at_least := len(text) // longest) > limit:
            raise InputTooLongError(at_least, limit, field, f"the {field} is at least "
                                    f"{at_least} tokens ({len(text)} characters)")
    prompt_tokens = vlm.prompt_token_count(prompt, image)
    response_tokens = len(vlm.tokenizer(response, add_special_tokens=False)["input_ids"]) \
        if response else 0
    total = prompt_tokens + response_tokens + max_new_tokens
    if total > limit:
        field = "question" if prompt_tokens + max_new_tokens > limit else "response"
        parts = [f"prompt {prompt_tokens} (image included; {len(prompt)} characters)"]
        parts += [f"response {response_tokens}"] if response else []
        parts += [f"max_new_tokens {max_new_tokens}"] if max_new_tokens else []
        raise InputTooLongError(total, limit, field,
                                f"the input is {total} tokens ({' + '.join(parts)})")
    return total


def _input_failure(vlm: Any, sample: Sample, load: Callable[[Sample], Any], prompt: str,
                   max_new_tokens: int) -> tuple[Any, RecordFailure | None]:
    """(image, None), or (None, why the sample cannot go to the model): the image is missing or
    not decodable, or prompt + image + ``max_new_tokens`` exceed the model's context."""
    from mmboundary.data.images import BadImageError
    from mmboundary.models.vlm import InputTooLongError

    try:
        image = load(sample)
    except FileNotFoundError as err:
        return None, RecordFailure(sample.id, "image", "missing_image", str(err))
    except BadImageError as err:
        return None, RecordFailure(sample.id, "image", "bad_image", str(err))
    except Exception as err:  # noqa: BLE001 - recorded as this sample's error line
        return None, RecordFailure(sample.id, "image", "error", f"{type(err).__name__}: {err}")
    try:
        check_input_length(vlm, prompt, image, max_new_tokens=max_new_tokens)
    except InputTooLongError as err:
        return None, RecordFailure(sample.id, err.field, "too_long", str(err))
    return image, None


def _run_batch(vlm: Any, batch: list[Sample], load: Callable[[Sample], Any],
               decoding: dict[str, Any], instruction: str | None
               ) -> list[tuple[Sample, int, Any]]:
    """(sample, sample_index, Generation or RecordFailure) for every response of the batch."""
    n = decoding.get("num_return_sequences", 1)
    results: list[tuple[Sample, int, Any]] = []
    ready, images, prompts = [], [], []
    for sample in batch:
        prompt = vlm.prompt_text(sample, instruction)
        image, failure = _input_failure(vlm, sample, load, prompt,
                                        decoding.get("max_new_tokens", 128))
        if failure is not None:
            results += [(sample, k, failure) for k in range(n)]
        else:
            ready.append(sample)
            images.append(image)
            prompts.append(prompt)
    if not ready:
        return results
    try:
        gens = vlm.generate(prompts, images, batch_size=len(prompts), **decoding)
    except Exception as err:  # noqa: BLE001 - isolate the failing sample one by one
        if len(ready) == 1:
            failure = RecordFailure(ready[0].id, "<model pass>", "error", f"generate: {err!r}")
            return results + [(ready[0], k, failure) for k in range(n)]
        for sample in ready:
            results += _run_batch(vlm, [sample], load, decoding, instruction)
        return results
    for j, gen in enumerate(gens):
        results.append((ready[gen.prompt_index], j % n, gen))
    order = {id(s): i for i, s in enumerate(batch)}  # input order, errors included
    return sorted(results, key=lambda r: (order[id(r[0])], r[1]))
