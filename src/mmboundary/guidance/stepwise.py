"""Step-wise decoding: continue a response from exact token ids and stop at the end of a step.

A step is one sentence (METHOD.md section 1, ``text.steps.split_steps``). Whether a sentence has
ended is only known once the next step has begun: "3." may become "3.5", "no." may go on "no. it
..." (a lowercase continuation) -- ``split_steps`` decides every boundary from the first
non-space character after it. So a row stops at the first token after which ``split_steps`` of
the current step's text (the carried ``tail`` + the new tokens) finds a SECOND step **(ours)**;
the tokens from that second step's start on (the look-ahead, usually " " + one word) are not
thrown away: they are the next step's first tokens (``cut_step``). A greedy chain decoded step
by step is therefore token for token the chain decoded in one go, at the same token count.

Continuation is from token ids, never from re-tokenised text: a generated token sequence need
not be the tokenizer's canonical encoding of its own text, and re-encoding would change the
context the model sees.

Token statistics come from the RAW logits, as in ``VLM.generate``: log p(y_t | c_t) and the full
next-token entropy, whatever the temperature / top-p of the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmboundary.text.steps import split_steps

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass
class Chunk:
    """Response tokens with their raw-logit statistics; ``finished`` = ended at a stop token.

    Only text tokens are kept (stop tokens and special tokens are not part of the text, as in
    ``VLM.generate``)."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    finished: bool = False

    def __add__(self, other: Chunk) -> Chunk:
        return Chunk(self.ids + other.ids, self.logprobs + other.logprobs,
                     self.entropies + other.entropies, other.finished)

    def __len__(self) -> int:
        return len(self.ids)

    def mean_logprob(self) -> float:
        """(1/L) sum_l log p_l over the chunk's tokens; -inf when it has none."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("-inf")


def completed_step_end(text: str) -> int | None:
    """End (exclusive, in ``text``) of the first step once a second step has begun, else None.

    >>> completed_step_end("There are 3."), completed_step_end("There are 3.5 red")
    (None, None)
    >>> completed_step_end("There are 3. So")
    12
    """
    steps = split_steps(text)
    return steps[0].end if len(steps) >= 2 else None


def cut_step(tokenizer: Any, chunk: Chunk) -> tuple[Chunk, Chunk | None]:
    """(the first step's tokens, the next step's first tokens) of ``chunk``; the second is None
    when the chunk holds no completed step (it is all one, possibly unfinished, step).

    A token belongs to the first step when it starts before that step's end (a token that
    straddles the boundary holds step content); the whitespace after the step goes with the
    next step, as its leading space does in byte-level vocabularies."""
    from mmboundary.models.token_stats import decode_offsets

    text = decode(tokenizer, chunk.ids)
    end = completed_step_end(text)
    if end is None:
        return chunk, None
    offsets = decode_offsets(tokenizer, chunk.ids, text)
    k = next((i for i, (start, _) in enumerate(offsets) if start >= end), len(offsets))
    head = Chunk(chunk.ids[:k], chunk.logprobs[:k], chunk.entropies[:k], False)
    rest = Chunk(chunk.ids[k:], chunk.logprobs[k:], chunk.entropies[k:], chunk.finished)
    return head, rest


def decode(tokenizer: Any, ids: list[int]) -> str:
    """The text of response token ids (as ``VLM.generate`` decodes it)."""
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class _StepStop:
    """HF stopping criterion: a row stops once its tail + new tokens hold a completed step
    (``stop_at_step``) or it has generated its ``budget``; ``stopped[r]`` = new tokens then."""

    def __init__(self, tokenizer: Any, tails: list[list[int]], budgets: list[int],
                 start: int, stop_at_step: bool) -> None:
        self.tokenizer, self.tails, self.budgets = tokenizer, tails, budgets
        self.start, self.stop_at_step = start, stop_at_step
        self.stopped: list[int | None] = [None] * len(tails)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        n_new = input_ids.shape[1] - self.start
        for row in range(input_ids.shape[0]):
            if self.stopped[row] is None:
                new = input_ids[row, self.start :].tolist()
                text = decode(self.tokenizer, self.tails[row] + new)
                if n_new >= self.budgets[row] or (
                        self.stop_at_step and completed_step_end(text) is not None):
                    self.stopped[row] = n_new
            done[row] = self.stopped[row] is not None
        return done


def continue_generation(vlm: Any, prompts: list[str], images: list[Image.Image],
                        prefixes: list[list[int]], tails: list[list[int]], budgets: list[int], *,
                        do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                        num_return_sequences: int = 1, stop_at_step: bool = True
                        ) -> list[Chunk]:
    """New tokens after prompt + image + ``prefixes[i]`` + ``tails[i]``, one batched call.

    Returns ``len(prompts) * num_return_sequences`` chunks, prompt-major (as ``VLM.generate``).
    Row i generates at most ``budgets[i]`` tokens (>= 1) and, with ``stop_at_step``, stops once
    ``tails[i]`` + its new tokens hold a completed step (``completed_step_end``); a chunk is the
    row's new text tokens (not the tail), ``finished`` when it ended at a stop token.
    """
    import torch

    from mmboundary.models.token_stats import append_responses, logprobs_and_entropies

    if min(budgets, default=1) < 1:
        raise ValueError(f"continue_generation: every budget must be >= 1, got {budgets}")
    n = num_return_sequences
    enc = vlm._encode(prompts, images)
    inputs, _ = append_responses(enc, [p + t for p, t in zip(prefixes, tails, strict=True)],
                                 vlm.tokenizer.pad_token_id)
    start = inputs["input_ids"].shape[1]
    rows = [i for i in range(len(prompts)) for _ in range(n)]
    stop = _StepStop(vlm.tokenizer, [tails[i] for i in rows], [budgets[i] for i in rows], start,
                     stop_at_step)
    sampling = (dict(temperature=temperature, top_p=top_p, top_k=0) if do_sample
                else dict(temperature=None, top_p=None, top_k=None))
    with torch.inference_mode():
        out = vlm.model.generate(
            **inputs, max_new_tokens=max(budgets), do_sample=do_sample,
            num_return_sequences=n, output_logits=True, return_dict_in_generate=True,
            eos_token_id=vlm.stop_ids, pad_token_id=vlm.tokenizer.pad_token_id,
            suppress_tokens=vlm.suppress_ids or None, stopping_criteria=[stop], **sampling)
    new = out.sequences[:, start:]
    stats = [logprobs_and_entropies(logits, new[:, t]) for t, logits in enumerate(out.logits)]
    lp = torch.stack([s[0] for s in stats], dim=1).cpu()
    ent = torch.stack([s[1] for s in stats], dim=1).cpu()
    return [_chunk(vlm, new[r].tolist(), lp[r], ent[r], stop.stopped[r]) for r in range(len(rows))]


def _chunk(vlm: Any, ids: list[int], lp: Any, ent: Any, stopped: int | None) -> Chunk:
    """A row's text tokens up to where it stopped (criterion) or its first stop token."""
    ids = ids if stopped is None else ids[:stopped]
    stop_ids = set(vlm.stop_ids)
    cut = next((i for i, tok in enumerate(ids) if tok in stop_ids), len(ids))
    special = set(vlm.tokenizer.all_special_ids)
    keep = [i for i in range(cut) if ids[i] not in special]
    return Chunk([ids[i] for i in keep], [float(lp[i]) for i in keep],
                 [float(ent[i]) for i in keep], finished=cut < len(ids))
