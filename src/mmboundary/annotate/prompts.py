"""The two annotation passes' prompts, and the tolerant parser of the chains the LLM replies with.

The authors prompted GPT-4o with image + question + answer for image-level and reasoning-level steps,
then asked it to drop redundant and irrelevant steps. Their prompt texts were not released: the texts
in ``resources/annotate_prompts/`` are **ours** (``system.txt``, ``generate.txt``, ``filter.txt``,
``string.Template`` placeholders ``$question``, ``$choices_block``, ``$answer``, ``$draft``); a user
can point ``PromptSet.load(prompts_dir)`` at their own copies.

Messages use a neutral form: OpenAI chat messages whose user turn holds ``{"type": "image"}`` where
the image goes. Each backend turns that part into what it sends (a base64 data URL for an
OpenAI-compatible server, the chat template's image token for a local Hugging Face VLM).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mmboundary.data.schema import ReferenceChain, Sample, extract_answer

PROMPT_FILES = ("system.txt", "generate.txt", "filter.txt")
_KEY_ALIASES = {"imagelevel": "image_level", "reasoninglevel": "reasoning_level"}
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA_RE = re.compile(r",\s*([\]}])")


class ChainParseError(ValueError):
    """A reply that holds no ``{"Image_level": [...], "Reasoning_level": [...]}`` object."""


@dataclass(frozen=True)
class PromptSet:
    """The three prompt texts (``string.Template`` syntax)."""

    system: str
    generate: str
    filter: str

    @classmethod
    def load(cls, prompts_dir: str | Path | None = None) -> PromptSet:
        """Read ``system.txt``, ``generate.txt`` and ``filter.txt`` from ``prompts_dir`` (default:
        the package's own texts)."""
        texts = {}
        for name in PROMPT_FILES:
            if prompts_dir is None:
                ref = resources.files("mmboundary").joinpath("resources", "annotate_prompts", name)
                texts[name] = ref.read_text(encoding="utf-8")
            else:
                path = Path(prompts_dir) / name
                if not path.is_file():
                    raise FileNotFoundError(f"prompt folder {prompts_dir}: expected {name} in it")
                texts[name] = path.read_text(encoding="utf-8")
        return cls(system=texts["system.txt"].strip(), generate=texts["generate.txt"].strip(),
                   filter=texts["filter.txt"].strip())


def gold_answers(sample: Sample) -> list[str]:
    """Every answer string that counts as gold: the canonical one, then ``answers`` and
    ``direct_answers`` (deduplicated, order kept)."""
    candidates = [sample.gold_answer, *sample.answers, *sample.direct_answers]
    seen: dict[str, None] = {}
    for answer in candidates:
        if answer and answer not in seen:
            seen[answer] = None
    return list(seen)


def _fields(sample: Sample) -> dict[str, str]:
    choices = ""
    if sample.choices:
        letters = string.ascii_uppercase
        choices = "Options: " + " ".join(
            f"({letters[i]}) {choice}" for i, choice in enumerate(sample.choices))
    return {"question": sample.question.strip(), "choices_block": choices,
            "answer": sample.gold_answer or "(not given)"}


def _render(template: str, fields: dict[str, str]) -> str:
    text = string.Template(template).substitute(fields)
    return re.sub(r"\n{3,}", "\n\n", text)


def _messages(system: str, user_text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]},
    ]


def generate_messages(sample: Sample, prompts: PromptSet) -> list[dict[str, Any]]:
    """Pass 1: image + question (+ options) + gold answer -> a draft chain."""
    return _messages(prompts.system, _render(prompts.generate, _fields(sample)))


def filter_messages(sample: Sample, draft: ReferenceChain, prompts: PromptSet) -> list[dict[str, Any]]:
    """Pass 2: the same inputs + the draft chain -> the chain without redundant, irrelevant or
    wrong steps."""
    fields = _fields(sample) | {"draft": json.dumps(draft.to_annotated(), ensure_ascii=False,
                                                    indent=1)}
    return _messages(prompts.system, _render(prompts.filter, fields))


def _candidate_texts(reply: str) -> list[str]:
    """The reply's fenced blocks first (models like ```json fences), then the whole reply."""
    return [*(block.strip() for block in _FENCE_RE.findall(reply)), reply]


