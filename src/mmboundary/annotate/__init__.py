"""Reference-chain annotation with an LLM (the authors used GPT-4o): two passes, generate then
filter, over an OpenAI-compatible server or a local Hugging Face VLM; cached, resumable, flagged.

``annotate_items(items, backend, out_path, prompts, config)`` is the entry point; the CLI is
``mmboundary annotate``.
"""

from mmboundary.annotate.annotate import AnnotateSummary, AnnotationAborted, annotate_items
from mmboundary.annotate.cache import CachedBackend, ReplyCache
from mmboundary.annotate.client import ChatError, OpenAIChatClient
from mmboundary.annotate.prompts import PromptSet, parse_chain_reply
from mmboundary.annotate.records import AnnotateConfig, AnnotationItem

__all__ = [
    "AnnotateConfig", "AnnotateSummary", "AnnotationAborted", "AnnotationItem", "CachedBackend",
    "ChatError", "OpenAIChatClient", "PromptSet", "ReplyCache", "annotate_items",
    "parse_chain_reply",
]
