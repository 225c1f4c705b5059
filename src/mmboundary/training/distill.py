"""Keeping the vanilla model's content through the warm-up: a distillation term (ours).

The warm-up teaches statements by cross-entropy on the vanilla model's own responses with a
statement after each step. On a small model that also moves the content: the model's greedy
chains change and its accuracy falls (README, #12). ``SFTConfig.distill_weight`` (lambda > 0) adds,
on every content token of the assistant turn (statement tokens excluded),

    lambda * KL( p_vanilla(. | context without statements) || p_model(. | context) ),

the teacher being the vanilla model run on the same sequence with the statement tokens removed,
i.e. on exactly the context it produced the content in. The teacher's distribution at a content
token is therefore the vanilla model's own (soft targets, margins included), and the statements
are learned by the cross-entropy alone. Statement tokens are found with the one statement parser
(``text.statement_parser``) on the decoded assistant turn: a token overlapping a statement span
(from the step's content end to its final punctuation) is a statement token.

With LoRA the teacher is the student with its adapters disabled (no second copy of the weights);
with full fine-tuning a frozen copy of the vanilla model is loaded.

``SFTConfig.content_only_dataset`` (ours) mixes in a second set, the same responses with every
step's level drawn at random (``sft_data.random_levels``), whose statement tokens get weight 0: the
content after each statement is taught under every statement, so that it depends less on which
statement the model said (on the world model: more chains keep the vanilla model's content and
the probe teacher gets part of its accuracy back, not enough to adopt; README, "Content that does
not read the statements"). The cross-entropy is then the mean over the tokens trained in each
micro-batch.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
_STEP_END = " \t\n.!?\u2026"  # what ends a step after its content or statement


def words_end(text: str, step: Any) -> int:
    """Where a parsed step's words end in ``text``: before its final punctuation and space."""
    return step.start + len(text[step.start:step.end].rstrip(_STEP_END))


def statement_span(text: str, step: Any) -> tuple[int, int] | None:
    """The ``[start, end)`` of a parsed step's statement in ``text``: from the step's content end
    to its final punctuation (which stays content: the vanilla step ended with it); ``None`` for
    a step without one.

    >>> from mmboundary.text import parse_steps
    >>> text = "There are 2 circles, but I'm not sure."
    >>> start, end = statement_span(text, parse_steps(text)[0])
    >>> text[start:end]
    ", but I'm not sure"
    """
    if step.statement is None or step.content_end is None:
        return None
    stop = words_end(text, step)
    return (step.content_end, stop) if stop > step.content_end else None


def statement_char_spans(texts: list[str], parser: Any) -> list[list[tuple[int, int]]]:
    """Per text, the :func:`statement_span` of each step that has a statement."""
    out: list[list[tuple[int, int]]] = []
    for text, steps in zip(texts, parser.parse_many(texts), strict=True):
        out.append([span for step in steps if (span := statement_span(text, step)) is not None])
    return out


def statement_index(start: int, end: int, spans: list[tuple[int, int]]) -> int | None:
    """The index of the first statement span a token's character span ``[start, end)`` overlaps
    (``None`` for an empty token span or one outside every statement): what makes a token a
    statement token, for the loss masks here and for ``statement_rows``."""
    if end <= start:
        return None
    return next((k for k, (s_start, s_end) in enumerate(spans)
                 if start < s_end and s_start < end), None)


def statement_token_mask(tokenizer: Any, input_ids: Any, labels: Any, parser: Any) -> Any:
    """Bool tensor like ``input_ids``: True at the assistant-turn tokens (``labels != -100``) that
    overlap a statement."""
    import torch

    from mmboundary.models.token_stats import decode_offsets

    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    rows, texts, all_spans = [], [], []
    for b in range(input_ids.shape[0]):
        positions = (labels[b] != IGNORE).nonzero().flatten().tolist()
        if not positions:
            continue
        ids = input_ids[b, positions].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        spans = decode_offsets(tokenizer, ids, text)
        rows.append((b, positions))
        texts.append(text)
        all_spans.append(spans)
    for (b, positions), spans, statements in zip(rows, all_spans,
                                                 statement_char_spans(texts, parser), strict=True):
        for position, (start, end) in zip(positions, spans, strict=True):
            if statement_index(start, end, statements) is not None:
                mask[b, position] = True
    return mask


def teacher_inputs(inputs: dict[str, Any], keep: Any, pad_token_id: int,
                   padding_side: str) -> tuple[dict[str, Any], Any]:
    """The batch with the tokens where ``keep`` is False removed from every row.

    Every tensor laid out like ``input_ids`` ([batch, length]: attention mask, token types) is
    gathered the same way and re-padded on ``padding_side``; the rest (pixel values, grid sizes)
    is passed as is; ``labels`` is dropped. Also returns ``index`` ([batch, length], long): each
    kept token's position in the teacher row, -1 elsewhere."""
    import torch

    input_ids = inputs["input_ids"]
    batch, length = input_ids.shape
    attention = inputs.get("attention_mask")
    present = keep & (attention.bool() if attention is not None else torch.ones_like(keep))
    kept = [present[b].nonzero().flatten() for b in range(batch)]
    width = max(int(k.numel()) for k in kept)
    index = torch.full((batch, length), -1, dtype=torch.long, device=input_ids.device)
    laid_out = {key: value for key, value in inputs.items()
                if key != "labels" and torch.is_tensor(value) and value.shape[:2] == (batch, length)}
    out = {key: torch.full((batch, width), pad_token_id if key == "input_ids" else 0,
                           dtype=value.dtype, device=value.device)
           for key, value in laid_out.items()}
    for b, positions in enumerate(kept):
        n = int(positions.numel())
        offset = width - n if padding_side == "left" else 0
        for key, value in laid_out.items():
            out[key][b, offset:offset + n] = value[b, positions]
        index[b, positions] = torch.arange(offset, offset + n, device=input_ids.device)
    rest = {key: value for key, value in inputs.items() if key != "labels" and key not in out}
    return {**rest, **out}, index


