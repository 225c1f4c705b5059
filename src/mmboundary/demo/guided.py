"""The demo's confidence-guided decoding stage (issue #17; docs/GUIDED.md, "In the demo").

Two systems decode step by step and resample a step whose confidence level is below LEVEL
(``guidance``: K alternatives from the same prefix, the most confident kept):

- ``mmboundary``: the MMBoundary model (warm-up + RL), judged by its own *stated* confidence
  (``StatedConfidence``: the level of the step's trailing statement);
- ``vanilla``: the vanilla world VLM, judged by its *internal* confidence
  (``InternalConfidence``: the one ``InternalConfidenceScorer`` with the calibrator of the
  Internal C row, fitted on the vanilla model's own train-split steps).

Choice, never on the evaluated split: on the first ``guided_val`` validation questions every
(LEVEL, K) of ``guided_levels`` x ``guided_tries`` runs; the highest accuracy wins, ties by fewer
tokens per question, then grid order **(ours)**. Plain decoding (guided with ``below=1``: token
for token the greedy chain) runs there too, for the record. On the evaluated split the plain and
the chosen run give each system's operating points (accuracy, tokens per question), and the
guided responses become the report rows ``SYSTEMS`` (evaluated like every row). Abstention needs
no run of its own: abstaining below L answers exactly the plain chains whose lowest step level
is >= L (docs/GUIDED.md), so its risk-coverage points (L = 1..5) and the AURC of that ranking are
read off the plain run. A chain with no step is never abstained on (nothing to judge: level 6).

Accuracy = mean answer score of the one rule set (``StepRules.judge_answer`` of the final answer
of the parsed steps): the report's Acc of the same responses. Tokens = ``tokens_generated``
(every text token sampled, discarded alternatives included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Response, Sample
from mmboundary.demo.config import DemoConfig
from mmboundary.demo.stages import cached_stage
from mmboundary.evaluation.selective import GuidedSummary, PlotPoint

#: system key -> its guided row in the report
SYSTEMS = {"mmboundary": "MMBoundary + guided resampling",
           "vanilla": "Vanilla + guided resampling (internal C)"}
#: system key -> how it is shown in the guided table and plots
SHOWN = {"mmboundary": "MMBoundary (stated C)", "vanilla": "Vanilla (internal C)"}
ABSTAIN_LEVELS = (1, 2, 3, 4, 5)
NO_STEP_LEVEL = 6


def guided_folder(config: DemoConfig) -> Path:
    return config.out / ("guided" if config.eval_split == "test" else "guided-validation")


def check_guided_config(config: DemoConfig) -> None:
    """The guided fields' values (before any stage runs): a ``ValueError`` naming the field."""
    levels, tries = tuple(config.guided_levels), tuple(config.guided_tries)
    checks = [
        (bool(levels) and all(isinstance(v, int) and 2 <= v <= 6 for v in levels),
         "guided_levels", "levels in 2..6 (1 resamples nothing), at least one"),
        (bool(tries) and all(isinstance(v, int) and v >= 1 for v in tries), "guided_tries",
         "integers >= 1, at least one"),
        (config.guided_val >= 0, "guided_val", ">= 0 (0 = all n_val)"),
        (config.guided_temperature > 0, "guided_temperature", "> 0")]
    for ok, name, expected in checks:
        if not ok:
            raise ValueError(f"DemoConfig.{name}: expected {expected}, got "
                             f"{getattr(config, name)!r}")


def setting(summary: GuidedSummary | dict[str, Any]) -> str:
    """``L3 K2`` (resample below level 3, 2 alternatives); ``plain`` for ``below=1``."""
    below, tries = ((summary.below, summary.tries) if isinstance(summary, GuidedSummary)
                    else (summary["below"], summary["tries"]))
    return "plain" if below == 1 else f"L{below} K{tries}"


def choose_setting(grid: Sequence[GuidedSummary]) -> GuidedSummary:
    """The run of highest accuracy; ties: fewer tokens per question, then grid order (ours)."""
    scored = [s for s in grid if s.accuracy is not None and s.tokens is not None]
    if not scored:
        raise ValueError("guided: no grid setting has an accuracy on validation (every response "
                         f"failed?): {[s.to_dict() for s in grid]}")
    return min(scored, key=lambda s: (-(s.accuracy or 0.0), s.tokens or 0.0))  # first of ties


