"""Deterministic toy models shared by the tests (import with ``from toys import Jaccard``)."""

from __future__ import annotations

import re

import numpy as np


class Jaccard:
    """Toy similarity: token-set Jaccard index of lower-cased words (hand-workable numbers)."""

    @staticmethod
    def _tokens(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower()))

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray:
        out = np.zeros((len(a), len(b)))
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                tx, ty = self._tokens(x), self._tokens(y)
                out[i, j] = len(tx & ty) / len(tx | ty) if tx | ty else 0.0
        return out

    def paired(self, a: list[str], b: list[str]) -> np.ndarray:
        return np.array([self.pairwise([x], [y])[0, 0] for x, y in zip(a, b, strict=True)])
