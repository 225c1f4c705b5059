"""Run any confidence baseline with any VLM: generate the responses it needs, then score them.

``BaselineRunner`` is what ``mmboundary baselines`` and the demo both call. Each method needs one
kind of response from the vanilla model (``RESPONSE_KINDS``); the runner generates each kind once
(``models.responses.generate_responses``), optionally caches it as JSONL in ``cache_dir`` (with
the settings that made it, so a cache made with other settings is redone, never reused), and
hands it to the scoring function of ``evaluation.baselines``:

======================  ==============================================  =========================
method                  responses                                       scoring
======================  ==============================================  =========================
``token-prob``          greedy                                          ``token_probability``
``internal``            greedy                                          ``internal_confidence``
``constant``            greedy                                          ``constant_confidence``
``dpv``                 greedy, ``DPV_INSTRUCTION``                     ``verbal_confidence``
``dps``                 greedy, ``DPS_INSTRUCTION``                     ``verbal_confidence``
``sc``                  greedy + k sampled                              ``self_consistency``
``multisample``         k sampled, ``DPS_INSTRUCTION``                  ``multisample``
======================  ==============================================  =========================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Response, Sample
from mmboundary.evaluation import baselines as B

METHODS = ("token-prob", "internal", "constant", "dpv", "dps", "sc", "multisample")
#: response kind -> (instruction, sampled?) ; ``None`` instruction = the default prompt
RESPONSE_KINDS: dict[str, tuple[str | None, bool]] = {
    "greedy": (None, False), "dpv": (B.DPV_INSTRUCTION, False), "dps": (B.DPS_INSTRUCTION, False),
    "sampled": (None, True), "sampled-dps": (B.DPS_INSTRUCTION, True),
}
NEEDS: dict[str, tuple[str, ...]] = {
    "token-prob": ("greedy",), "internal": ("greedy",), "constant": ("greedy",),
    "dpv": ("dpv",), "dps": ("dps",), "sc": ("greedy", "sampled"), "multisample": ("sampled-dps",),
}


@dataclass(frozen=True)
class BaselineSettings:
    """How the baselines' responses are generated (every field has the default the demo uses)."""

    k: int = 5
    """Sampled responses per question for SC and Multisample."""
    max_new_tokens: int = 128
    """Most new tokens per response."""
    batch_size: int = 8
    """Questions per ``generate`` call."""
    temperature: float = 1.0
    """Sampling temperature of SC / Multisample samples (greedy responses are not sampled)."""
    top_p: float = 1.0
    """Nucleus mass of the samples (1 = off)."""
    seed: int = 0
    """Sampling seed (batch b uses seed + its first question's index)."""
    instruction: str | None = None
    """Instruction of the greedy and SC responses (None = ``models.prompts`` default)."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"BaselineSettings: k, batch_size and max_new_tokens must be >= 1, "
                             f"got {self.k}, {self.batch_size}, {self.max_new_tokens}")


def weights_fingerprint(model: Any) -> list[list[Any]] | None:
    """Name, size and modification time of each weight file of a model folder (None for a loaded
    model): a model retrained into the same folder no longer matches a cache made with the old
    weights, without hashing gigabytes."""
    path = Path(model) if isinstance(model, (str, Path)) else None
    if path is None or not path.is_dir():
        return None
    files = sorted(f for f in path.iterdir()
                   if f.suffix in (".safetensors", ".bin", ".pt") or f.name == "config.json")
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


class BaselineRunner:
    """The responses of one vanilla VLM to ``samples``, generated once per kind, and the
    baselines computed from them.

    Args:
        model: a loaded ``models.vlm.VLM`` or the folder to load one from (loaded only when a
            response kind must be generated).
        samples: the questions.
        load_image: ``sample -> PIL.Image`` (raises with the reason when the image is missing:
            that sample's responses are error lines, never a substitute image).
        settings: ``BaselineSettings``.
        cache_dir: where generated responses are kept as ``<kind>.jsonl`` (None = in memory).
        device, dtype: for loading ``model`` from a folder.
    """

    def __init__(self, model: Any, samples: Sequence[Sample], load_image: Callable[[Sample], Any],
                 settings: BaselineSettings | None = None, cache_dir: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto", progress: bool = True) -> None:
        self._model, self.samples, self.load_image = model, list(samples), load_image
        self.model_name = str(getattr(model, "name", model))
        self.settings = settings or BaselineSettings()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device, self.dtype, self.progress = device, dtype, progress
        self._responses: dict[str, list[list[Response]]] = {}

    @property
    def vlm(self) -> Any:
        if isinstance(self._model, (str, Path)):
            from mmboundary.models.vlm import VLM

            self._model = VLM.from_pretrained(self._model, device=self.device, dtype=self.dtype)
        return self._model

    def _plan(self, kind: str) -> dict[str, Any]:
        """The settings that make the responses of ``kind`` (stored beside a cached file)."""
        instruction, sampled = RESPONSE_KINDS[kind]
        s = self.settings
        plan = {"kind": kind, "model": self.model_name, "weights": weights_fingerprint(self._model),
                "sample_ids": [x.id for x in self.samples], "max_new_tokens": s.max_new_tokens,
                "instruction": instruction if instruction is not None else s.instruction,
                "num_samples": s.k if sampled else 1}
        if sampled:
            plan.update(temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        return plan

    def _cache_file(self, kind: str) -> Path | None:
        if self.cache_dir is None:
            return None
        name = {"sampled": f"sampled{self.settings.k}",
                "sampled-dps": f"sampled{self.settings.k}-dps", "greedy": "vanilla"}.get(kind, kind)
        return self.cache_dir / f"{name}.jsonl"

    def _cached(self, path: Path, plan: dict[str, Any]) -> list[Response] | None:
        from mmboundary.data.io import read_responses

        manifest = path.with_suffix(".settings.json")
        if not (path.is_file() and manifest.is_file()):
            return None
        if json.loads(manifest.read_text()) != plan:
            return None  # made with other settings (or for other questions): generate anew
        rows = read_responses(path)
        return rows if len(rows) == len(self.samples) * plan["num_samples"] else None

    def responses(self, kind: str) -> list[list[Response]]:
        """One list of responses per sample (1 for greedy kinds, k for sampled), sample order."""
        if kind not in RESPONSE_KINDS:
            raise ValueError(f"unknown response kind {kind!r}; expected one of "
                             f"{sorted(RESPONSE_KINDS)}")
        if kind not in self._responses:
            plan = self._plan(kind)
            path = self._cache_file(kind)
            rows = self._cached(path, plan) if path is not None else None
            if rows is None:
                rows = self._generate(kind, plan)
                if path is not None:
                    from mmboundary.data.io import write_json_atomic, write_jsonl_atomic

                    write_jsonl_atomic(path, rows)
                    write_json_atomic(path.with_suffix(".settings.json"), plan)
            n = plan["num_samples"]
            self._responses[kind] = [rows[i * n:(i + 1) * n] for i in range(len(self.samples))]
        return self._responses[kind]

    def _generate(self, kind: str, plan: dict[str, Any]) -> list[Response]:
        from tqdm.auto import tqdm

        from mmboundary.models.responses import generate_responses

        s, n = self.settings, plan["num_samples"]
        vlm = self.vlm
        rows: list[Response] = []
        bar = tqdm(total=len(self.samples), desc=f"baselines: {kind}", unit="sample",
                   disable=not self.progress)
        for start in range(0, len(self.samples), s.batch_size):
            batch = self.samples[start:start + s.batch_size]
            rows += generate_responses(vlm, batch, self.load_image,
                                       instruction=plan["instruction"],
                                       max_new_tokens=s.max_new_tokens, do_sample=n > 1,
                                       temperature=s.temperature, top_p=s.top_p,
                                       num_return_sequences=n, seed=s.seed + start)
            bar.update(len(batch))
        bar.close()
        return rows

    def greedy(self) -> list[Response]:
        """The vanilla model's greedy responses with the default prompt, one per sample."""
        return [group[0] for group in self.responses("greedy")]

    def run(self, method: str, *, parser: Any = None, agree: B.StepAgreement | None = None,
            constant: float | None = None, calibrator: Any = None, similarity: Any = None,
            clip: Any = None) -> list[Response]:
        """Predictions of ``method`` (one of ``METHODS``), one ``Response`` per sample.

        Needs: ``constant`` (the value) for ``constant``; ``calibrator`` (fitted on this model's
        steps) and ``similarity`` / ``clip`` as its estimators require for ``internal``;
        ``agree`` for ``sc`` and ``multisample``; ``parser`` (a ``StatementParser``) for
        ``dps`` / ``multisample`` (``dpv`` uses a numeric one).
        """
        if method not in METHODS:
            raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(METHODS)}")
        missing = {"constant": ("constant", constant), "internal": ("calibrator", calibrator),
                   "sc": ("agree", agree), "multisample": ("agree", agree)}.get(method)
        if missing is not None and missing[1] is None:
            raise ValueError(f"baseline {method!r} needs {missing[0]!r}")
        if method in ("dps", "multisample") and parser is None:
            from mmboundary.text import default_parser

            parser = default_parser()
        if method == "token-prob":
            return B.token_probability(self.greedy())
        if method == "constant":
            return B.constant_confidence(self.greedy(), float(constant))  # type: ignore[arg-type]
        if method == "internal":
            return B.internal_confidence(
                self.vlm, self.samples, self.greedy(), calibrator=calibrator,
                similarity=similarity, clip=clip,
                image_loader=lambda sample: (self.load_image(sample), sample.id))
        if method == "dpv":
            from mmboundary.text import StatementParser

            dpv = [g[0] for g in self.responses("dpv")]
            return B.verbal_confidence(dpv, StatementParser(mode="numeric"))
        if method == "dps":
            return B.verbal_confidence([g[0] for g in self.responses("dps")], parser)
        if method == "sc":
            return B.self_consistency(self.greedy(), self.responses("sampled"), agree)  # type: ignore[arg-type]
        return B.multisample(self.responses("sampled-dps"), parser, agree)  # type: ignore[arg-type]