def abstention_points(lowest: Sequence[int], correct: Sequence[float]) -> list[dict[str, Any]]:
    """Abstain below L (``ABSTAIN_LEVELS``) on the plain chains: answered = lowest step level
    >= L; each L's coverage and selective risk (None when nothing is answered)."""
    from mmboundary.evaluation.selective import coverage, selective_accuracy

    out = []
    for level in ABSTAIN_LEVELS:
        answered = [low >= level for low in lowest]
        acc = selective_accuracy(correct, answered)
        out.append({"below": level, "coverage": coverage(answered),
                    "selective_risk": None if acc is None else 1.0 - acc})
    return out


class _Decoder:
    """One system's guided decoding and answer scoring on the demo's splits."""

    def __init__(self, config: DemoConfig, vlm: Any, source: Any, rules: Any, parser: Any) -> None:
        self.config, self.vlm, self.source = config, vlm, source
        self.rules, self.parser = rules, parser  # parser None: the model states nothing

    def guide(self, below: int, tries: int = 1) -> Any:
        from mmboundary.guidance import GuideConfig

        return GuideConfig(below=below, tries=tries, max_new_tokens=self.config.max_new_tokens,
                           temperature=self.config.guided_temperature)

    def responses(self, samples: list[Sample], guide: Any) -> list[Response]:
        """Batches of ``batch_size``, batch at offset i seeded ``seed + i`` (every setting alike)."""
        from mmboundary.guidance import generate_guided_responses
        from mmboundary.shapesworld.scenes import load_image

        size, out = self.config.batch_size, []
        for i in range(0, len(samples), size):
            out += generate_guided_responses(self.vlm, samples[i:i + size], load_image,
                                             self.source, guide, seed=self.config.seed + i)
        return out

    def steps(self, responses: list[Response]) -> list[Response]:
        """The responses as the report parses them (statements read, or plain sentences)."""
        from mmboundary.evaluation.baselines import plain_steps, verbal_confidence

        if self.parser is None:
            return [plain_steps(r) for r in responses]
        return verbal_confidence(responses, self.parser)

    def scores(self, samples: list[Sample], responses: list[Response]) -> list[float]:
        """Each response's answer score (0 for a failed one, which the summary leaves out)."""
        from mmboundary.judging.rules import final_answer

        out = []
        for sample, response in zip(samples, self.steps(responses), strict=True):
            if "error" in response.meta:
                out.append(0.0)
                continue
            judged = self.rules.judge_answer(sample, final_answer(response.steps)[1])
            if judged is None:
                raise ValueError(f"guided: sample {sample.id} has no gold answer to score")
            out.append(float(judged.score))
        return out

    def run(self, samples: list[Sample], guide: Any) -> tuple[list[Response], list[float],
                                                              GuidedSummary]:
        from mmboundary.evaluation.selective import summarize_guided

        responses = self.responses(samples, guide)
        correct = self.scores(samples, responses)
        label = "plain" if guide.below == 1 else f"L{guide.below} K{guide.tries}"
        return responses, correct, summarize_guided(responses, correct, label)


def _decoders(config: DemoConfig, mmboundary_model: str, vanilla: Path, calibrator: str,
              clip: Path, rules: Any) -> dict[str, _Decoder]:
    """The two systems (module docstring); the scorer shares the rule set's similarity model."""
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.guidance import InternalConfidence, StatedConfidence
    from mmboundary.models.clip import ClipScorer
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image
    from mmboundary.text import default_parser

    ours = VLM.from_pretrained(mmboundary_model, device="cpu", dtype="float32")
    plain = VLM.from_pretrained(vanilla, device="cpu", dtype="float32")
    scorer = InternalConfidenceScorer(
        plain, ConfidenceCalibrator.load(calibrator), similarity=rules.similarity,
        clip=ClipScorer.from_pretrained(clip, device="cpu"), parse_statements=False,
        batch_size=config.batch_size, image_loader=lambda s: (load_image(s), s.id))
    return {"mmboundary": _Decoder(config, ours, StatedConfidence(ours.tokenizer), rules,
                                   default_parser()),
            "vanilla": _Decoder(config, plain, InternalConfidence(scorer), rules, None)}


