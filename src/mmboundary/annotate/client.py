"""An OpenAI-compatible chat-completions client with images, retries and clear failures.

Works with the OpenAI API and any server speaking the same protocol (vLLM's ``vllm serve``, ...).
Images travel as base64 data URLs. Requests that fail for a passing reason (429, 408, 5xx, a
timeout, a dropped connection) are retried with exponential backoff and jitter, honouring the
server's ``Retry-After``; requests that fail for a reason a retry cannot fix (401/403 bad key,
404 unknown model or wrong URL, other 4xx) raise at once with the server's message. The API key is
sent in the ``Authorization`` header only; it, and any user name / password in the base URL, are
masked (``mmboundary.data.redact``) in every message this module makes and in the HTTP client's
log lines.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import logging
import mimetypes
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from mmboundary.data.redact import redact_logs, redact_text, redact_url, url_secrets

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SENDABLE_MIMES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})


@dataclass(frozen=True)
class ImagePayload:
    """An image as the bytes that are sent, with their MIME type."""

    data: bytes
    mime: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def to_pil(self) -> Any:
        from PIL import Image

        return Image.open(io.BytesIO(self.data)).convert("RGB")

    def describe(self) -> str:
        """What a dry run prints instead of the image."""
        return f"<image elided: {self.mime}, {len(self.data)} bytes, sha256 {self.sha256[:12]}>"

    @classmethod
    def from_source(cls, source: Any, max_side: int | None = None) -> ImagePayload:
        """From a path (bytes sent as they are when the format is one servers take) or a PIL image
        (encoded as PNG). ``max_side`` shrinks larger images (re-encoded as PNG)."""
        from PIL import Image

        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"image {path}: no such file")
            mime = mimetypes.guess_type(path.name)[0] or ""
            if mime in _SENDABLE_MIMES and max_side is None:
                return cls(path.read_bytes(), mime)
            with Image.open(path) as image:
                return cls._encode(image, max_side)
        if isinstance(source, Image.Image):
            return cls._encode(source, max_side)
        raise TypeError(f"image source: expected a path or a PIL image, got {type(source).__name__}")

    @classmethod
    def _encode(cls, image: Any, max_side: int | None) -> ImagePayload:
        image = image.convert("RGB")
        if max_side is not None and max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return cls(buffer.getvalue(), "image/png")


@dataclass
class ChatRequest:
    """Neutral chat messages (the user turn holds ``{"type": "image"}``), the image and the
    sampling parameters (``temperature``, ``max_tokens``, ...)."""

    messages: list[dict[str, Any]]
    image: ImagePayload | None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    cached: bool = False


class ChatError(RuntimeError):
    """A request that failed; ``kind`` is ``auth``, ``not_found``, ``bad_request``,
    ``unavailable`` (retries exhausted) or ``bad_reply``."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ChatBackend(Protocol):
    """What the annotator needs from a backend."""

    kind: str
    model: str

    def complete(self, request: ChatRequest) -> ChatReply: ...


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: d = min(max_s, base_s * 2**attempt), wait d/2 + U(0, d/2)."""
    delay = min(max_s, base_s * 2**attempt)
    return delay / 2 + rng.uniform(0, delay / 2)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (a number, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def neutral_to_openai(messages: list[dict[str, Any]], image: ImagePayload | None) -> list[dict[str, Any]]:
    """Replace each ``{"type": "image"}`` part by an ``image_url`` part holding the data URL."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    if image is None:
                        raise ValueError("message has an image part but the request has no image")
                    part = {"type": "image_url", "image_url": {"url": image.data_url}}
                parts.append(part)
            content = parts
        out.append({"role": message["role"], "content": content})
    return out


class OpenAIChatClient:
    """``POST {base_url}/chat/completions`` with retries. Thread-safe; counts ``attempts``
    (HTTP requests sent) and ``retries``."""

    kind = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, retry_after_max_s: float = 300.0,
                 max_connections: int = 8, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._secrets = [api_key or None, *url_secrets(self.base_url)]
        redact_logs(self._secrets)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers=headers,
            limits=httpx.Limits(max_connections=max_connections))
        self._lock = threading.Lock()
        self.attempts = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"OpenAIChatClient(model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def redact(self, text: str) -> str:
        """``text`` with the API key, the base URL's user info, and anything credential-shaped
        (an ``sk-`` key, which servers echo masked; ``Bearer ...``) replaced by ``***``."""
        return redact_text(text, self._secrets)

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        return {"model": self.model, "messages": neutral_to_openai(request.messages, request.image),
                **request.params}

    def complete(self, request: ChatRequest) -> ChatReply:
        """Send one request; retry passing failures; raise ChatError on the others."""
        url = f"{self.base_url}/chat/completions"
        body = self.payload(request)
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.attempts += 1
            outcome, retry_after = self._attempt(url, body)
            if isinstance(outcome, ChatReply):
                return outcome
            error = outcome
            if error.kind != "unavailable" or attempt == self.max_retries:
                if error.kind == "unavailable":
                    error = ChatError("unavailable", f"{error} (gave up after {attempt + 1} "
                                      "attempts)", error.status)
                raise error
            wait = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
            if retry_after is not None:
                wait = min(retry_after, self.retry_after_max_s)
            log.warning("%s; retry %d/%d in %.2fs", error, attempt + 1, self.max_retries, wait)
            with self._lock:
                self.retries += 1
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, body: dict[str, Any]) -> tuple[ChatReply | ChatError, float | None]:
        try:
            response = self._http.post(url, json=body)
        except httpx.TimeoutException:
            return ChatError("unavailable", self.redact(f"no reply from {url} within "
                                                        f"{self.timeout_s}s")), None
        except httpx.UnsupportedProtocol as err:
            return ChatError("not_found", self.redact(f"bad base URL {url}: {err}")), None
        except httpx.TransportError as err:
            return ChatError("unavailable", self.redact(f"cannot reach {url}: {err}")), None
        except httpx.InvalidURL as err:
            return ChatError("not_found", self.redact(f"bad base URL {url}: {err}")), None
        status = response.status_code
        if status == 200:
            return self._reply(response), None
        message = self.redact(f"{url} answered HTTP {status}: {_error_message(response)}")
        if status in RETRY_STATUSES or status >= 500:
            return ChatError("unavailable", message, status), parse_retry_after(
                response.headers.get("retry-after"))
        if status in (401, 403):
            return ChatError("auth", f"{message} -- check the API key (its environment variable) "
                             "and the base URL", status), None
        if status == 404:
            return ChatError("not_found", f"{message} -- check the model name {self.model!r} and "
                             "the base URL (it should end in /v1)", status), None
        return ChatError("bad_request", message, status), None

    def _reply(self, response: httpx.Response) -> ChatReply | ChatError:
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return ChatError("bad_reply", "HTTP 200 but the body is not a chat completion: "
                             f"{self.redact(response.text[:200])!r}", 200)
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        usage = data.get("usage") or {}
        return ChatReply(text=content, finish_reason=choice.get("finish_reason"),
                         usage=Usage(int(usage.get("prompt_tokens") or 0),
                                     int(usage.get("completion_tokens") or 0)))


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's ``{"error": {"message": ...}}`` or the body's start."""
    try:
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason_phrase
