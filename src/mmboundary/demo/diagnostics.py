"""The demo's diagnostics stage (issue #12): where is the model's signal lost?

- **Stated vs internal level** (``evaluation.diagnostics.stated_vs_internal``): for the warm-up
  and the RL model, each step of its answers to the evaluated split: the level it states against
  the level of the internal confidence C of that step, scored as R_CS scores i_t (the frozen
  warm-up model, the RL stage's calibrator fitted on the warm-up model's own answers; under
  ``sft_teacher="probe"`` the level of the RL stage's probe of the warm-up model, as R_CS).
  Confusion matrix, Cohen's kappa, exact / within-one agreement, level shares.
- **Linear probe** (``evaluation.probe``): for the vanilla, warm-up and RL models, a logistic
  regression on the last-layer hidden state at each step's last content token, trained on the
  steps of the model's own greedy answers to the first ``diagnostics_probe_train`` train
  questions (0 = the ``n_rl`` RL prompts), AUROC on its answers to the validation split; next
  to it the stated confidence's AUROC and the internal C's AUROC (each model's own pass; the
  vanilla model with the warm-up's calibrator, fitted on its steps; the warm-up and RL models
  with the RL stage's, fitted on the warm-up's (ours: the RL model has no calibrator of its own))
  on the same validation steps. Does training keep what the model knows, and do its
  statements say it?

Answers are reused where a stage cached them (the metrics stage's answers to the evaluated
split, the vanilla model's validation answers of the constant baselines, the estimate stage's
vanilla train answers) and cached here otherwise (``predictions-<split>/<system>/``).
- **Chain content** (``evaluation.diagnostics.content_change``): for the warm-up and the RL
  model, the share of questions of the evaluated split whose chain content (statements removed)
  is the vanilla model's, and the answer accuracy on the kept and the changed chains: where the
  accuracy the warm-up costs goes.

Also: the held-out RL curves (``training.heldout``'s ``heldout_log.jsonl``) as a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmboundary.demo.config import DemoConfig
from mmboundary.demo.stages import cached_stage

#: what each trained model is called in the report rows (demo/run.py), by diagnostics label
FALLBACK_NAMES = {"warm-up": "MMBoundary w/o RL (warm-up only)",
                  "warm-up + RL": "MMBoundary (ours: warm-up + RL)"}


def diagnostics(config: DemoConfig, world: dict[str, Any], vanilla: Path, est: dict[str, Any],
                sft: dict[str, Any], rl: dict[str, Any], models: dict[str, str],
                clip: Path) -> dict[str, Any]:
    """Run the diagnostics (cached in ``out/diagnostics``); ``models``: the report's display
    name -> model folder (to find the metrics stage's cached answers)."""
    folder = config.out / "diagnostics"
    names = {path: name for name, path in models.items()}
    trained = {label: (names.get(path, FALLBACK_NAMES[label]), path)
               for label, path in (("warm-up", sft["model"]), ("warm-up + RL", rl["model"]))}

    def run() -> dict[str, Any]:
        from mmboundary.data.io import write_json_atomic

        shared = _Shared(config, clip)
        out: dict[str, Any] = {"split": config.eval_split, "levels": {}, "probe": {}}
        probe = (rl.get("calibrator_fit") or {}).get("probe")  # sft_teacher "probe"
        out["levels"] = _levels(config, world, trained, sft["model"], rl["calibrator"], shared,
                                probe)
        out["content"] = _content(config, world, trained, str(vanilla), shared)
        if config.diagnostics_probe:
            systems = {"vanilla": (None, str(vanilla), sft["calibrator"]),
                       **{k: (n, p, rl["calibrator"]) for k, (n, p) in trained.items()}}
            out["probe"] = _probe(config, world, est, systems, shared)
        write_json_atomic(folder / "diagnostics.json", out)
        return out

    return cached_stage(folder, config.fresh, run)


class _Shared:
    """Models every diagnostic shares, loaded once on first use."""

    def __init__(self, config: DemoConfig, clip: Path) -> None:
        from mmboundary.demo.stages import step_rules
        from mmboundary.text import default_parser

        self.config, self.clip_path = config, clip
        self.rules = step_rules()
        self.similarity = self.rules.similarity
        self.parser = default_parser()
        self._clip: Any = None

    @property
    def clip(self) -> Any:
        if self._clip is None:
            from mmboundary.models.clip import ClipScorer

            self._clip = ClipScorer.from_pretrained(self.clip_path, device="cpu")
        return self._clip

    def scorer(self, vlm: Any, calibrator: str, probe: str | None = None) -> Any:
        from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
        from mmboundary.confidence.probe_teacher import StepProbe

        return InternalConfidenceScorer(vlm, ConfidenceCalibrator.load(calibrator),
                                        similarity=self.similarity, clip=self.clip,
                                        parser=self.parser, batch_size=self.config.batch_size,
                                        probe=None if probe is None else StepProbe.load(probe))


def _answers(config: DemoConfig, model: str, samples: list, split: str,
             name: str | None) -> list:
    """The model's greedy answers to ``samples``, from (or into) the demo's answer cache:
    ``predictions[-<split>]/<slug(name)>/`` (the vanilla model: ``predictions[-<split>]/``)."""
    from mmboundary.demo.systems import _runner, slug

    folder = config.out / ("predictions" if split == "test" else f"predictions-{split}")
    return _runner(model, samples, config, folder / slug(name) if name else folder).greedy()


def _levels(config: DemoConfig, world: dict[str, Any], trained: dict[str, tuple[str, str]],
            warmup_model: str, calibrator: str, shared: _Shared,
            probe: str | None = None) -> dict[str, Any]:
    from mmboundary.evaluation.diagnostics import stated_vs_internal
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import read_split

    samples = read_split(world[config.eval_split])
    scorer = shared.scorer(VLM.from_pretrained(warmup_model, device="cpu", dtype="float32"),
                           calibrator, probe)
    out = {}
    for label, (name, path) in trained.items():
        answers = _answers(config, path, samples, config.eval_split, name)
        try:
            out[label] = stated_vs_internal(scorer, samples, answers).to_dict()
        except ValueError as err:  # e.g. a model that states nothing: said, not fatal
            out[label] = {"error": str(err), "n": 0}
    return out


def _content(config: DemoConfig, world: dict[str, Any], trained: dict[str, tuple[str, str]],
             vanilla: str, shared: _Shared) -> dict[str, Any]:
    """Each trained model's chains against the vanilla model's on the evaluated split."""
    from mmboundary.evaluation.diagnostics import content_change
    from mmboundary.shapesworld.scenes import read_split

    samples = read_split(world[config.eval_split])
    base = _answers(config, vanilla, samples, config.eval_split, None)
    out = {}
    for label, (name, path) in trained.items():
        answers = _answers(config, path, samples, config.eval_split, name)
        out[label] = content_change(shared.rules, shared.parser, samples, base, answers).to_dict()
    return out


def _probe(config: DemoConfig, world: dict[str, Any], est: dict[str, Any],
           systems: dict[str, tuple[str | None, str, str]], shared: _Shared) -> dict[str, Any]:
    from mmboundary.evaluation.probe import collect_steps, probe_auroc
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, read_split

    if config.diagnostics_probe_train < 0:
        raise ValueError(f"DemoConfig.diagnostics_probe_train: expected >= 0 (0 = n_rl), got "
                         f"{config.diagnostics_probe_train}")
    train = read_split(world["train"])[: config.diagnostics_probe_train or config.n_rl]
    val = read_split(world["validation"])
    out = {}
    for label, (name, path, calibrator) in systems.items():
        vlm = VLM.from_pretrained(path, device="cpu", dtype="float32")
        train_answers = (_estimated(est, train) if name is None else None) or _answers(
            config, path, train, "train", name)
        val_answers = _answers(config, path, val, "validation", name)
        steps = {split: collect_steps(vlm, samples, answers, shared.rules, load_image,
                                      parser=shared.parser, batch_size=config.batch_size)
                 for split, samples, answers in (("train", train, train_answers),
                                                 ("validation", val, val_answers))}
        if config.diagnostics_internal_auroc:
            usable = [(s, r) for s, r in zip(val, val_answers, strict=True)
                      if "error" not in r.meta and r.text.strip()]
            scored = shared.scorer(vlm, calibrator).score([s for s, _ in usable],
                                                          [r.text for _, r in usable])
            steps["validation"] = steps["validation"].with_internal(scored)
        try:
            out[label] = probe_auroc(steps["train"], steps["validation"],
                                     seed=config.seed).to_dict()
        except ValueError as err:  # e.g. every training step right: no probe, the run goes on
            out[label] = {"error": str(err), "n_train": len(steps["train"]),
                          "n_val": len(steps["validation"])}
    return out


def _estimated(est: dict[str, Any], samples: list) -> list | None:
    """The estimate stage's vanilla answers to ``samples`` (None unless it has them all)."""
    from mmboundary.data.io import read_responses

    by_id = {r.sample_id: r for r in read_responses(est["estimates"])}
    found = [by_id.get(s.id) for s in samples]
    return None if any(r is None for r in found) else found


def report_parts(info: dict[str, Any] | None, heldout_log: Path) -> tuple[list, dict[str, bytes]]:
    """The report's diagnostics tables (one confusion matrix per model, the probe table) and
    the held-out RL curves figure (when the RL stage logged them)."""
    from mmboundary.evaluation.diagnostics import agreement_table
    from mmboundary.evaluation.heldout import heldout_curve_png

    tables = []
    if info:
        split = info.get("split", "test")
        tables += [agreement_table(f"{label} ({split} split)", agreement)
                   for label, agreement in info.get("levels", {}).items()]
        if info.get("content"):
            from mmboundary.evaluation.diagnostics import content_table

            tables.append(content_table(split, info["content"]))
        if info.get("probe"):
            from mmboundary.evaluation.probe import probe_table

            tables.append(probe_table(info["probe"]))
    figures = {}
    if heldout_log.is_file():
        figures[HELDOUT_TITLE] = heldout_curve_png(heldout_log)
    return tables, figures


HELDOUT_TITLE = "RL training: held-out validation answers every few GRPO steps (greedy)"


#: (column, where in diagnostics.json) of the table over seeds
_OVER_SEEDS = (
    ("Probe AUROC", ("probe", "auroc")), ("Stated AUROC", ("probe", "stated_auroc")),
    ("Internal C AUROC", ("probe", "internal_auroc")),
    ("Kind + position AUROC", ("probe", "kind_position_auroc")),
    ("Probe / stated, answer steps", ("probe", "by_kind", "answer", ("probe", "stated"))),
    ("Kappa (stated vs internal)", ("levels", "kappa")),
    ("Content kept", ("content", "kept")),
    ("Acc of changed chains (now / vanilla)",
     ("content", ("changed_accuracy", "changed_base_accuracy"))),
)


def diagnostics_over_seeds(infos: list[dict[str, Any]]) -> Any:
    """One table of each seed's diagnostics (``diagnostics.json``) as mean +- sd over seeds,
    one row per model (vanilla, warm-up, warm-up + RL); n/a where a seed lacks the value."""
    import numpy as np

    from mmboundary.evaluation.tables import Table, fmt_mean_sd

    def dig(info: dict[str, Any], label: str, path: tuple) -> Any:
        node: Any = info.get(path[0], {}).get(label)
        for key in path[1:]:
            if isinstance(key, tuple):
                return tuple(None if node is None else node.get(k) for k in key)
            node = None if node is None else node.get(key)
        return node

    def cell(values: list[Any]) -> str:
        parts = list(zip(*values, strict=True)) if values and isinstance(values[0], tuple) \
            else [values]
        out = []
        for part in parts:
            found = [float(v) for v in part if v is not None]
            stats = (float(np.mean(found)), float(np.std(found, ddof=1)) if len(found) > 1
                     else 0.0, len(found)) if found else None
            out.append(fmt_mean_sd(stats, len(infos)))
        return " / ".join(out)

    rows = []
    for label in ("vanilla", "warm-up", "warm-up + RL"):
        rows.append([label, *(cell([dig(info, label, path) for info in infos])
                              for _, path in _OVER_SEEDS)])
    split = infos[0].get("split", "test") if infos else "test"
    return Table(f"Diagnostics over {len(infos)} seeds", "Mean ± sd over seeds of each seed's "
                 "diagnostics (its own report has the tables): the linear probe's AUROC on "
                 "validation steps next to the stated and internal confidence's on the same "
                 "steps, and a regression on step kind and position alone; Cohen's kappa of "
                 f"stated vs internal level and the chain content vs the vanilla model ({split} "
                 "split).", ["Model", *(name for name, _ in _OVER_SEEDS)], rows)