def _system(decoder: _Decoder, key: str, val: list[Sample], evaluated: list[Sample],
            folder: Path) -> dict[str, Any]:
    """Grid on validation, the chosen setting and plain on the evaluated split, abstention."""
    from mmboundary.data.io import write_jsonl_atomic
    from mmboundary.evaluation.selective import risk_coverage_curve

    config = decoder.config
    val_plain = decoder.run(val, decoder.guide(1))[2]
    grid = [decoder.run(val, decoder.guide(level, k))[2]
            for k in config.guided_tries for level in config.guided_levels]
    chosen = choose_setting(grid)
    assert chosen.below is not None and chosen.tries is not None  # every grid run records them
    plain, plain_correct, plain_summary = decoder.run(evaluated, decoder.guide(1))
    guided, _, guided_summary = decoder.run(evaluated, decoder.guide(chosen.below, chosen.tries))
    ok = [(r, c) for r, c in zip(plain, plain_correct, strict=True) if "error" not in r.meta]
    lowest = [min(r.meta["step_levels"], default=NO_STEP_LEVEL) for r, _ in ok]
    correct = [c for _, c in ok]
    files = {"plain": folder / f"{key}-plain.jsonl", "guided": folder / f"{key}-guided.jsonl"}
    write_jsonl_atomic(files["plain"], plain)
    write_jsonl_atomic(files["guided"], guided)
    return {"row": SYSTEMS[key], "chosen": {"below": chosen.below, "tries": chosen.tries},
            "validation": {"plain": val_plain.to_dict(), "grid": [s.to_dict() for s in grid]},
            "plain": plain_summary.to_dict(), "guided": guided_summary.to_dict(),
            "abstention": abstention_points(lowest, correct),
            "aurc": risk_coverage_curve(lowest, correct).area() if ok else None,
            "responses": {k: str(v) for k, v in files.items()}}


def guided_decoding(config: DemoConfig, world: dict[str, Any], mmboundary_model: str,
                    vanilla: Path, calibrator: str, clip: Path) -> dict[str, Any]:
    """The stage (module docstring): ``guided_folder(config)/done.json`` holds, per system, the
    validation grid, the chosen setting, the plain and guided summaries on the evaluated split,
    the abstention points, the AURC and the response files."""
    check_guided_config(config)

    def run() -> dict[str, Any]:
        from mmboundary.demo.stages import step_rules
        from mmboundary.shapesworld.scenes import read_split

        rules = step_rules()
        val = read_split(world["validation"])[: config.guided_val or config.n_val]
        evaluated = read_split(world[config.eval_split])
        decoders = _decoders(config, mmboundary_model, vanilla, calibrator, clip, rules)
        folder = guided_folder(config)
        return {"split": config.eval_split, "validation_questions": len(val),
                "grid": {"levels": list(config.guided_levels),
                         "tries": list(config.guided_tries),
                         "temperature": config.guided_temperature},
                "systems": {key: _system(d, key, val, evaluated, folder)
                            for key, d in decoders.items()}}

    return cached_stage(guided_folder(config), config.fresh, run)


# ---------------------------------------------------------------- rows, table and plots
def guided_predictions(info: dict[str, Any], parser: Any) -> dict[str, list[Response]]:
    """The guided rows' predictions by report name: MMBoundary's statements parsed (``parser``),
    the vanilla model's plain sentence steps (it states nothing), as their plain rows."""
    from mmboundary.data.io import read_responses
    from mmboundary.evaluation.baselines import plain_steps, verbal_confidence

    out = {}
    for key, system in info["systems"].items():
        responses = read_responses(system["responses"]["guided"])
        out[system["row"]] = (verbal_confidence(responses, parser) if key == "mmboundary"
                              else [plain_steps(r) for r in responses])
    return out


def guided_settings(info: dict[str, Any]) -> dict[str, Any]:
    """Per guided row: the setting chosen on validation and its tokens per question."""
    return {s["row"]: {**s["chosen"], "validation_questions": info["validation_questions"],
                       "tokens_per_question": s["guided"]["tokens"],
                       "plain_tokens_per_question": s["plain"]["tokens"]}
            for s in info["systems"].values()}


def lacks_rows(folder: Path, info: dict[str, Any] | None) -> bool:
    """True when ``folder`` holds a finished metrics stage without the guided rows (made before
    the guided stage existed): it must be redone, not resumed."""
    from mmboundary.demo.stages import stage_done

    done = stage_done(folder)
    if info is None or done is None:
        return False
    return any(s["row"] not in done.get("files", {}) for s in info["systems"].values())


def _number(values: list[float | None], digits: int) -> str:
    """One run: the value; several: ``mean ± sd``; 3 digits as the paper (".560")."""
    from mmboundary.evaluation.intervals import mean_sd
    from mmboundary.evaluation.tables import fmt_value

    def fmt(v: float) -> str:
        return fmt_value(v) if digits == 3 else f"{v:.{digits}f}"

    stats = mean_sd(values)
    if stats is None:
        return "n/a"
    mean, sd, n = stats
    text = fmt(mean) if len(values) == 1 else f"{fmt(mean)} \u00b1 {fmt(sd)}"
    return text + ("" if n == len(values) else f" (n={n})")


def _settings(infos: Sequence[dict[str, Any]], key: str) -> str:
    chosen = [setting(i["systems"][key]["chosen"]) for i in infos]
    counts = {c: chosen.count(c) for c in dict.fromkeys(chosen)}
    return chosen[0] if len(counts) == 1 else ", ".join(f"{c} ({n}x)" for c, n in counts.items())


