"""Summary statistics of a loaded annotated file (what ``mmboundary data stats`` prints).

Steps per level (mean / min / max of image-level and reasoning-level reference steps), answer
forms ("So, the answer is" / "So the answer is" / quoted / no answer step), multiple choice vs
open, how often the reference chain's answer equals the gold choice, images found, and the
problems: errors listed, notices counted by kind with the ids they concern.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from mmboundary.data.formats import answer_form
from mmboundary.data.loaders import LoadResult


def _spread(values: list[int]) -> dict[str, float | int | None]:
    """mean / min / max / total of a list of counts (None when empty)."""
    if not values:
        return {"mean": None, "min": None, "max": None, "total": 0}
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "total": sum(values)}


def _answer_agreement(result: LoadResult) -> dict[str, int]:
    """Reference answer vs the gold choice (case-insensitive exact match), multiple choice only."""
    agree = disagree = unknown = 0
    for sample in result.samples:
        if sample.choices is None or sample.correct_choice_idx is None:
            continue
        stated = sample.reference.answer if sample.reference is not None else None
        if stated is None:
            unknown += 1
        elif stated.strip().lower() == sample.choices[sample.correct_choice_idx].strip().lower():
            agree += 1
        else:
            disagree += 1
    return {"equal": agree, "different": disagree, "no_answer_step": unknown}


def dataset_stats(result: LoadResult) -> dict[str, Any]:
    """A JSON-serialisable summary of ``result`` (see the module docstring)."""
    samples = result.samples
    chains = [s.reference for s in samples if s.reference is not None]
    forms = [answer_form(c) for c in chains]
    notices: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "ids": []})
    for problem in result.notices:
        entry = notices[problem.kind]
        entry["count"] += 1
        entry["ids"].append(problem.record_id)
    return {
        "file": result.path,
        "dataset": result.dataset,
        "records": result.records,
        "loaded": len(samples),
        "with_reference": len(chains),
        "steps": {
            "image_level": _spread([len(c.image_level) for c in chains]),
            "reasoning_level": _spread([len(c.reasoning_level) for c in chains]),
            "all": _spread([len(c.steps) for c in chains]),
        },
        "answer_forms": {
            "comma": sum(f.form == "comma" for f in forms),
            "no_comma": sum(f.form == "no_comma" for f in forms),
            "missing": sum(f.form == "missing" for f in forms),
            "quoted": sum(f.quoted for f in forms),
        },
        "question_types": {
            "multiple_choice": sum(s.choices is not None for s in samples),
            "open": sum(s.choices is None for s in samples),
        },
        "gold_answer": {"present": sum(s.gold_answer is not None for s in samples),
                        "missing": sum(s.gold_answer is None for s in samples)},
        "reference_vs_gold_choice": _answer_agreement(result),
        "images": {"resolved": sum(s.image is not None for s in samples),
                   "with_image_id": sum(s.image_id is not None for s in samples)},
        "errors": [str(p) for p in result.errors],
        "notices": dict(sorted(notices.items(), key=lambda kv: -kv[1]["count"])),
        "problem_kinds": dict(Counter(p.kind for p in result.problems)),
    }
