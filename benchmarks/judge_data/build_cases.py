"""Build ``cases.jsonl``, the step-judge benchmark, from the MMBoundary authors' real A-OKVQA chains.

Sources of cases (all over real reference steps of ``aokvqa_val_mmb.json``; He et al., MMBoundary,
ACL 2025, CC BY-NC 4.0):

- ``hand``: ``hand_written.txt``, paraphrases and false steps written by a person;
- ``generated``: one-word false edits of real reference steps, made by the tables below. These
  tables are the benchmark's own and deliberately independent of the judge's lexicons
  (``mmboundary/resources/judge_lexicon.json``); they were written before the judge;
- ``generated-on-paraphrase``: the same edits applied to the hand-written paraphrases, so that a
  false step is also worded differently from its reference (as a model's step would be);
- ``answer``: the final "So, the answer is X" step with X replaced by a wrong choice;
- ``unrelated``: a step of another question's chain.

Each case names its chain by ``record``, the record's index in the data file (question ids repeat).

Split (ours): a question is ``dev`` or ``test`` by the parity of sha1(question_id); a chain's cases
all fall in one half. The assertions judge was designed on ``dev`` only.

Run: ``python benchmarks/judge_data/build_cases.py [--data PATH]`` (deterministic, seed 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "mmboundary" / "aokvqa_val_mmb.json"
PER_KIND_PER_SPLIT = 60  # generated cases per false kind and split, where the data allows
SEED = 0

# ---- the generator's own edit tables (not the judge's) -------------------------------------
GEN_COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black",
               "white", "gray", "silver"]
GEN_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                    "twelve", "twenty", "thirty"]
GEN_SIZE = {"large": "small", "small": "large", "big": "small", "little": "big", "tiny": "huge",
            "huge": "tiny", "tall": "short", "long": "short", "wide": "narrow", "narrow": "wide",
            "thick": "thin", "thin": "thick", "larger": "smaller", "smaller": "larger",
            "bigger": "smaller", "high": "low", "low": "high", "deep": "shallow",
            "massive": "tiny", "giant": "tiny", "short": "tall"}
GEN_POSITION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top",
                "above": "below", "below": "above", "upper": "lower", "lower": "upper",
                "in front of": "behind", "behind": "in front of", "inside": "outside",
                "outside": "inside", "under": "above", "beneath": "above",
                "foreground": "background", "background": "foreground", "next to": "far from",
                "near": "far from", "indoors": "outdoors", "outdoors": "indoors",
                "indoor": "outdoor", "outdoor": "indoor", "upward": "downward",
                "downward": "upward", "horizontal": "vertical", "vertical": "horizontal"}
GEN_OBJECT_GROUPS = [
    ["man", "woman", "boy", "girl", "child", "baby"],
    ["dog", "cat", "horse", "cow", "sheep", "elephant", "giraffe", "zebra", "bird", "bear",
     "goat", "duck"],
    ["car", "bus", "truck", "train", "motorcycle", "bicycle", "airplane", "boat", "van"],
    ["pizza", "cake", "sandwich", "donut", "banana", "apple", "hot dog", "broccoli", "carrot",
     "salad", "bread"],
    ["table", "chair", "couch", "bed", "bench", "desk", "shelf"],
    ["plate", "bowl", "cup", "bottle", "knife", "fork", "spoon", "glass", "mug"],
    ["umbrella", "kite", "frisbee", "ball", "bat", "racket", "skateboard", "surfboard",
     "snowboard", "suitcase", "backpack"],
    ["laptop", "phone", "television", "keyboard", "mouse", "remote", "computer", "camera"],
    ["shirt", "hat", "jacket", "dress", "tie", "helmet", "shoes", "gloves", "coat"],
    ["kitchen", "bathroom", "bedroom", "street", "beach", "park", "field", "restaurant",
     "office", "airport"],
    ["tree", "flower", "grass", "rock", "snow", "water", "sand"],
    ["sign", "clock", "window", "door", "wall", "fence", "pole"],
]
GEN_RELATION = {"holding": "throwing", "holds": "throws", "sitting": "standing",
                "sits": "stands", "standing": "sitting", "stands": "sits", "riding": "pushing",
                "rides": "pushes", "walking": "running", "running": "walking",
                "eating": "smelling", "wearing": "holding", "wears": "holds",
                "carrying": "dropping", "carries": "drops", "pulling": "pushing",
                "pushing": "pulling", "lying": "standing", "parked": "driving",
                "grazing": "sleeping", "drinking": "spilling", "leaning": "sitting",
                "entering": "leaving", "leaving": "entering", "opening": "closing",
                "buying": "selling", "selling": "buying", "smiling": "frowning",
                "flying": "falling", "watching": "ignoring", "using": "repairing",
                "looking at": "turning away from", "playing with": "hiding from",
                "covered": "uncovered", "attached": "detached", "filled": "emptied"}
GEN_NEGATION_INSERT = [(r"\b(is|are|was|were)\b(?! not\b)", r"\1 not"), (r"\bcan\b", "cannot"),
                       (r"\bhas been\b", "has not been")]
GEN_NEGATION_REMOVE = [(r"\b(is|are|was|were|does|do|did|can) not\b", r"\1"),
                       (r"\bcannot\b", "can"), (r"\bisn't\b", "is"), (r"\baren't\b", "are"),
                       (r"\bdoesn't\b", "does"), (r"\bno\b", "some"), (r"\bwithout\b", "with"),
                       (r"\bnever\b", "often")]


def split_of(question_id: str) -> str:
    """``dev`` or ``test`` by the parity of sha1(question_id) (ours)."""
    return "dev" if int(hashlib.sha1(question_id.encode()).hexdigest(), 16) % 2 == 0 else "test"


def _sub_word(text: str, word: str, new: str, rng: random.Random) -> str | None:
    """Replace one (randomly chosen) whole-word, lower-case occurrence of ``word`` by ``new``."""
    spans = [m.span() for m in re.finditer(rf"(?<![\w'-]){re.escape(word)}(?![\w'-])", text)]
    if not spans:
        return None
    start, end = rng.choice(spans)
    return text[:start] + new + text[end:]


def edit_colour(text: str, rng: random.Random) -> str | None:
    found = [c for c in GEN_COLOURS if re.search(rf"(?<![\w-]){c}(?![\w-])", text)]
    if not found:
        return None
    old = rng.choice(found)
    return _sub_word(text, old, rng.choice([c for c in GEN_COLOURS if c != old]), rng)


def edit_count(text: str, rng: random.Random) -> str | None:
    digits = [m for m in re.finditer(r"(?<![\w.,'])(\d+)(?![\d.,])", text)]
    words = [w for w in GEN_NUMBER_WORDS if re.search(rf"\b{w}\b", text)]
    if digits and (not words or rng.random() < 0.5):
        match = rng.choice(digits)
        value = int(match.group(1))
        new = max(0, value + rng.choice([-3, -2, -1, 1, 2, 5, 10]))
        new = new if new != value else value + 1
        return text[:match.start(1)] + str(new) + text[match.end(1):]
    if words:
        old = rng.choice(words)
        return _sub_word(text, old, rng.choice([w for w in GEN_NUMBER_WORDS if w != old]), rng)
    return None


def _edit_table(table: dict[str, str]) -> Callable[[str, random.Random], str | None]:
    def edit(text: str, rng: random.Random) -> str | None:
        found = [w for w in table if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
        return _sub_word(text, (old := rng.choice(found)), table[old], rng) if found else None
    return edit


def edit_object(text: str, rng: random.Random) -> str | None:
    options = []
    for group in GEN_OBJECT_GROUPS:
        for noun in group:
            for form, suffix in ((noun, ""), (noun + "s", "s")):
                if re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", text):
                    options.append((form, group, noun, suffix))
    if not options:
        return None
    form, group, noun, suffix = rng.choice(options)
    new = rng.choice([n for n in group if n != noun])
    return _sub_word(text, form, new + suffix, rng)


def edit_negation(text: str, rng: random.Random) -> str | None:
    removals = [(p, r) for p, r in GEN_NEGATION_REMOVE if re.search(p, text, re.IGNORECASE)]
    inserts = [(p, r) for p, r in GEN_NEGATION_INSERT if re.search(p, text)]
    pool = removals if removals and (not inserts or rng.random() < 0.5) else inserts
    if not pool:
        return None
    pattern, repl = rng.choice(pool)
    return re.sub(pattern, repl, text, count=1, flags=re.IGNORECASE if pool is removals else 0)


EDITORS: dict[str, Callable[[str, random.Random], str | None]] = {
    "colour": edit_colour, "count": edit_count, "size": _edit_table(GEN_SIZE),
    "position": _edit_table(GEN_POSITION), "negation": edit_negation, "object": edit_object,
    "relation": _edit_table(GEN_RELATION),
}


def chain_steps(record: dict) -> list[str]:
    chain = record.get("keys_filtered") or {}
    return [*chain.get("Image_level", []), *chain.get("Reasoning_level", [])]


def parse_hand(path: Path) -> Iterator[tuple[str, str, str, str]]:
    """(question_id, reference, kind, candidate) from the block format of ``hand_written.txt``."""
    qid = ref = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            qid, ref = (part.strip() for part in line[1:].split("|", 1))
            continue
        head, _, candidate = line.partition(":")
        if qid is None or not candidate.strip():
            raise ValueError(f"{path}:{number}: a case line needs an '@ id | step' block above it")
        kind = "paraphrase" if head.strip() == "P" else head.strip()[2:].strip()
        yield qid, ref, kind, candidate.strip()


def _case(record: dict, ref: str, candidate: str, kind: str, source: str) -> dict:
    qid = record["question_id"]
    return {"question_id": qid, "record": record["_index"], "split": split_of(qid), "kind": kind,
            "source": source,
            "reference": ref, "candidate": candidate,
            "expected": "correct" if kind == "paraphrase" else "wrong"}


def build(records: list[dict], hand_path: Path) -> list[dict]:
    for index, record in enumerate(records):  # question ids repeat (8 in A-OKVQA val): the
        record["_index"] = index  # record's position in the file names its chain
    by_id: dict[str, dict] = {}
    cases = []
    hand = list(parse_hand(hand_path))
    for qid, ref, kind, candidate in hand:
        owners = [r for r in records if r["question_id"] == qid and ref in chain_steps(r)]
        if not owners:
            raise ValueError(f"hand case {qid!r}: reference step {ref!r} is not in its chain")
        by_id[qid] = owners[0]
        cases.append(_case(owners[0], ref, candidate, kind, "hand"))
    rng = random.Random(SEED)
    cases += _generated(records, rng)
    cases += _generated_on_paraphrase(by_id, hand, rng)
    cases += _answers_and_unrelated(records, rng)
    for number, case in enumerate(cases):
        case["id"] = f"j{number:04d}"
    return cases


def _generated(records: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for kind, editor in EDITORS.items():
        for split in ("dev", "test"):
            pool = [r for r in records if split_of(r["question_id"]) == split]
            rng.shuffle(pool)
            taken = 0
            for record in pool:  # at most one case per chain and kind
                steps = [s for s in chain_steps(record) if "answer is" not in s.lower()]
                rng.shuffle(steps)
                for step in steps:
                    edited = editor(step, rng)
                    if edited and edited != step:
                        out.append(_case(record, step, edited, kind, "generated"))
                        taken += 1
                        break
                if taken >= PER_KIND_PER_SPLIT:
                    break
    return out


def _generated_on_paraphrase(by_id: dict, hand: list, rng: random.Random) -> list[dict]:
    out = []
    for qid, ref, kind, candidate in hand:
        if kind != "paraphrase":
            continue
        for edit_kind in rng.sample(list(EDITORS), len(EDITORS)):
            edited = EDITORS[edit_kind](candidate, rng)
            if edited and edited != candidate:
                out.append(_case(by_id[qid], ref, edited, edit_kind, "generated-on-paraphrase"))
                break
    return out


def _answers_and_unrelated(records: list[dict], rng: random.Random) -> list[dict]:
    out = []
    answer_re = re.compile(r"^(?P<head>.*answer is\s*['\"]?)(?P<ans>.+?)(?P<tail>['\"]?\.?)$",
                           re.IGNORECASE)
    for split in ("dev", "test"):
        pool = [r for r in records if split_of(r["question_id"]) == split and chain_steps(r)]
        rng.shuffle(pool)
        for record in pool[:PER_KIND_PER_SPLIT]:
            last = chain_steps(record)[-1]
            match = answer_re.match(last.strip())
            gold = record["choices"][record["correct_choice_idx"]]
            wrong = [c for c in record["choices"] if c.lower() != gold.lower()]
            if match and wrong:
                edited = match["head"] + rng.choice(wrong) + match["tail"]
                out.append(_case(record, last, edited, "answer", "answer"))
        for record, other in zip(pool[:PER_KIND_PER_SPLIT], pool[-PER_KIND_PER_SPLIT:],
                                 strict=True):
            if record is other:
                continue
            ref = rng.choice(chain_steps(record))
            candidate = rng.choice(chain_steps(other))
            out.append(_case(record, ref, candidate, "unrelated", "unrelated"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "cases.jsonl")
    args = parser.parse_args()
    records = json.loads(args.data.read_text(encoding="utf-8"))
    cases = build(records, HERE / "hand_written.txt")
    with args.out.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