def guided_table(infos: Sequence[dict[str, Any]]) -> Any:
    """One row per system and decoding (plain, guided); several infos (seeds): mean +- sd."""
    from mmboundary.evaluation.tables import Table

    rows = []
    for key, shown in SHOWN.items():
        systems = [i["systems"][key] for i in infos]
        for kind in ("plain", "guided"):
            runs = [s[kind] for s in systems]
            val = [s["validation"]["plain"] if kind == "plain" else next(
                g for g in s["validation"]["grid"] if g["below"] == s["chosen"]["below"]
                and g["tries"] == s["chosen"]["tries"]) for s in systems]
            rows.append([shown, kind, "-" if kind == "plain" else _settings(infos, key),
                         _number([v["accuracy"] for v in val], 3),
                         _number([r["accuracy"] for r in runs], 3),
                         _number([r["tokens"] for r in runs], 1),
                         _number([r["steps_resampled"] for r in runs], 2),
                         _number([s["aurc"] for s in systems], 3) if kind == "plain" else "-"])
    first = infos[0]
    runs = "" if len(infos) == 1 else f" Mean \u00b1 sd over {len(infos)} runs (seeds)."
    failed = sum(s[kind]["failed"] for i in infos for s in i["systems"].values()
                 for kind in ("plain", "guided"))
    if failed:  # said, not hidden: a failed response is left out of its run's numbers
        runs += f" {failed} response(s) failed (meta 'error') and are left out."
    caption = (f"MMBoundary resamples a step its own statement rates low, the vanilla model one "
               f"its internal confidence (the Internal C calibrator) rates low. Setting = resample "
               f"a step below level L with K alternatives, chosen on {first['validation_questions']}"
               f" validation questions by accuracy (ties: fewer tokens) from L in "
               f"{first['grid']['levels']} x K in {first['grid']['tries']}; Val. acc = the "
               f"choice's validation accuracy. Acc and tokens on the {first['split']} split "
               f"(tokens = every text token sampled, discarded alternatives included). AURC: "
               f"abstaining below L = answering the plain chains whose lowest step level is >= L "
               f"(lower is better).{runs}")
    return Table("Confidence-guided decoding (issue #17)", caption,
                 ["System", "Decoding", "Setting (chosen on validation)", "Val. acc", "Acc",
                  "Tokens / question", "Resampled steps / question", "AURC (abstain below L)"],
                 rows)


def guided_points(infos: Sequence[dict[str, Any]]) -> tuple[dict[str, list[PlotPoint]],
                                                             dict[str, list[PlotPoint]]]:
    """(accuracy vs tokens, risk vs coverage) series by shown name, averaged over ``infos``."""
    from mmboundary.evaluation.selective import mean_points

    accuracy, risk = {}, {}
    for key, shown in SHOWN.items():
        systems = [i["systems"][key] for i in infos]
        label = f"guided {_settings(infos, key)}"
        accuracy[shown] = mean_points(
            [[PlotPoint(name, s[kind]["tokens"], s[kind]["accuracy"])
              for kind, name in (("plain", "plain"), ("guided", label))] for s in systems])
        risk[shown] = mean_points(
            [[PlotPoint(f"L{p['below']}", p["coverage"], p["selective_risk"])
              for p in s["abstention"] if p["selective_risk"] is not None] for s in systems])
    return accuracy, risk


def guided_report(infos: Sequence[dict[str, Any]], folder: Path) -> tuple[list[Any],
                                                                           dict[str, bytes]]:
    """The guided table and the two plots (title -> PNG) for ``write_report``; the plots are
    also written to ``folder`` as ``guided_accuracy_tokens.png`` and ``guided_risk_coverage.png``."""
    from mmboundary.evaluation.selective import (
        accuracy_tokens_series_png,
        risk_coverage_series_png,
    )

    accuracy, risk = guided_points(infos)
    split, n = infos[0]["split"], "" if len(infos) == 1 else f", mean \u00b1 sd over {len(infos)} seeds"
    pngs = {"guided_accuracy_tokens.png": (
                f"Confidence-guided resampling: accuracy vs tokens per question ({split}{n})",
                accuracy_tokens_series_png(accuracy, f"plain vs guided resampling ({split})")),
            "guided_risk_coverage.png": (
                f"Abstention below level L: selective risk vs coverage ({split}{n})",
                risk_coverage_series_png(risk, f"abstain below level L ({split})"))}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, data) in pngs.items():
        (folder / name).write_bytes(data)
    return [guided_table(infos)], {title: data for title, data in pngs.values()}
