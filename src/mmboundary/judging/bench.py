"""The step-judge benchmark: score judges on real reference steps, edited to be false or reworded.

Cases (``benchmarks/judge_data/cases.jsonl``, built by ``benchmarks/judge_data/build_cases.py``
from the MMBoundary authors' A-OKVQA chains) each hold a reference step, a candidate step, a
``kind`` (``paraphrase`` = expected correct; ``colour``, ``count``, ``size``, ``position``,
``negation``, ``object``, ``relation``, ``attribute``, ``answer``, ``unrelated`` = expected wrong),
a ``source`` (``hand``, ``generated``, ``generated-on-paraphrase``, ...) and a ``split``.

Metrics, per split and kind: for a false kind, ``recall`` = share of its cases judged wrong and
``precision`` = caught / (caught + paraphrases wrongly judged wrong), i.e. the precision of "wrong"
when that kind and the paraphrases are mixed; for ``paraphrase``, ``kept`` = share judged correct.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmboundary.judging.base import JudgeItem, StepJudge

PARAPHRASE = "paraphrase"


@dataclass(frozen=True)
class Case:
    """One benchmark case (see the module docstring)."""

    id: str
    kind: str
    source: str
    split: str
    expected_wrong: bool
    item: JudgeItem


def load_cases(cases_path: str | Path, data_path: str | Path) -> list[Case]:
    """Read the cases and attach each one's question, gold answer and whole reference chain from
    the authors' file (``record`` = the record's index there)."""
    records = json.loads(Path(data_path).read_text(encoding="utf-8"))
    cases = []
    lines = Path(cases_path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        try:
            record = records[raw["record"]]
        except (IndexError, KeyError) as err:
            raise ValueError(f"{cases_path}:{number} ({raw.get('id')}): field 'record' does not "
                             f"name a record of {data_path}") from err
        if record.get("question_id") != raw["question_id"]:
            raise ValueError(f"{cases_path}:{number} ({raw['id']}): record {raw['record']} is "
                             f"question {record.get('question_id')!r}, not {raw['question_id']!r}")
        chain = record.get("keys_filtered") or {}
        steps = tuple([*chain.get("Image_level", []), *chain.get("Reasoning_level", [])])
        choices, idx = record.get("choices"), record.get("correct_choice_idx")
        gold = choices[idx] if choices and idx is not None else None
        item = JudgeItem(pred=raw["candidate"], ref=raw["reference"], question=record["question"],
                         gold_answer=gold, reference=steps)
        cases.append(Case(raw["id"], raw["kind"], raw["source"], raw["split"],
                          raw["expected"] == "wrong", item))
    return cases


def score(cases: Sequence[Case], said_wrong: Sequence[bool]) -> dict[str, Any]:
    """Per-kind numbers (module docstring) and per-source recall for one judge on ``cases``."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_source: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for case, wrong in zip(cases, said_wrong, strict=True):
        by_kind[case.kind].append(wrong)
        by_source[(case.kind, case.source)].append(wrong)
    false_alarms = sum(by_kind.get(PARAPHRASE, []))
    kinds: dict[str, dict[str, Any]] = {}
    for kind, verdicts in sorted(by_kind.items()):
        n, caught = len(verdicts), sum(verdicts)
        if kind == PARAPHRASE:
            kinds[kind] = {"n": n, "kept": (n - caught) / n}
            continue
        kinds[kind] = {"n": n, "recall": caught / n,
                       "precision": caught / (caught + false_alarms) if caught else 0.0,
                       "by_source": {src: {"n": len(v), "recall": sum(v) / len(v)}
                                     for (k, src), v in sorted(by_source.items()) if k == kind}}
    false_cases = [w for c, w in zip(cases, said_wrong, strict=True) if c.expected_wrong]
    edits = [w for c, w in zip(cases, said_wrong, strict=True)
             if c.expected_wrong and c.kind not in {"unrelated"}]
    return {"kinds": kinds,
            "all_false": {"n": len(false_cases), "recall": _mean(false_cases)},
            "edited_false": {"n": len(edits), "recall": _mean(edits)},
            "paraphrase_kept": kinds.get(PARAPHRASE, {}).get("kept")}


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def run_judges(judges: dict[str, StepJudge], cases: Sequence[Case],
               splits: Iterable[str] = ("dev", "test")) -> dict[str, Any]:
    """Judge every case with every judge (one batched call each); scores per split."""
    results: dict[str, Any] = {}
    for name, judge in judges.items():
        start = time.perf_counter()
        verdicts = judge.judge([c.item for c in cases])
        seconds = time.perf_counter() - start
        wrong = [not v.correct for v in verdicts]
        per_split = {}
        for split in splits:
            chosen = [(c, w) for c, w in zip(cases, wrong, strict=True)
                      if split == "all" or c.split == split]
            per_split[split] = score([c for c, _ in chosen], [w for _, w in chosen])
        results[name] = {"seconds": round(seconds, 2), "splits": per_split}
    return results


