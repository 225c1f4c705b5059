"""A fake OpenAI-compatible chat-completions server for the annotation tests (127.0.0.1, random
port, one thread per request): ``responder(body, n)`` decides each reply."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message (status 200)
    body: Any = None  # a raw body instead
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0


class FakeChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1 (random port); ``responder(body, n)`` decides."""

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        template = json.loads((FIXTURES / "chat_completion.json").read_text())
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    n = len(server.requests)
                reply = responder(body, n)
                time.sleep(reply.sleep_s)
                payload = reply.body
                if payload is None and reply.content is not None:
                    payload = copy.deepcopy(template)
                    payload["choices"][0]["message"]["content"] = reply.content
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