def content_kl(student_logits: Any, teacher_logits: Any, labels: Any, statement: Any,
               index: Any) -> tuple[Any, int]:
    """Mean over content target tokens of KL(teacher || student), and how many there were.

    A content target token sits at student position i (``labels[b, i] != -100``, not a statement
    token, i >= 1); the student predicts it from position i-1, the teacher from its own position
    ``index[b, i] - 1`` (the token before it once the statements are gone)."""
    import torch

    target = (labels != IGNORE) & ~statement
    target[:, 0] = False
    rows, cols = target.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return student_logits.sum() * 0.0, 0
    teacher_cols = index[rows, cols] - 1
    if bool((teacher_cols < 0).any()):
        raise ValueError("distillation: a content token has no teacher position (was it removed "
                         "with the statements?)")
    log_s = torch.log_softmax(student_logits[rows, cols - 1].float(), dim=-1)
    log_t = torch.log_softmax(teacher_logits[rows, teacher_cols].float(), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)
    return kl.mean(), int(rows.numel())


def distill_trainer_class() -> type:
    """``SFTTrainer`` with the distillation term (built lazily: TRL is imported here)."""
    import torch
    from trl import SFTTrainer

    class DistillSFTTrainer(SFTTrainer):
        """Loss = token-mean cross-entropy on the assistant turn + lambda * ``content_kl``."""

        def __init__(self, *args: Any, distill_weight: float, content_weight: float = 1.0,
                     teacher: Any = None, parser: Any = None, content_only: bool = False,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            from mmboundary.text.statement_parser import default_parser

            self.distill_weight = distill_weight
            self.content_weight = content_weight
            self.teacher = teacher
            self.statement_parser = parser or default_parser()
            if teacher is not None:
                teacher.to(self.accelerator.device).eval().requires_grad_(False)
            self.content_only = content_only
            if content_only:
                collate = self.data_collator

                def collate_flagged(examples: list[dict[str, Any]]) -> dict[str, Any]:
                    # each record's content_only flag (prepare_dataset) rides beside the batch
                    flags = [int(e.pop("content_only")) for e in examples]
                    batch = collate(examples)
                    batch["content_only"] = torch.tensor(flags, dtype=torch.bool)
                    return batch

                self.data_collator = collate_flagged

        def _teacher_logits(self, model: Any, inputs: dict[str, Any]) -> Any:
            with torch.no_grad():
                if self.teacher is not None:
                    return self.teacher(**inputs, use_cache=False).logits
                with self.accelerator.unwrap_model(model).disable_adapter():
                    return model(**inputs, use_cache=False).logits

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            mode = "train" if model.training else "eval"
            content_only = inputs.pop("content_only", None)
            labels = inputs["labels"]
            forward = {key: value for key, value in inputs.items() if key != "labels"}
            outputs = model(**forward, use_cache=False)
            logits = outputs.logits
            processor = self.processing_class
            tokenizer = getattr(processor, "tokenizer", processor)
            statement = statement_token_mask(tokenizer, inputs["input_ids"], labels,
                                             self.statement_parser)
            shift_labels = labels[:, 1:]
            valid = shift_labels != IGNORE  # full-vocabulary floats only where there is a label
            per_token = torch.nn.functional.cross_entropy(
                logits[:, :-1][valid].float(), shift_labels[valid], reduction="none")
            weight = torch.where(statement[:, 1:][valid], 1.0, self.content_weight)
            tokens = valid.sum() if num_items_in_batch is None else num_items_in_batch
            if content_only is not None:
                # statement tokens of content-only rows are not trained; the mean is over the
                # tokens that are, in this micro-batch
                row = content_only.to(labels.device)[:, None].expand_as(shift_labels)[valid]
                weight = torch.where(statement[:, 1:][valid] & row, 0.0, weight)
                tokens = (weight > 0).sum()
            ce_sum = (per_token * weight).sum()
            ce = ce_sum / torch.as_tensor(tokens, device=ce_sum.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None \
                    and content_only is None:
                ce = ce * self.accelerator.num_processes
            if self.distill_weight > 0:
                t_inputs, index = teacher_inputs(inputs, ~statement, tokenizer.pad_token_id,
                                                 tokenizer.padding_side)
                kl, n_content = content_kl(logits, self._teacher_logits(model, t_inputs), labels,
                                           statement, index)
            else:
                kl, n_content = ce.new_zeros(()), int(((labels != IGNORE) & ~statement).sum())
            self._metrics[mode]["cross_entropy"].append(float(ce.detach()))
            self._metrics[mode]["distill_kl"].append(float(kl.detach()))
            self._metrics[mode]["content_tokens"].append(float(n_content))
            loss = ce + self.distill_weight * kl
            return (loss, outputs) if return_outputs else loss

    return DistillSFTTrainer
