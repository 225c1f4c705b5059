"""The VLM backend over Hugging Face transformers: generation and teacher-forced scoring.

Both return per-token statistics of the response from the model's RAW logits (before temperature,
top-k/top-p or suppressed tokens), one row per response token y_i with context c_i:

    logprob_i = log softmax(z_i)[y_i]                 (log p(y_i | c_i))
    entropy_i = -sum_v p_v(c_i) log p_v(c_i)          (nats, full next-token distribution)

computed in float32 chunk by chunk (never a [batch, seq, vocab] float32 tensor at once).
Offsets are each token's ``[start, end)`` character span in the response text. Stop tokens (EOS /
end-of-turn) and special tokens are not part of the text, so they are not in the statistics;
generation suppresses special tokens other than the stop tokens (a trained model never emits
them; suppression changes sampling only, never the raw logits read here).

``score(prompts, images, responses)`` re-tokenises each response; when a generated token sequence
is not the tokenizer's canonical encoding of its own decoded text (e.g. "th"+"e" instead of "the",
common for random tiny models, rare for trained ones), the re-tokenised ids differ and so do the
log-probs. ``score_ids`` scores exact token ids and always reproduces ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmboundary.data.schema import Sample, TokenStats
from mmboundary.models.prompts import build_messages, question_prompt
from mmboundary.models.token_stats import append_responses, decode_offsets, logprobs_and_entropies

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")


@lru_cache(maxsize=1)
def qwen2vl_image_only_processor_class() -> Any:
    """A ``Qwen2VLProcessor`` without the video processor (whose class needs torchvision)."""
    from transformers import Qwen2VLProcessor

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        """Qwen2-VL / Qwen2.5-VL processor for images only: no video processor, no torchvision."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.video_processor = None
            super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    return Qwen2VLImageOnlyProcessor


def load_processor(path: str | Path, model_type: str) -> Any:
    """``AutoProcessor``, except Qwen2-VL family without torchvision: the image-only processor."""
    from transformers import AutoProcessor

    if model_type in QWEN_VL_TYPES:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return qwen2vl_image_only_processor_class().from_pretrained(path)
        if "Qwen2VLImageOnlyProcessor" in Path(path, "processor_config.json").read_text():
            return qwen2vl_image_only_processor_class().from_pretrained(path)
    return AutoProcessor.from_pretrained(path)


class InputTooLongError(ValueError):
    """An input longer than the model's context: ``tokens`` (or a lower bound), the ``limit``,
    and the ``field`` that makes it long (``question`` for the prompt, ``response``)."""

    def __init__(self, tokens: int, limit: int, field: str, detail: str) -> None:
        super().__init__(f"{detail} > the model's context of {limit} tokens")
        self.tokens, self.limit, self.field = tokens, limit, field


_NO_LIMIT = 10**9  # tokenizers without a limit report model_max_length = 1e30


@dataclass
class Generation:
    """One generated response: its text (special tokens stripped), per-token statistics over the
    text's tokens, the index of its prompt, and whether it stopped at a stop token (else at
    ``max_new_tokens``)."""

    text: str
    token_stats: TokenStats
    prompt_index: int
    finished: bool


