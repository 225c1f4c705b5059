"""A step viewer for the HTML report: test questions with each reasoning step coloured by the
confidence the model stated for it and marked right, wrong or unaligned.

Which questions: the ``n_confident_wrong`` questions whose wrong aligned steps carry the highest
stated confidence (the failures calibration is about), then questions drawn at random with a fixed
seed, so two reports of one result show the same page. Aligned-but-wrong is the only "wrong": a
step the judge could not align to any reference step is shown as unaligned (–), never as wrong.

Input: an :class:`~mmboundary.evaluation.evaluate.EvalResult` (its per-sample step verdicts) and,
optionally, the dataset's :class:`~mmboundary.data.schema.Sample` objects for the question text
and a small base64 PNG thumbnail of each image (the page stays self-contained).
"""

from __future__ import annotations

import base64
import html
import io
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmboundary.data.schema import Sample
from mmboundary.evaluation.evaluate import EvalResult, SampleResult, StepResult

THUMBNAIL_PX = 96
NO_CONFIDENCE = "#e0e0e0"
MARKS = {True: ("\u2713", "right"), False: ("\u2717", "wrong"), None: ("\u2013", "unaligned")}
VIEWER_CSS = (
    ".viewer{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}"
    ".card{border:1px solid #bbb;border-radius:6px;padding:8px;display:flex;gap:10px;"
    "background:#fff}.card>div{flex:1}.card img{width:96px;height:auto;align-self:flex-start;border:1px solid #ccc}"
    ".card .q{font-weight:bold;margin:0 0 4px}.card .meta{font-size:0.85em;color:#444;margin:0 0 6px}"
    ".steps{list-style:none;padding:0;margin:0}.step{padding:2px 6px;margin:2px 0;border-radius:3px;"
    "font-size:0.9em}.step .mark{display:inline-block;width:1.2em;font-weight:bold}"
    ".mark.right{color:#060}.mark.wrong{color:#a00}.mark.unaligned{color:#555}.step .conf{float:right;font-family:monospace;margin-left:8px}"
    ".step.worst{outline:2px solid #900}.legend span{display:inline-block;padding:1px 8px;"
    "margin-right:4px;border-radius:3px;font-size:0.85em}"
)


def confidence_colour(confidence: float | None) -> str:
    """Background of a step: hue 0 (red) at confidence 0 to 120 (green) at 1; grey without one."""
    if confidence is None:
        return NO_CONFIDENCE
    return f"hsl({120 * min(max(confidence, 0.0), 1.0):.0f},75%,82%)"


def _worst_wrong(sample: SampleResult) -> StepResult | None:
    """The aligned, wrong step with the highest stated confidence (None if there is none)."""
    wrong = [s for s in sample.steps if s.correct is False and s.ref_index is not None
             and s.expressed_confidence is not None]
    return max(wrong, key=lambda s: s.expressed_confidence or 0.0, default=None)


@dataclass
class Pick:
    """One question of the viewer and why it was picked."""

    sample: SampleResult
    worst: StepResult | None
    reason: str


def pick_questions(result: EvalResult, n: int = 20, n_confident_wrong: int = 10,
                   seed: int = 0) -> list[Pick]:
    """``n_confident_wrong`` questions ranked by their most confidently wrong step (highest stated
    confidence first; ties in dataset order), then ``n`` minus those drawn at random
    (``random.Random(seed)``) from the rest, shown in dataset order."""
    ranked = sorted(((w, i) for i, s in enumerate(result.samples)
                     if (w := _worst_wrong(s)) is not None),
                    key=lambda item: (-(item[0].expressed_confidence or 0.0), item[1]))
    top = [i for _, i in ranked[:min(n_confident_wrong, n)]]
    taken = set(top)
    rest = [i for i in range(len(result.samples)) if i not in taken]
    drawn = sorted(random.Random(seed).sample(rest, min(n - len(top), len(rest))))
    picks = []
    for i in top:
        worst = _worst_wrong(result.samples[i])
        conf = worst.expressed_confidence if worst is not None else None
        picks.append(Pick(result.samples[i], worst, f"confidently wrong step ({conf:.2f})"))
    picks += [Pick(result.samples[i], _worst_wrong(result.samples[i]), "random pick")
              for i in drawn]
    return picks


