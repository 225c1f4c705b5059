"""Measure the strict multiple-choice judge's threshold and margin on the authors' A-OKVQA chains.

Positives: free answers that >= 3 annotators gave (``direct_answers``) and that equal no choice
text: a good judge maps them to the correct choice. Negatives: another question's correct answer
(not among this question's choices): a good judge maps it to no choice. Prints, per (tau, margin),
the share of positives mapped to the correct choice and of negatives mapped to any choice.

    python examples/measure_choice_threshold.py [/path/to/aokvqa_val_mmb.json]
"""

from __future__ import annotations

import random
import sys
from collections import Counter

import numpy as np

from mmboundary.data.loaders import load_annotated
from mmboundary.models.similarity import default_similarity
from mmboundary.text.matching import normalize_vqa_answer as norm

PATH = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mmboundary/aokvqa_val_mmb.json"


def main() -> None:
    samples = [s for s in load_annotated(PATH).samples
               if s.choices and s.correct_choice_idx is not None]
    random.Random(0).shuffle(samples)
    sim = default_similarity()
    pos, neg = [], []
    for i, s in enumerate(samples):
        choices = [norm(c) for c in s.choices]
        counts = Counter(norm(d) for d in s.direct_answers)
        pos += [(s, d) for d, c in counts.items() if c >= 3 and d not in choices]
        other = samples[(i + 1) % len(samples)]
        answer = other.choices[other.correct_choice_idx]
        if norm(answer) not in choices:
            neg.append((s, answer))

    def features(pairs: list) -> np.ndarray:
        rows = []
        for s, a in pairs:
            g = np.asarray(sim.pairwise([a], list(s.choices)))[0]
            order = np.argsort(-g)
            rows.append((g[order[0]], g[order[0]] - g[order[1]], order[0] == s.correct_choice_idx))
        return np.asarray(rows, dtype=np.float64)

    p, n = features(pos), features(neg)
    print(f"{len(samples)} questions; {len(p)} positives (nearest choice correct for "
          f"{p[:, 2].mean():.1%}), {len(n)} negatives")
    print("tau  margin  positives->correct  negatives->any choice  negatives->correct")
    for tau in (0.4, 0.45, 0.5, 0.55, 0.6):
        for margin in (0.0, 0.05, 0.1, 0.15):
            ok_p = (p[:, 0] >= tau) & (p[:, 1] >= margin)
            ok_n = (n[:, 0] >= tau) & (n[:, 1] >= margin)
            print(f"{tau:.2f} {margin:6.2f}  {np.mean(ok_p & (p[:, 2] == 1)):18.3f}  "
                  f"{ok_n.mean():21.3f}  {np.mean(ok_n & (n[:, 2] == 1)):18.3f}")


if __name__ == "__main__":
    main()
