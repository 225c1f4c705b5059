"""CLIP image-text cosine for the CLIPS estimator, over transformers' ``CLIPModel``.

U_CLIPS = max(cos(E_image(image), E_text(step)), 0) (Hessel et al. 2021, without the 2.5 factor).
Image embeddings are cached per image key (path string, or the key you pass), so a response's
steps, or the k samples of one prompt, embed their image once; text embeddings are batched.

transformers 5 notes (PLATFORM.md): ``get_image_features``/``get_text_features`` may return an
output object (``.pooler_output``) instead of a tensor; CLIP pools the text at its EOS token, so
every text must end with EOS: long text is truncated to the model's max positions keeping EOS.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _as_tensor(features: Any) -> Any:
    """A features tensor from either a tensor or a transformers output object."""
    if hasattr(features, "pooler_output") and not hasattr(features, "shape"):
        return features.pooler_output
    return features


class ClipScorer:
    """Unit-norm CLIP image/text embeddings and their cosines.

    ``from_pretrained(path, device)`` loads a local ``CLIPModel`` + ``CLIPProcessor``.
    ``cosine(images, texts)`` gives cos(E_image(images[i]), E_text(texts[i])) for each i.
    """

    def __init__(self, model: Any, processor: Any, *, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 4096, name: str | None = None) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.name = name
        text_config = model.config.text_config
        self.max_length = int(text_config.max_position_embeddings)
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError(f"CLIP tokenizer of {name or 'the model'} has no eos token")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.eos_id
        self._image_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str | None = None,
                        **kwargs: Any) -> ClipScorer:
        """Load a local CLIP folder (no hub downloads: the path must exist)."""
        import torch
        from transformers import CLIPModel, CLIPProcessor

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"CLIP model not found at {path} (give a local folder)")
        torch_dtype = getattr(torch, dtype) if dtype else None
        model = CLIPModel.from_pretrained(path, dtype=torch_dtype).to(device)
        processor = CLIPProcessor.from_pretrained(path)
        return cls(model, processor, device=device, name=str(path), **kwargs)

    # -- text ----------------------------------------------------------------------------------

    def _text_ids(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """input_ids / attention_mask with every row ending in EOS, truncated to max_length."""
        import torch

        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                                 max_length=self.max_length)["input_ids"]
        rows = []
        for ids in encoded:
            ids = list(ids)
            if not ids or ids[-1] != self.eos_id:  # tokenizer without an EOS post-processor
                ids = [*ids[: self.max_length - 1], self.eos_id]
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings ``[len(texts), dim]``, computed in batches."""
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = self._text_ids(texts[i: i + self.batch_size])
            with torch.inference_mode():
                feats = _as_tensor(self.model.get_text_features(input_ids=ids,
                                                                attention_mask=mask))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim))

    # -- images --------------------------------------------------------------------------------

    @staticmethod
    def image_key(image: Any) -> str:
        """Cache key: the path for a path, else the object's id (pass stable keys yourself)."""
        if isinstance(image, (str, Path)):
            return str(image)
        return f"object:{id(image)}"

    def _load(self, image: Any) -> Any:
        if isinstance(image, (str, Path)):
            from mmboundary.data.images import load_image

            return load_image(image)
        return image.convert("RGB") if hasattr(image, "convert") else image

    def image_embeddings(self, images: Sequence[Any],
                         keys: Sequence[str | None] | None = None) -> np.ndarray:
        """Unit-norm image embeddings, each distinct image (by key) embedded once (LRU cache).

        ``keys`` name the images for the cache (default: the path, else the object's id)."""
        import torch

        keys = [k if k is not None else self.image_key(im)
                for k, im in zip(keys or [None] * len(images), images, strict=True)]
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in self._image_cache}
        items = list(todo.items())
        for i in range(0, len(items), self.batch_size):
            chunk = items[i: i + self.batch_size]
            pixels = self.processor(images=[self._load(im) for _, im in chunk],
                                    return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                feats = _as_tensor(self.model.get_image_features(
                    pixel_values=pixels.to(self.model.dtype)))
            vecs = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
            for (key, _), vec in zip(chunk, vecs, strict=True):
                self._image_cache[key] = vec
        out = np.stack([self._image_cache[k] for k in keys])
        while len(self._image_cache) > self.cache_size:
            self._image_cache.popitem(last=False)
        return out

    def cosine(self, images: Sequence[Any], texts: Sequence[str],
               keys: Sequence[str | None] | None = None) -> np.ndarray:
        """cos(E_image(images[i]), E_text(texts[i])) for each i (in [-1, 1]); ``keys`` as in
        ``image_embeddings``."""
        if len(images) != len(texts):
            raise ValueError(f"cosine needs one image per text, got {len(images)} images and "
                             f"{len(texts)} texts")
        if not texts:
            return np.zeros(0)
        return np.sum(self.image_embeddings(images, keys) * self.text_embeddings(texts), axis=1)
