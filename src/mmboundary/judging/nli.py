"""The ``nli`` step judge: a natural-language-inference cross-encoder reads (reference, step).

Premise = the aligned reference step, hypothesis = the predicted step. The model (a
sentence-transformers ``CrossEncoder`` folder with three labels, e.g. a local copy of
cross-encoder/nli-deberta-v3-base) gives p(entailment), p(neutral), p(contradiction) by softmax;
which output is which is read from the model config's ``id2label``, never assumed.

Rule (ours): correct iff p(entailment) >= ``threshold`` and p(entailment) > p(contradiction);
score = p(entailment). With ``check_answer`` an answer step ("So, the answer is X") is also judged
against the gold answer: its premise becomes the reference step plus "The answer is <gold>.".

No NLI weights ship on these machines: :func:`make_tiny_nli` builds a tiny random BERT-style
cross-encoder (offline tokenizer) for tests; its scores are meaningless, its plumbing is real.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmboundary.data.schema import extract_answer
from mmboundary.judging.base import JudgeItem, StepVerdict, register_judge

LABELS = ("entailment", "neutral", "contradiction")
DEFAULT_NLI_THRESHOLD = 0.5


def label_indices(id2label: dict[Any, str]) -> dict[str, int]:
    """Map ``entailment``/``neutral``/``contradiction`` to output indices from a config's
    ``id2label`` (names matched by prefix, case-insensitive: "ENTAILMENT", "entail", ...).

    >>> label_indices({0: "contradiction", 1: "entailment", 2: "neutral"})
    {'entailment': 1, 'neutral': 2, 'contradiction': 0}
    """
    found: dict[str, int] = {}
    for index, name in id2label.items():
        low = str(name).lower()
        for label in LABELS:
            if low.startswith(label[:7]):
                found[label] = int(index)
    missing = [label for label in LABELS if label not in found]
    if missing or len(id2label) != 3:
        raise ValueError(f"NLI model: config id2label {dict(id2label)} must name exactly the three "
                         f"labels {LABELS}; missing {missing}")
    return {label: found[label] for label in LABELS}


@register_judge("nli")
class NLIJudge:
    """Correct when the reference step entails the predicted step (module docstring).

    Args:
        model: local folder of a 3-label cross-encoder (``config.json`` with ``id2label``).
        threshold: minimum p(entailment) (ours: 0.5).
        check_answer: judge answer steps against ``JudgeItem.gold_answer`` too.
        batch_size, device, max_length: passed to ``CrossEncoder``.
    """

    name = "nli"

    def __init__(self, model: str | Path, threshold: float = DEFAULT_NLI_THRESHOLD,
                 check_answer: bool = False, batch_size: int = 32, device: str | None = None,
                 max_length: int = 256) -> None:
        path = Path(model)
        config = path / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"NLI judge: no config.json in {path} (give a local "
                                    "cross-encoder folder; nothing is downloaded)")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"NLI judge: threshold must be in [0, 1], got {threshold}")
        self.labels = label_indices(json.loads(config.read_text())["id2label"])
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(path), device=device, max_length=max_length,
                                  local_files_only=True)
        self.threshold, self.check_answer, self.batch_size = threshold, check_answer, batch_size

    def probabilities(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """``[n, 3]`` softmax probabilities, columns in the order of :data:`LABELS`."""
        if len(premises) != len(hypotheses):
            raise ValueError(f"NLI judge: {len(premises)} premises for {len(hypotheses)} hypotheses")
        if not premises:
            return np.zeros((0, 3))
        logits = np.asarray(self.model.predict(list(zip(premises, hypotheses, strict=True)),
                                               batch_size=self.batch_size,
                                               show_progress_bar=False), dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != 3:
            raise ValueError(f"NLI judge: the model returns shape {logits.shape}, expected [n, 3]")
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probs[:, [self.labels[label] for label in LABELS]]

    def premise(self, item: JudgeItem) -> str:
        """The reference step, plus the gold answer for an answer step when ``check_answer``."""
        if self.check_answer and item.gold_answer and extract_answer(item.pred) is not None:
            return f"{item.ref.rstrip('. ')}. The answer is {item.gold_answer}."
        return item.ref

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]:
        probs = self.probabilities([self.premise(it) for it in items], [it.pred for it in items])
        out = []
        for p_entail, p_neutral, p_contra in probs:
            correct = bool(p_entail >= self.threshold and p_entail > p_contra)
            out.append(StepVerdict(correct, float(p_entail),
                                   f"p(entail)={p_entail:.3f} p(neutral)={p_neutral:.3f} "
                                   f"p(contradict)={p_contra:.3f}"))
        return out


def make_tiny_nli(out_dir: str | Path, seed: int = 0,
                  id2label: dict[int, str] | None = None, winner: str | None = None) -> Path:
    """Build and save a tiny random 3-label BERT cross-encoder (WordPiece tokenizer trained in
    memory; ~100k parameters). ``winner`` (one of :data:`LABELS`): set the classifier so that
    this label always wins (weights 0, bias +10 on it), to test the verdict mapping."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from mmboundary.models.tiny import DEFAULT_CORPUS

    id2label = id2label or {0: "contradiction", 1: "entailment", 2: "neutral"}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(DEFAULT_CORPUS, trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=256)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                        num_labels=3, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    model = BertForSequenceClassification(config).eval()
    if winner is not None:
        index = label_indices(id2label)[winner]
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[index] = 10.0
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
