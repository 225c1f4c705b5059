"""Re-teaching the statements alone: train only the output rows of statement tokens (ours).

On the 0.6M-parameter world model every way of teaching the statements found so far also moved
the content (README, #12): their gradients reach weights the content shares, and the first step's
near-tie tokens flip. ``SFTConfig.trainable = "statement-rows"`` trains a model that already
states its confidence (a warm-up or RL model) with every parameter frozen except the rows
``W[v]`` of the output embedding (``lm_head``) for the tokens ``v`` that occur in the training
set's statements and never in its content. The logit of every other token is ``W[u] . h`` with
``W[u]`` and ``h`` (the hidden state) unchanged, so at every position the content tokens keep
their logits and their order: the content can change only where a statement token overtakes a
content token, or where a re-taught statement, read as context, changes what follows.

Which level a statement says is decided by its first differing tokens (", but **this** is just a
guess" / ", but **I** can't ..."), each the argmax of a softmax whose trainable part is a linear
function of the hidden state there: the re-teach fits a linear read-out of the model's own state,
the role the probe teacher's probe plays. With tied input/output embeddings (``tie_word_
embeddings``) the same rows are the statement tokens' input embeddings, which the content after a
statement reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mmboundary.training.distill import statement_char_spans, statement_index


@dataclass(frozen=True)
class StatementRows:
    """The token ids whose output rows are trained, and the ids excluded because the content
    uses them too (both sorted)."""

    trained: list[int]
    shared: list[int]


def statement_rows(texts: Iterable[str], tokenizer: Any, parser: Any,
                   choice_only: bool = False) -> StatementRows:
    """Token ids occurring in a statement span of some text and in no content of any text.

    A token is a statement token when its character span overlaps a statement span
    (``distill.statement_span``: from the step's content end to its final punctuation);
    every other token with a non-empty span is content. ``choice_only``: only the tokens where
    the set's statements part, i.e. in the trie of their token sequences the children of a node
    with two or more children (", but **this** ..." / ", but **I** ..."); the tokens that merely
    continue a chosen statement ("certainty" after "with total") are left out, so they cannot
    overtake a content token they share a context with ("in total")."""
    from mmboundary.models.token_stats import decode_offsets

    texts = list(texts)
    statement: set[int] = set()
    content: set[int] = set()
    trie: dict = {}
    for text, spans in zip(texts, statement_char_spans(texts, parser), strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False)
        sequences: list[list[int]] = [[] for _ in spans]
        for token, (start, end) in zip(ids, decode_offsets(tokenizer, ids, text), strict=True):
            if end <= start:
                continue
            k = statement_index(start, end, spans)
            if k is not None:
                statement.add(int(token))
                sequences[k].append(int(token))
            else:
                content.add(int(token))
        for sequence in sequences:
            node = trie
            for token in sequence:
                node = node.setdefault(token, {})
    if choice_only:
        statement = _choice_tokens(trie)
    trained = sorted(statement - content)
    if not trained:
        raise ValueError("statement-rows: no token occurs only in statements (every statement "
                         "token is also used by the content, or the set has no statements)"
                         + (" where the statements part" if choice_only else ""))
    return StatementRows(trained=trained, shared=sorted(statement & content))


def _choice_tokens(trie: dict) -> set[int]:
    """The children of every node of ``trie`` (nested dicts keyed by token id) that has two or
    more children."""
    out: set[int] = set()
    stack = [trie]
    while stack:
        node = stack.pop()
        if len(node) >= 2:
            out.update(node)
        stack.extend(node.values())
    return out


def restrict_to_rows(model: Any, token_ids: list[int]) -> Any:
    """Freeze every parameter of ``model`` but its output embedding, and zero that weight's
    gradient outside the rows ``token_ids`` (a hook: the optimizer sees zero there, and Adam
    without weight decay then leaves those rows exactly as they are). Returns the row mask."""
    import torch

    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"statement-rows: {type(model).__name__} has no output embedding weight")
    weight = head.weight
    if getattr(head, "bias", None) is not None:
        raise ValueError("statement-rows: the output layer has a bias; its entries for content "
                         "tokens would train (not supported)")
    vocab = weight.shape[0]
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"statement-rows: token ids {bad[:5]} outside the vocabulary ({vocab})")
    for param in model.parameters():
        param.requires_grad_(False)
    weight.requires_grad_(True)
    mask = torch.zeros(vocab, 1, dtype=weight.dtype, device=weight.device)
    mask[token_ids] = 1.0
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))
    return mask


def assistant_texts(dataset: Any) -> list[str]:
    """The assistant turn's text of every record of an SFT dataset (``messages`` layout)."""
    out = []
    for record in dataset:
        turn = record["messages"][-1]
        content = turn["content"]
        out.append(content if isinstance(content, str) else
                   "".join(part.get("text") or "" for part in content if part.get("type") == "text"))
    return out