def thumbnail_data_uri(path: str | Path | None, size: int = THUMBNAIL_PX) -> str | None:
    """A ``data:image/png;base64,...`` URI of the image shrunk to fit ``size`` px (None when the
    file is missing or unreadable: the viewer then shows the question without a picture)."""
    if not path:
        return None
    from mmboundary.data.images import load_image

    try:
        image = load_image(path)
    except (OSError, ValueError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _step_html(step: StepResult, worst: bool) -> str:
    mark, word = MARKS[step.correct if step.ref_index is not None else None]
    conf = "no confidence" if step.expressed_confidence is None \
        else f"{step.expressed_confidence:.2f}"
    tip = f"{word}; {step.kind or 'no step type'}; {step.reason}".strip("; ")
    return (f"<li class='step{' worst' if worst else ''}' title='{html.escape(tip)}' "
            f"style='background:{confidence_colour(step.expressed_confidence)}'>"
            f"<span class='mark {word}' aria-label='{word}'>{mark}</span>{html.escape(step.text)}"
            f"<span class='conf'>{html.escape(conf)}</span></li>")


def _card_html(pick: Pick, sample: Sample | None) -> str:
    r = pick.sample
    thumb = thumbnail_data_uri(sample.image) if sample is not None else None
    img = f"<img alt='image of {html.escape(r.sample_id)}' src='{thumb}'>" if thumb else ""
    question = sample.question if sample is not None else f"(question of {r.sample_id})"
    verdict = {True: "\u2713", False: "\u2717", None: "not judged"}[r.answer_correct]
    conf = "" if r.response_confidence is None else f" @ {r.response_confidence:.2f}"
    meta = (f"{r.sample_id} \u00b7 gold: {r.gold or 'n/a'} \u00b7 predicted: "
            f"{r.answer or 'none'}{conf} {verdict} \u00b7 {pick.reason}")
    steps = "".join(_step_html(s, s is pick.worst) for s in r.steps) or "<li>(no steps)</li>"
    return (f"<div class='card'>{img}<div><p class='q'>{html.escape(question)}</p>"
            f"<p class='meta'>{html.escape(meta)}</p><ol class='steps'>{steps}</ol></div></div>")


def legend_html() -> str:
    """Colour scale and marks, shown once above the viewers."""
    scale = "".join(f"<span style='background:{confidence_colour(c)}'>{c:.2f}</span>"
                    for c in (0.0, 0.25, 0.5, 0.75, 1.0))
    return (f"<p class='legend'>Stated confidence: {scale}<span style='background:"
            f"{NO_CONFIDENCE}'>none</span> &nbsp; \u2713 aligned and right, \u2717 aligned and "
            f"wrong, \u2013 not aligned to any reference step; outlined: the question's most "
            f"confidently wrong step.</p>")


def step_viewer_html(result: EvalResult, samples: Mapping[str, Sample] | None = None,
                     n: int = 20, n_confident_wrong: int = 10, seed: int = 0,
                     run: str = "") -> str:
    """The viewer of one result: a heading and one card per picked question (see module doc);
    ``samples`` maps sample id -> Sample (question text, image thumbnail); ``run`` names the run
    shown when its (system, dataset) has several."""
    picks = pick_questions(result, n, n_confident_wrong, seed)
    cards = "".join(_card_html(p, (samples or {}).get(p.sample.sample_id)) for p in picks)
    return (f"<h3>{html.escape(result.system)} on {html.escape(result.dataset)}"
            f"{html.escape(f', run {run}' if run else '')} "
            f"({len(picks)} of {len(result.samples)} questions)</h3>"
            f"<div class='viewer'>{cards}</div>")