class VLM:
    """A loaded vision-language model + processor; build with ``VLM.from_pretrained(path)``."""

    def __init__(self, model: Any, processor: Any, name: str) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.tokenizer = processor.tokenizer
        self.model_type: str = model.config.model_type
        self.stop_ids = _stop_ids(model, self.tokenizer)
        self.suppress_ids = sorted(set(self.tokenizer.all_special_ids) - set(self.stop_ids))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", dtype: str = "auto") -> VLM:
        """Load a saved model folder. ``device``: auto (cuda if available) | cpu | cuda[:i];
        ``dtype``: auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16."""
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"VLM.from_pretrained: no config.json in {path}")
        config = AutoConfig.from_pretrained(path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        elif dtype in dtypes:
            torch_dtype = dtypes[dtype]
        else:
            raise ValueError(f"VLM.from_pretrained: dtype {dtype!r}; expected auto or {list(dtypes)}")
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
        except ValueError as err:
            raise ValueError(f"VLM.from_pretrained: {path} holds a {config.model_type!r} model, "
                             f"which is not an image-text-to-text architecture: {err}") from err
        model.to(device).eval()
        return cls(model, load_processor(path, config.model_type), name=str(path))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def context_length(self) -> int | None:
        """Most tokens (prompt with image tokens + response) the model takes: the text model's
        ``max_position_embeddings``, capped by the tokenizer's ``model_max_length`` when that is
        set; None when neither says."""
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        limits = [getattr(text_config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < _NO_LIMIT]
        return min(limits) if limits else None

    def prompt_token_count(self, prompt: str, image: Image.Image) -> int:
        """Tokens the model sees for ``prompt`` with ``image`` (image tokens included).

        The processor (image preprocessing, the costly part) runs once per image size: the image
        tokens it adds to a prompt's plain tokenisation depend on the image size only, so later
        prompts with an image of a size seen before are counted with the tokenizer alone."""
        plain = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        key = tuple(image.size) if image is not None else None
        cache = self.__dict__.setdefault("_image_token_extra", {})
        if key not in cache:
            full = int(self._processed([prompt], [image])["input_ids"].shape[1])
            cache[key] = full - plain
        return plain + cache[key]

    def prompt_text(self, question: str | Sample, instruction: str | None = None) -> str:
        """The chat-template prompt (generation prompt included) for a question text or a Sample
        (rendered with ``question_prompt(sample, instruction)``)."""
        if isinstance(question, Sample):
            question = question_prompt(question, instruction)
        return self.processor.apply_chat_template(
            build_messages(question), add_generation_prompt=True, tokenize=False)

    def _prompts(self, prompts: list[str | Sample]) -> list[str]:
        """Prompt strings as given; a Sample becomes ``prompt_text(sample)``."""
        return [self.prompt_text(p) if isinstance(p, Sample) else p for p in prompts]

    def _processed(self, prompts: list[str], images: list[Image.Image]) -> Any:
        return self.processor(text=list(prompts), images=[[im.convert("RGB")] for im in images],
                              padding=True, padding_side="left", return_tensors="pt")

    def _encode(self, prompts: list[str], images: list[Image.Image]) -> Any:
        if len(prompts) != len(images):
            raise ValueError(f"VLM: {len(prompts)} prompts but {len(images)} images")
        for i, image in enumerate(images):
            if image is None:
                raise ValueError(f"VLM: image {i} is missing (None); every prompt needs an image")
        enc = self._processed(prompts, images)
        limit = self.context_length
        if limit is not None and enc["input_ids"].shape[1] > limit:
            lengths = enc["attention_mask"].sum(dim=1).tolist()
            i = max(range(len(lengths)), key=lengths.__getitem__)
            raise InputTooLongError(int(lengths[i]), limit, "question",
                                    f"VLM: prompt {i} is {int(lengths[i])} tokens")
        enc = enc.to(self.device)
        for key in ("pixel_values",):
            if key in enc and enc[key].is_floating_point():
                enc[key] = enc[key].to(self.model.dtype)
        return enc

    def generate(
        self,
        prompts: list[str | Sample],
        images: list[Image.Image],
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        num_return_sequences: int = 1,
        seed: int | None = None,
        batch_size: int = 8,
        top_k: int = 0,
    ) -> list[Generation]:
        """Generate responses; ``len(prompts) * num_return_sequences`` results, prompt-major.

        Greedy (``do_sample=False``) allows one sequence per prompt. Sampling uses
        ``temperature``, ``top_p`` and ``top_k`` (0 = off, overriding a checkpoint default);
        ``seed`` seeds torch once before the first batch. A prompt may be a chat-template string
        (``prompt_text``) or a Sample (rendered with the default instruction).
        """
        import torch

        prompts = self._prompts(prompts)
        if not do_sample and num_return_sequences != 1:
            raise ValueError("VLM.generate: greedy decoding gives one sequence per prompt; "
                             f"got num_return_sequences={num_return_sequences} (use do_sample)")
        if seed is not None:
            torch.manual_seed(seed)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, do_sample=do_sample,
            num_return_sequences=num_return_sequences, output_logits=True,
            return_dict_in_generate=True, eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id, suppress_tokens=self.suppress_ids or None)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        results: list[Generation] = []
        for start in range(0, len(prompts), batch_size):
            enc = self._encode(prompts[start : start + batch_size],
                               images[start : start + batch_size])
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            steps = [logprobs_and_entropies(step_logits, new[:, t])
                     for t, step_logits in enumerate(out.logits)]
            lp = torch.stack([s[0] for s in steps], dim=1).cpu()
            ent = torch.stack([s[1] for s in steps], dim=1).cpu()
            for row in range(new.shape[0]):
                results.append(self._generation(
                    new[row].tolist(), lp[row], ent[row],
                    start + row // num_return_sequences))
        return results

    def _generation(self, ids: list[int], lp: Any, ent: Any, prompt_index: int) -> Generation:
        stop = set(self.stop_ids)
        cut = next((i for i, tok in enumerate(ids) if tok in stop), len(ids))
        special = set(self.tokenizer.all_special_ids)
        keep = [i for i in range(cut) if ids[i] not in special]
        kept = [ids[i] for i in keep]
        text = self.tokenizer.decode(kept, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
        stats = TokenStats(token_ids=kept, logprobs=[float(lp[i]) for i in keep],
                           entropies=[float(ent[i]) for i in keep],
                           offsets=decode_offsets(self.tokenizer, kept, text))
        return Generation(text=text, token_stats=stats, prompt_index=prompt_index,
                          finished=cut < len(ids))

    def score(
        self, prompts: list[str | Sample], images: list[Image.Image], responses: list[str],
        batch_size: int = 8,
    ) -> list[TokenStats]:
        """Teacher-forced statistics of each response after its prompt + image (one forward
        pass per batch). The response is tokenised on its own (no special tokens), so tokens and
        offsets cover exactly the response text."""
        ids, offsets = self._tokenize_responses(responses, "score")
        return self._score(prompts, images, ids, offsets, batch_size)

    def _tokenize_responses(self, responses: list[str], caller: str
                            ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        ids, offsets = [], []
        for i, response in enumerate(responses):
            if not response:
                raise ValueError(f"VLM.{caller}: response {i} is empty; nothing to score")
            enc = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
            ids.append(list(enc["input_ids"]))
            offsets.append([(int(s), int(e)) for s, e in enc["offset_mapping"]])
        return ids, offsets

    def hidden_states(
        self, prompts: list[str | Sample], images: list[Image.Image], responses: list[str],
        batch_size: int = 8,
    ) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
        """Teacher-forced last-layer hidden state at every response token (one forward pass per
        batch, tokenised as in ``score``): per response a float32 array ``[n_tokens, hidden]``
        and the tokens' offsets in the response text. Row i is the state after reading token i,
        the vector the output layer reads (the input of ``get_output_embeddings()``, after the
        final norm), from which token i + 1 is predicted."""
        import numpy as np
        import torch

        ids, offsets = self._tokenize_responses(responses, "hidden_states")
        prompts = self._prompts(prompts)
        captured: list[torch.Tensor] = []
        hook = self.model.get_output_embeddings().register_forward_pre_hook(
            lambda module, args: captured.append(args[0].detach()))
        results = []
        try:
            for start in range(0, len(prompts), batch_size):
                batch = slice(start, start + batch_size)
                inputs, keep = append_responses(self._encode(prompts[batch], images[batch]),
                                                 ids[batch], self.tokenizer.pad_token_id)
                captured.clear()
                with torch.inference_mode():
                    self.model(**inputs, logits_to_keep=keep)
                states = captured[-1].float().cpu()  # [batch, keep, hidden]
                for row, r_ids in enumerate(ids[batch]):
                    results.append(np.asarray(states[row, keep - len(r_ids):keep].numpy()))
        finally:
            hook.remove()
        return list(zip(results, offsets, strict=True))

    def score_ids(
        self, prompts: list[str | Sample], images: list[Image.Image], response_ids: list[list[int]],
        batch_size: int = 8,
    ) -> list[TokenStats]:
        """Like ``score`` for exact response token ids (e.g. ``Generation.token_stats.token_ids``);
        offsets index the decoded text."""
        offsets = []
        for i, ids in enumerate(response_ids):
            if not ids:
                raise ValueError(f"VLM.score_ids: response {i} has no tokens; nothing to score")
            text = self.tokenizer.decode(ids, skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
            offsets.append(decode_offsets(self.tokenizer, list(ids), text))
        return self._score(prompts, images, [list(x) for x in response_ids], offsets, batch_size)

    def _score(self, prompts: list[str], images: list[Image.Image], ids: list[list[int]],
               offsets: list[list[tuple[int, int]]], batch_size: int) -> list[TokenStats]:
        import torch

        prompts = self._prompts(prompts)
        if len(ids) != len(prompts):
            raise ValueError(f"VLM.score: {len(prompts)} prompts but {len(ids)} responses")
        results: list[TokenStats] = []
        for start in range(0, len(prompts), batch_size):
            batch = slice(start, start + batch_size)
            enc = self._encode(prompts[batch], images[batch])
            resp = ids[batch]
            inputs, keep = append_responses(enc, resp, self.tokenizer.pad_token_id)
            with torch.inference_mode():
                logits = self.model(**inputs, logits_to_keep=keep).logits
            for row, (r_ids, r_off) in enumerate(zip(resp, offsets[batch], strict=False)):
                n = len(r_ids)
                rows = logits[row, keep - n - 1 : keep - 1]
                lp, ent = logprobs_and_entropies(rows, torch.tensor(r_ids))
                results.append(TokenStats(token_ids=r_ids, logprobs=lp.tolist(),
                                          entropies=ent.tolist(), offsets=r_off))
        return results


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS / end-of-turn ids: the generation config's ``eos_token_id`` plus the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError(f"VLM: no EOS / end-of-turn token in {model.name_or_path}")
    return ids
