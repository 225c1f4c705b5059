"""The ``llm`` step judge: a language model reads the step, its reference and the question.

One chat request per pair with a fixed prompt (``resources/judge_prompts/llm_judge.txt``, ours;
``string.Template`` placeholders ``$question``, ``$gold_answer``, ``$reference_chain``,
``$reference``, ``$step``), sent to any OpenAI-compatible server through
:class:`mmboundary.annotate.client.OpenAIChatClient` (its retries, its key hygiene) and, with
``cache_dir``, the annotator's disk cache (:class:`mmboundary.annotate.cache.ReplyCache`, same
keys; only replies that parse are stored, so a rerun is free and retries the failures); or to a
local Hugging Face causal LM (:class:`HFTextBackend`). Greedy (temperature 0).

The reply must be the single word "correct" or "incorrect" (case, surrounding quotes, markdown
emphasis and a final full stop are tolerated). Anything else is an error *for that item*: never a
silent "correct". :meth:`LLMJudge.judge` raises :class:`JudgeReplyError` naming every failed
item after judging (and caching) the others; :meth:`LLMJudge.judge_each` returns the error in the
item's place instead.
"""

from __future__ import annotations

import os
import string
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from mmboundary.annotate.client import ChatBackend, ChatReply, ChatRequest, Usage
from mmboundary.judging.base import JudgeItem, StepVerdict, register_judge

VERDICTS = {"correct": True, "incorrect": False}


class JudgeReplyError(RuntimeError):
    """Items whose reply was not a verdict (or whose request failed): ``failures`` maps the
    item's index in the batch to the reason."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = failures
        shown = "; ".join(f"item {i}: {why}" for i, why in sorted(failures.items())[:5])
        super().__init__(f"LLM judge: {len(failures)} item(s) without a verdict -- {shown}")


def parse_verdict(reply: str) -> bool:
    """``True`` for "correct", ``False`` for "incorrect"; ValueError for anything else.

    >>> parse_verdict(" **Incorrect.** ")
    False
    >>> parse_verdict("The step is correct")
    Traceback (most recent call last):
    ...
    ValueError: field 'reply': expected exactly 'correct' or 'incorrect', got 'The step is correct'
    """
    word = reply.strip().strip("*_`\"' ").rstrip(".").strip("*_`\"' ").lower()
    if word not in VERDICTS:
        raise ValueError(f"field 'reply': expected exactly 'correct' or 'incorrect', "
                         f"got {reply.strip()[:80]!r}")
    return VERDICTS[word]


def _parses(reply: str) -> bool:
    try:
        parse_verdict(reply)
    except ValueError:
        return False
    return True


def load_prompt(path: str | Path | None = None) -> string.Template:
    """The judge prompt from ``path`` or the package's ``llm_judge.txt``."""
    if path is not None:
        return string.Template(Path(path).read_text(encoding="utf-8"))
    ref = resources.files("mmboundary").joinpath("resources", "judge_prompts", "llm_judge.txt")
    return string.Template(ref.read_text(encoding="utf-8"))


def render_prompt(template: string.Template, item: JudgeItem) -> str:
    """Fill the prompt for one item ("(unknown)" for a missing question or gold answer)."""
    chain = "\n".join(f"{i + 1}. {step}" for i, step in enumerate(item.reference)) or item.ref
    return template.substitute(question=item.question or "(unknown)",
                               gold_answer=item.gold_answer or "(unknown)",
                               reference_chain=chain, reference=item.ref, step=item.pred).strip()