def format_table(results: dict[str, Any], split: str) -> str:
    """A Markdown table: one row per kind, per judge recall (precision) or kept share."""
    names = list(results)
    kinds = sorted({k for r in results.values() for k in r["splits"][split]["kinds"]},
                   key=lambda k: (k == PARAPHRASE, k))
    head = "| kind | n | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for kind in kinds:
        row = [kind]
        cells = []
        for name in names:
            entry = results[name]["splits"][split]["kinds"].get(kind)
            if entry is None:
                cells.append("-")
            elif kind == PARAPHRASE:
                cells.append(f"kept {entry['kept']:.0%}")
            else:
                cells.append(f"{entry['recall']:.0%} (p {entry['precision']:.0%})")
        first = results[names[0]]["splits"][split]["kinds"].get(kind, {})
        lines.append("| " + " | ".join([*row, str(first.get("n", "-")), *cells]) + " |")
    for label, key in (("all edited-to-false steps", "edited_false"),
                       ("all false (incl. unrelated)", "all_false")):
        cells = [f"{results[n]['splits'][split][key]['recall']:.0%}" for n in names]
        n_cases = results[names[0]]["splits"][split][key]["n"]
        lines.append(f"| {label} | {n_cases} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_judges(names: Sequence[str], nli_model: str | None = None,
                 llm_base_url: str | None = None, llm_model: str | None = None,
                 llm_api_key: str | None = None) -> dict[str, StepJudge]:
    """The judges by name; ``nli``/``llm`` are added when given a model path / a server URL."""
    from mmboundary.judging.base import make_judge

    judges = {name: make_judge(name) for name in names if name not in {"nli", "llm"}}
    if nli_model:
        judges["nli"] = make_judge("nli", model=nli_model)
    if llm_base_url:
        judges["llm"] = make_judge("llm", model=llm_model or "gpt-4o-mini",
                                   base_url=llm_base_url, api_key=llm_api_key)
    return judges


def run_benchmark(cases: str | Path, data: str | Path, split: str = "test",
                  judges: Sequence[str] = ("similarity", "exact", "assertions"),
                  nli_model: str | None = None, llm_base_url: str | None = None,
                  llm_model: str | None = None, llm_api_key: str | None = None,
                  out: str | Path | None = None, echo: Any = print) -> dict[str, Any]:
    """Load, judge, print the table for ``split`` and write every split's numbers to ``out``."""
    loaded = load_cases(cases, data)
    chosen = build_judges(judges, nli_model, llm_base_url, llm_model, llm_api_key)
    results = run_judges(chosen, loaded, splits=("dev", "test", "all"))
    half = {"test": "TEST half (the assertions judge was designed on the dev half only)",
            "dev": "DEV half (the half the assertions judge was designed on: optimistic)",
            "all": "both halves"}[split]
    echo(f"Step-judge benchmark, {half}; {sum(c.split == split or split == 'all' for c in loaded)}"
         f" of {len(loaded)} cases from {cases}")
    echo("cells: recall of 'wrong' (precision of 'wrong' against the paraphrases); "
         "paraphrase row: share kept correct")
    echo(format_table(results, split))
    for name, result in results.items():
        echo(f"{name}: {result['seconds']} s for {len(loaded)} cases")
    report = {"cases": str(cases), "reported_split": split, "results": results}
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        echo(f"wrote {out}")
    return report
