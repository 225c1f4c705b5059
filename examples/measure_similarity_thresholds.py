"""Measure all-MiniLM-L6-v2 similarity on real step and answer pairs to justify tau defaults.

Data: the authors' annotated A-OKVQA val file (He et al., MMBoundary, ACL 2025; CC BY-NC 4.0),
read from ../shared/data/mmboundary/. Pairs:

- steps: each human rationale's best match (max similarity) among the reference steps of its own
  question (it states facts about the same image) vs among those of another question;
  and two different reference steps of one chain (same topic, another fact: MiniLM cannot
  separate these from paraphrases, so tau cannot be set from them);
- answers: an alternative phrasing that >= 3 of the 10 annotators gave (so VQA-correct) vs the
  correct choice as positives, each wrong choice vs the correct choice as negatives; and the same
  pairs inside "So, the answer is X." steps (why answer steps are judged by the answer).

Run: python examples/measure_similarity_thresholds.py [path/to/aokvqa_val_mmb.json]
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from mmboundary.models.similarity import default_similarity
from mmboundary.text.matching import normalize_vqa_answer

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmboundary" / "aokvqa_val_mmb.json"


def _describe(name: str, values: np.ndarray) -> None:
    q = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
    print(f"{name:28s} n={values.size:5d} mean={values.mean():.3f} "
          f"p10/25/50/75/90 = {' '.join(f'{v:.3f}' for v in q)}")


def _best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """Threshold maximising balanced accuracy (Youden's J) between two score sets."""
    grid = np.round(np.arange(0.30, 0.96, 0.01), 2)
    scores = [((pos >= t).mean() + (neg < t).mean()) / 2 for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


def _pairs(records: list[dict], rng: random.Random) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("own", "other", "same_chain", "ans_pos", "ans_neg")}
    chains = [r["keys_filtered"].get("Image_level", []) + r["keys_filtered"]["Reasoning_level"][:-1]
              for r in records]
    for i, rec in enumerate(records):
        steps, other = chains[i], chains[(i + 1) % len(chains)]
        if steps and other:
            out["own"] += [(r, steps) for r in rec["rationales"]]
            out["other"] += [(r, other) for r in rec["rationales"]]
        if len(steps) >= 2:
            out["same_chain"].append(tuple(rng.sample(steps, 2)))
        correct = rec["choices"][rec["correct_choice_idx"]]
        votes = Counter(normalize_vqa_answer(a) for a in rec["direct_answers"])
        out["ans_pos"] += [(a, correct) for a, k in votes.items()
                           if k >= 3 and a != normalize_vqa_answer(correct)]
        out["ans_neg"] += [(w, correct) for j, w in enumerate(rec["choices"])
                           if j != rec["correct_choice_idx"]]
    return out


def main(path: Path = DEFAULT, n_records: int = 400, seed: int = 0) -> None:
    records = json.loads(path.read_text())
    rng = random.Random(seed)
    rng.shuffle(records)
    pairs = _pairs(records[:n_records], rng)
    sim = default_similarity()

    def best(items: list) -> np.ndarray:
        return np.array([float(sim.pairwise([r], steps).max()) for r, steps in items])

    def paired(items: list, template: str = "{}") -> np.ndarray:
        return sim.paired([template.format(a) for a, _ in items], [template.format(b) for _, b in items])

    step = "So, the answer is {}."
    res = {"rationale ~ own chain (max)": best(pairs["own"]),
           "rationale ~ other chain (max)": best(pairs["other"]),
           "same chain, other step": paired(pairs["same_chain"]),
           "answer ~ correct choice": paired(pairs["ans_pos"]),
           "wrong choice ~ correct": paired(pairs["ans_neg"]),
           "answer step ~ correct step": paired(pairs["ans_pos"], step),
           "wrong answer step ~ correct": paired(pairs["ans_neg"], step)}
    for name, values in res.items():
        _describe(name, values)
    for label, pos, neg in [("step tau", "rationale ~ own chain (max)", "rationale ~ other chain (max)"),
                            ("answer tau", "answer ~ correct choice", "wrong choice ~ correct"),
                            ("answer-step tau", "answer step ~ correct step", "wrong answer step ~ correct")]:
        t, j = _best_threshold(res[pos], res[neg])
        print(f"{label}: best {t:.2f} (balanced acc {j:.3f}); "
              f"at 0.5: {((res[pos] >= 0.5).mean() + (res[neg] < 0.5).mean()) / 2:.3f}, "
              f"at 0.55: {((res[pos] >= 0.55).mean() + (res[neg] < 0.55).mean()) / 2:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