class HFTextBackend:
    """A local Hugging Face causal LM answering text-only chat requests (greedy)."""

    kind = "hf-text"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = self.model = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, local_files_only=True)
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_name, local_files_only=True)
        self.lm.to(device).eval()
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatReply:
        import torch

        messages = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    tokenize=False)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with self._lock, torch.no_grad():
            out = self.lm.generate(**ids.to(self.lm.device), do_sample=False,
                                   max_new_tokens=int(request.params.get("max_tokens", 8)),
                                   pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return ChatReply(self.tokenizer.decode(new, skip_special_tokens=True),
                         usage=Usage(ids["input_ids"].shape[1], len(new)))


@register_judge("llm")
class LLMJudge:
    """Ask a language model whether the step is correct (module docstring).

    Args:
        model: model name on the server (or a local folder with ``backend="hf"``).
        base_url: OpenAI-compatible server URL ending in /v1 (default: env ``OPENAI_BASE_URL``,
            else the OpenAI API).
        api_key: the key; default: the environment variable named by ``api_key_env``.
        backend: ``"openai"``, ``"hf"`` (local causal LM), or a ready ``ChatBackend``.
        cache_dir: disk cache of replies (a rerun sends nothing); None = no cache.
        prompt: path of a prompt template replacing the package's.
        max_workers: parallel requests (OpenAI backend).
        max_tokens: reply budget (a verdict is one word).
    """

    name = "llm"

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None,
                 api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 backend: str | ChatBackend = "openai", cache_dir: str | Path | None = None,
                 prompt: str | Path | None = None, max_workers: int = 4, max_tokens: int = 8,
                 **client_options: Any) -> None:
        if isinstance(backend, str):
            backend = self._make_backend(backend, model, base_url, api_key, api_key_env,
                                         client_options)
        self.backend = backend
        self.cache = None
        if cache_dir is not None:
            from mmboundary.annotate.cache import ReplyCache

            self.cache = ReplyCache(cache_dir)
        self.template = load_prompt(prompt)
        self.max_workers = max(1, max_workers)
        self.params = {"temperature": 0, "max_tokens": max_tokens}

    @staticmethod
    def _make_backend(kind: str, model: str, base_url: str | None, api_key: str | None,
                      api_key_env: str, options: dict[str, Any]) -> ChatBackend:
        if kind == "hf":
            return HFTextBackend(model, **options)
        if kind != "openai":
            raise ValueError(f"LLM judge: backend must be 'openai' or 'hf', got {kind!r}")
        from mmboundary.annotate.client import OpenAIChatClient

        return OpenAIChatClient(model, base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                                api_key=api_key or os.environ.get(api_key_env), **options)

    def request(self, item: JudgeItem) -> ChatRequest:
        text = render_prompt(self.template, item)
        return ChatRequest(messages=[{"role": "user", "content": text}], image=None,
                           params=dict(self.params))

    def _one(self, item: JudgeItem) -> StepVerdict | Exception:
        """One request (from the cache when it holds a verdict). Only replies that parse are
        cached, so a rerun asks again for the items that failed."""
        from mmboundary.annotate.cache import request_key

        request = self.request(item)
        key = request_key(self.backend.kind, self.backend.model, request)
        try:
            reply = self.cache.get(key) if self.cache is not None else None
            if reply is None or not _parses(reply.text):
                reply = self.backend.complete(request)
                correct = parse_verdict(reply.text)
                if self.cache is not None:
                    self.cache.put(key, reply, {"model": self.backend.model, "judge": "llm"})
            correct = parse_verdict(reply.text)
        except Exception as err:  # an item's failure is reported for that item
            return err
        return StepVerdict(correct, float(correct), f"LLM replied {reply.text.strip()[:40]!r}")

    def judge_each(self, items: Sequence[JudgeItem]) -> list[StepVerdict | Exception]:
        """One verdict, or the error that prevented it, per item, in order."""
        if self.max_workers == 1 or len(items) <= 1:
            return [self._one(item) for item in items]
        with ThreadPoolExecutor(self.max_workers) as pool:
            return list(pool.map(self._one, items))

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]:
        results = self.judge_each(items)
        failures = {i: str(r) for i, r in enumerate(results) if isinstance(r, Exception)}
        if failures:
            raise JudgeReplyError(failures)
        return [r for r in results if isinstance(r, StepVerdict)]
