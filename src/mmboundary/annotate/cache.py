"""A disk cache of chat replies, so that rerunning an annotation costs nothing.

Key = sha256 of the canonical JSON of (backend kind, model, messages with the image replaced by the
sha256 of its bytes, sampling parameters). One small JSON file per reply under
``{cache_dir}/{key[:2]}/{key}.json``, written atomically (tmp + ``os.replace``), so concurrent
workers and an interrupted run never leave a half-written entry. Only successful replies are stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from mmboundary.annotate.client import ChatBackend, ChatReply, ChatRequest, Usage

CACHE_FORMAT = 1


def request_key(kind: str, model: str, request: ChatRequest) -> str:
    """sha256 hex of the request's canonical form (the image enters as its bytes' sha256)."""
    messages = []
    for message in request.messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image", "sha256": request.image.sha256 if request.image else None}
                if part.get("type") == "image" else part
                for part in content
            ]
        messages.append({"role": message["role"], "content": content})
    canonical = json.dumps(
        {"format": CACHE_FORMAT, "backend": kind, "model": model, "messages": messages,
         "params": request.params},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ReplyCache:
    """Replies stored by request key."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatReply | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # an unreadable entry is a miss; the fresh reply overwrites it
        usage = data.get("usage") or {}
        return ChatReply(text=data["text"], finish_reason=data.get("finish_reason"), cached=True,
                         usage=Usage(usage.get("prompt_tokens", 0),
                                     usage.get("completion_tokens", 0)))

    def put(self, key: str, reply: ChatReply, meta: dict[str, Any] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"text": reply.text, "finish_reason": reply.finish_reason,
                  "usage": {"prompt_tokens": reply.usage.prompt_tokens,
                            "completion_tokens": reply.usage.completion_tokens},
                  **(meta or {})}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class CachedBackend:
    """A backend that answers from the cache when it can; counts ``hits`` and ``misses``."""

    def __init__(self, backend: ChatBackend, cache: ReplyCache) -> None:
        self.backend = backend
        self.cache = cache
        self.kind = backend.kind
        self.model = backend.model
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def complete(self, request: ChatRequest) -> ChatReply:
        key = request_key(self.kind, self.model, request)
        cached = self.cache.get(key)
        with self._lock:
            if cached is not None:
                self.hits += 1
            else:
                self.misses += 1
        if cached is not None:
            return cached
        reply = self.backend.complete(request)
        self.cache.put(key, reply, {"model": self.model, "backend": self.kind})
        return reply
