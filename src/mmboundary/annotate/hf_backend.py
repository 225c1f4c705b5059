"""A local Hugging Face VLM as an annotation backend (``mmboundary.models.vlm.VLM``).

The neutral messages (system text + a user turn holding ``{"type": "image"}`` and the prompt) are
rendered by the model's own chat template; generation is greedy when ``temperature`` is 0, else
sampled. Usage: ``prompt_tokens`` counts the rendered prompt's text tokens (image tokens not
expanded), ``completion_tokens`` the generated tokens. One generation at a time (a lock), since
one model on one device gains nothing from parallel calls.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mmboundary.annotate.client import ChatError, ChatReply, ChatRequest, Usage


def neutral_to_hf(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral messages -> HF chat-template messages (every content a list of typed parts)."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out.append({"role": message["role"], "content": list(content)})
    return out


class HFChatBackend:
    """Answers chat requests with a loaded ``VLM``."""

    kind = "hf"

    def __init__(self, vlm: Any, model: str | None = None, system_role: bool = True) -> None:
        self.vlm = vlm
        self.model = model or str(getattr(vlm, "name", "hf-vlm"))
        self.system_role = system_role
        self._lock = threading.Lock()
        self.attempts = 0

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", dtype: str = "auto"
                        ) -> HFChatBackend:
        from mmboundary.models.vlm import VLM

        return cls(VLM.from_pretrained(path, device=device, dtype=dtype), model=str(path))

    def prompt(self, messages: list[dict[str, Any]]) -> str:
        """The chat-template text with the generation prompt. A template that rejects the system
        role gets the system text prepended to the user turn instead."""
        hf_messages = neutral_to_hf(messages)
        if not self.system_role:
            hf_messages = _fold_system(hf_messages)
        try:
            return self.vlm.processor.apply_chat_template(
                hf_messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # jinja raises TemplateError for an unsupported role
            if self.system_role and hf_messages[0]["role"] == "system":
                self.system_role = False
                return self.prompt(messages)
            raise ChatError("bad_request", f"chat template of {self.model}: {err}") from err

    def complete(self, request: ChatRequest) -> ChatReply:
        if request.image is None:
            raise ChatError("bad_request", "the HF backend needs an image with every request")
        prompt = self.prompt(request.messages)
        temperature = float(request.params.get("temperature", 0.0))
        with self._lock:
            self.attempts += 1
            generation = self.vlm.generate(
                [prompt], [request.image.to_pil()],
                max_new_tokens=int(request.params.get("max_tokens", 512)),
                do_sample=temperature > 0, temperature=temperature or 1.0, batch_size=1)[0]
        prompt_tokens = len(self.vlm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return ChatReply(text=generation.text,
                         finish_reason="stop" if generation.finished else "length",
                         usage=Usage(prompt_tokens, len(generation.token_stats.token_ids)))


def _fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Move a leading system turn's text to the start of the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system_text = " ".join(p["text"] for p in messages[0]["content"] if p.get("type") == "text")
    rest = [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = [{"type": "text", "text": system_text + "\n\n"},
                                  *message["content"]]
            break
    return rest
