"""Per-token statistics of a response: log-probs and entropies from raw logits, each token's
character span, and the prompt+response batches teacher-forced scoring runs on.

Used by the VLM backend (``models.vlm``) and by everything that scores exact token ids outside it
(stepwise guided decoding, the distillation teacher, the scoring benchmark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def logprobs_and_entropies(
    logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row log p(target) and full entropy H = -sum p log p from raw logits ``[N, V]``.

    Float32, ``chunk_size`` rows at a time. Returns two float32 tensors of shape ``[N]``.
    """
    import torch

    lps, ents = [], []
    for start in range(0, logits.shape[0], chunk_size):
        logp = torch.log_softmax(logits[start : start + chunk_size].float(), dim=-1)
        tgt = targets[start : start + chunk_size].to(logp.device).long()
        lps.append(logp.gather(-1, tgt[:, None])[:, 0])
        ents.append(-(logp.exp() * logp).sum(-1))
    if not lps:
        empty = torch.zeros(0, dtype=torch.float32)
        return empty, empty.clone()
    return torch.cat(lps), torch.cat(ents)


def decode_offsets(tokenizer: Any, ids: list[int], text: str) -> list[tuple[int, int]]:
    """Character span of each token of ``ids`` in ``text`` (= their decoded string).

    The tokenizer's own offset mapping when re-encoding ``text`` gives back ``ids``; otherwise
    exact spans from the decoded prefixes: token i covers [end_{i-1}, end_i) where end_i is the
    length of the longest prefix of ``text`` that ``decode(ids[:i+1])`` agrees with. Tokens
    holding part of a multi-byte character all span that character (spans may then overlap, as
    in the tokenizer's own offset mapping).
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == list(ids):
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    prefixes = tokenizer.batch_decode(
        [ids[: i + 1] for i in range(len(ids))], skip_special_tokens=True,
        clean_up_tokenization_spaces=False)
    offsets, prev = [], 0
    for prefix in prefixes:
        end = len(prefix) if text.startswith(prefix) else _common_prefix_len(prefix, text)
        end = max(prev, min(end, len(text)))
        # a token ending inside a character spans that character, as in the offset mapping
        offsets.append((prev, end) if end > prev else (prev, min(prev + 1, len(text))))
        prev = end
    return offsets


def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def append_responses(enc: Any, responses: list[list[int]], pad_id: int) -> tuple[dict, int]:
    """Left-padded prompt+response sequences from a left-padded prompt batch.

    Per-token inputs (``input_ids``, ``attention_mask``, ``mm_token_type_ids``) are rebuilt; image
    inputs pass through. Returns the inputs and ``logits_to_keep`` = longest response + 1.
    """
    import torch

    mask = enc["attention_mask"].bool()
    rows = []
    for b, resp in enumerate(responses):
        prompt = enc["input_ids"][b][mask[b]]
        rows.append(torch.cat([prompt, torch.tensor(resp, dtype=prompt.dtype,
                                                    device=prompt.device)]))
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=rows[0].dtype, device=rows[0].device)
    attention = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, length - len(row) :] = row
        attention[b, length - len(row) :] = 1
    inputs = dict(enc)
    inputs.update(input_ids=ids, attention_mask=attention)
    if "mm_token_type_ids" in enc:
        types = torch.zeros_like(ids)
        for b, resp in enumerate(responses):
            prompt_types = enc["mm_token_type_ids"][b][mask[b]]
            end = length - len(resp)
            types[b, end - len(prompt_types) : end] = prompt_types
        inputs["mm_token_type_ids"] = types
    return inputs, max(len(r) for r in responses) + 1