def _decode_objects(text: str) -> list[Any]:
    """Every JSON object that starts at some ``{`` of ``text`` (trailing text ignored)."""
    decoder = json.JSONDecoder()
    found = []
    for variant in (text, _TRAILING_COMMA_RE.sub(r"\1", text)):
        for match in re.finditer(r"\{", variant):
            try:
                obj, _ = decoder.raw_decode(variant, match.start())
            except json.JSONDecodeError:
                continue
            found.append(obj)
        if found:
            break
    return found


def _chain_from_object(obj: Any) -> ReferenceChain | None:
    if not isinstance(obj, dict):
        return None
    levels: dict[str, list[str]] = {}
    for key, value in obj.items():
        field = _KEY_ALIASES.get(re.sub(r"[^a-z]", "", str(key).lower()))
        if field is None:
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ChainParseError(f"field {key!r}: expected a list of sentences, got {value!r:.120}")
        levels[field] = [item.strip() for item in items if item.strip()]
    if "reasoning_level" not in levels:
        return None
    return ReferenceChain(**levels)


def parse_chain_reply(reply: str) -> ReferenceChain:
    """Parse ``{"Image_level": [...], "Reasoning_level": [...]}`` out of an LLM reply.

    Tolerant of code fences, text before or after the object, trailing commas, key spelling
    (``image_level``, ``Image-level``) and a single string where a list was asked. ``Image_level``
    may be missing (17 of the authors' own A-OKVQA chains lack it); ``Reasoning_level`` may not.

    >>> parse_chain_reply('Sure!\\n```json\\n{"Image_level": ["A cake."], '
    ...                   '"Reasoning_level": ["So, the answer is 30."]}\\n```').answer
    '30'
    """
    for text in _candidate_texts(reply):
        for obj in _decode_objects(text):
            chain = _chain_from_object(obj)
            if chain is not None:
                return chain
    raise ChainParseError(
        'expected a JSON object {"Image_level": [...], "Reasoning_level": [...]} in the reply, '
        f"got {reply.strip()[:160]!r}")


# Annotate's pre-step before the shared VQA normalisation (text.matching.normalize_vqa_answer):
# annotator replies quote answers anywhere ("The 'Thirty'."), write ordinals ("30th") and number
# words above ten, which the VQA normaliser (quotes stripped only at the ends, zero..ten only)
# leaves as they are.
_QUOTES = re.compile("[\"\u201c\u201d]|(?<!\\w)['`\u2018\u2019]|['`\u2018\u2019](?!\\w)")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_BIG_NUMBERS = {
    word: str(i) for i, word in enumerate(
        "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split(),
        start=11)
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
     "eighty": "80", "ninety": "90", "hundred": "100"}
_BIG_NUMBER = re.compile(r"\b(" + "|".join(_BIG_NUMBERS) + r")\b", re.IGNORECASE)


def answer_key(answer: str) -> str:
    """The form compared by :func:`answer_agrees`: ``normalize_vqa_answer`` (lowercase,
    punctuation and articles dropped, zero..ten as digits) after annotate's pre-step (quotes
    dropped anywhere but inside a word, "30th" -> "30", eleven..twenty and the tens -> digits).

    >>> answer_key("The 'Thirty'.") == answer_key("30th") == "30"
    True
    """
    from mmboundary.text.matching import normalize_vqa_answer

    text = _QUOTES.sub(" ", answer)
    text = _ORDINAL.sub(r"\1", text)
    text = _BIG_NUMBER.sub(lambda m: _BIG_NUMBERS[m.group(1).lower()], text)
    return normalize_vqa_answer(text)


def chain_answer(chain: ReferenceChain) -> str | None:
    """The answer stated by the chain's LAST step ("So, the answer is X"), else None."""
    steps = chain.reasoning_level
    return extract_answer(steps[-1]) if steps else None


def answer_agrees(stated: str, golds: list[str]) -> bool:
    """True when the stated answer equals a gold answer after :func:`answer_key` on both."""
    key = answer_key(stated)
    return any(key == answer_key(gold) for gold in golds)
