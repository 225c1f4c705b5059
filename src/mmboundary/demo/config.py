"""The demo's settings: one dataclass (the one config base, ``ConfigBase``: YAML, presets,
field docs, validation on load), three presets (quick, default, large)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.confidence.fusion import ANSWER_STEP_RULES
from mmboundary.training.config_base import ConfigBase

#: ablations the demo knows: warm-up variants (``wo_<estimator>``, ``w_max``), the warm-up alone
#: (``wo_rl``) and RL without warm-up (``drl``)
ABLATIONS = ("wo_rl", "w_max", "wo_lnlp", "wo_mte", "wo_tokensar", "wo_clips", "wo_ssmap",
             "wo_ka", "wo_ec", "wo_cs", "drl")
#: whose levels the warm-up teaches (``DemoConfig.sft_teacher``)
SFT_TEACHERS = ("internal", "probe")


@dataclass
class DemoConfig(ConfigBase):
    """Everything `mmboundary demo` does, with documented defaults (the ``default`` preset).

    The run is ShapesWorld end to end: the shipped world VLM (vanilla) answers training questions;
    its steps get internal confidence (four estimators, calibrator fitted on those steps); the
    warm-up SFT teaches it statements; GRPO with R_KA + R_EC + R_CS calibrates them; every system
    and baseline is evaluated on the test split; a report is written.
    """

    out_dir: str = "runs/demo"
    """Where every stage writes (a rerun resumes finished stages unless ``fresh``)."""
    seed: int = 0
    """World seed (splits) and training seed."""
    vanilla_model: str | None = None
    """The vanilla world VLM folder (None = the shipped one, ``mmboundary world pretrain``)."""
    clip_model: str | None = None
    """The world CLIP folder for U_CLIPS (None = the shipped one, ``world pretrain-clip``)."""
    n_train: int = 1500
    """ShapesWorld train samples answered by the vanilla model for the warm-up SFT set (ours:
    chosen on validation, seed 0, accuracy levels: Acc .490 at 480, .560 at 1500, .555 at 3000
    against the vanilla model's .583: fewer questions seen three times each let the warm-up
    rewrite the chains' content)."""
    n_rl: int = 240
    """Train samples used as RL prompts (the first ``n_rl`` of the train split)."""
    n_test: int = 400
    """Test samples every system is evaluated on (PLATFORM.md: +/- 5 points at 300)."""
    n_val: int = 400
    """Validation samples: the constant baselines are fitted here, and settings are chosen here
    (``eval_split: validation``); the test split is reported once."""
    eval_split: str = "test"
    """Split the systems are evaluated on: ``test`` (the report) or ``validation`` (choosing
    settings; never tune on test)."""
    threads: int = 2
    """torch CPU threads."""
    max_new_tokens: int = 160
    """Longest response, the same for every system, RL rollouts and guided decoding (a vanilla
    world chain is ~30 tokens, at most 65; statements add ~6-8 per step, and the warm-up targets
    reach 128). At 96 (before) the budget cut 2.3% of the warm-up model's validation chains
    before their answer ("... So, the"), counting chains with five objects first; the report
    names any system whose responses the budget cut."""
    batch_size: int = 32
    """Samples per generation / scoring batch."""
    estimators: tuple[str, ...] = ("lnlp", "mte", "tokensar", "clips")
    """Internal-confidence estimators of the full method."""
    fusion: str = "mean"
    """How the normalised estimator confidences are fused into C (``confidence.Fusion``):
    ``mean`` (paper: equal weights) or ``fitted`` (ours: the weighted mean with weights >= 0
    fitted on the train steps' correctness, judged by the rule set; ShapesWorld's U_CLIPS, step
    AUROC .34 there, gets weight 0). The w/o-U_X ablations fuse their remaining estimators the
    same way; "w U_Max" stays max pooling. Validation (seeds 0 / 1 / 2, README "Fusion weights
    fitted"): MECE .046 / .068 -> .027 / .041 / .031, step AUROC .748 / .766 -> .769 / .783 /
    .780, but Acc - vanilla -.023 on seed 1 (the rule's bar is -.01; with 200 GRPO steps -.009,
    but then seed 0's statements fold onto level 3): an option."""
    level_rule: str = "accuracy"
    """How fused confidence C is cut into the five levels the warm-up teaches, R_CS compares with
    and the Internal C row states (``confidence.LevelCuts``): ``accuracy`` (ours, the default:
    fitted to the model's step accuracy on the train split, judged by the rule set, so a level's
    value is how often its steps are right), ``quantile`` (the distribution's shape, METHOD.md
    section 3) or ``sigma``. Chosen on validation (seed 0, 480 warm-up questions): MECE .128 ->
    .034, step AUROC .702 -> .723, step Brier .212 -> .179 after RL; README "What we tried")."""
    answer_step: str = "own"
    """The answer step's internal confidence (``ConfidenceCalibrator.answer_step``, ours): ``own``
    (its own tokens, like any step), ``chain_min`` / ``chain_mean`` (the least / mean C of its
    chain, cut into levels by cuts fitted on the answer steps alone). Used wherever the
    calibrator is: the warm-up's statements, R_CS's i_t and the Internal C row. Validation
    (seeds 0 / 1, README): ``chain_min`` takes MECE .046 / .067 -> .017 / .035, ECE .088 / .105 ->
    .022 / .048 and answer AUROC .50 -> .60 / .59, but Acc - vanilla -.006 / -.003 -> -.019 /
    -.024, so ``own`` stays the default."""
    statements_per_level: int = 1
    """Warm-up statements per level: n = the first n of each level (``StatementBank.subset``),
    0 = the full bank (20+ per level, the default for real models) (ours: 1 for the ~0.6M-
    parameter world model, which garbles the full bank into "but I'm not be right". Chosen on
    validation: stated step AUROC .456 -> .699 after RL, step Brier .249 -> .214)."""
    sft_epochs: float = 3.0
    """Warm-up SFT epochs over the vanilla model's own responses."""
    sft_lr: float = 5e-4
    """Warm-up learning rate (full fine-tuning of the ~1M-parameter world model) (ours: chosen
    on validation, seed 0, 1500 questions x 3 epochs: Acc .578 at 5e-4 vs .560 at 1e-3, vanilla
    .583; at 3e-4 with 480 questions the statements were not learned)."""
    sft_finetuning: str = "full"
    """``full`` or ``lora``; the world model is tiny, so full fine-tuning (ours)."""
    sft_distill: float = 0.5
    """Warm-up content distillation weight (``SFTConfig.distill_weight``: KL from the vanilla
    model, run without the statements, on the content tokens; 0 = off) (ours: chosen on
    validation, 1500 questions, seeds 0 and 1: Acc vs vanilla -.018 / -.020 without, -.006 /
    -.003 at 0.5, -.004 / -.004 at 1.0 (MECE .062 / .070), -.003 at 3.0 (seed 0; step AUROC
    .738))."""
    sft_content_weight: float = 1.0
    """Warm-up cross-entropy weight on content tokens relative to statement tokens
    (``SFTConfig.content_weight``; 0 with ``sft_distill`` > 0: content taught by the KL alone)."""
    sft_augment: bool = False
    """Warm-up content that does not read the statements (ours, ``SFTConfig.
    content_only_dataset``): every warm-up record once more with each step's level drawn
    uniformly at random, trained on its content only (its statement tokens weight 0), so the
    content after a statement is taught under every statement. Off by default: on validation it
    gives the probe teacher part of its accuracy back (+.013 / +.005 after RL, seeds 0 / 1), not
    the margins the default would need, and changes nothing measurable with C's levels (README
    "Content that does not read the statements")."""
    sft_teacher: str = "internal"
    """Whose levels the warm-up's statements say: ``internal`` (the paper's: the level of each
    step's fused internal confidence C) or ``probe`` (ours, ``confidence.probe_teacher``: the
    level of a linear probe on the vanilla model's hidden state at the step's last content
    token, cross-fitted over the train questions, cut by the accuracy rule); R_CS's i_t is then
    a probe fitted on the RL start model's own answers (``RLConfig.probe``). The Internal C row
    stays C's (the paper's internal confidence). Validation: README "A teacher that knows
    more"; with distillation 1.0 and 200 GRPO steps it is ``--preset probe`` (README "The probe
    teacher, distilled, with longer RL")."""
    rl_steps: int = 60
    """GRPO optimizer steps."""
    rl_lr: float = 5e-5
    """GRPO learning rate (paper hint 1e-5 for 7B; ours for the ~0.6M-parameter world model:
    at 2e-5 sixty steps moved MECE .146 -> .128, at 5e-5 .143 -> .123; later, validation seed 0:
    1e-4 Acc -.005 vs vanilla, MECE .088; 2e-4 -.027, .025 (perception steps collapse onto one
    position word); 5e-4 collapses, Acc .377; README "RL strength")."""
    rl_generations: int = 4
    """Completions per prompt (GRPO group)."""
    rl_batch: int = 16
    """Completions per GRPO step (a multiple of ``rl_generations``)."""
    rl_temperature: float = 0.7
    """Rollout sampling temperature (ours: at 1.0 the small world model's rollouts are mostly
    wrong, ~25% answer accuracy vs ~50% greedy, and GRPO learns from noise)."""
    rl_kl_beta: float = 0.0
    """KL coefficient (0 = no reference model: cheaper on CPU) (ours)."""
    rl_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Reward weights (alpha, beta, gamma): R = alpha R_KA + beta R_EC + gamma R_CS
    (``RLConfig.alpha`` / ``beta`` / ``gamma``; paper default 1, 1, 1)."""
    rl_credit: str = "completion"
    """Who gets which reward in GRPO (``RLConfig.credit``, ours): "completion" (GRPO's one
    advantage per completion) or "step" (content from R_KA, each statement from its own step's
    R_EC / R_CS terms; ``training.step_credit``)."""
    rl_cs_form: str = "abs"
    """R_CS's per-step distance (``RLConfig.cs_form``, ours): "abs" |e_t - i_t| (METHOD.md) or
    "squared" (e_t - i_t)^2."""
    rl_calibrator: str = "start_model"
    """Calibrator of R_CS's i_t: "start_model" = fitted on the RL start model's own greedy answers
    to the train split (METHOD.md section 6: the calibrator of the model whose confidence it is);
    "given" = the warm-up's, fitted on the vanilla model (its levels are not the scorer's)."""
    rl_calibrator_samples: int = 0
    """Train questions the RL start model answers for that fit (0 = the ``n_rl`` RL prompts;
    ours: ~850 steps at the default, enough for the cuts, and half the time of all ``n_train``)."""
    rl_eval_every: int = 20
    """Held-out RL curves (``RLConfig.eval_every``): before the first GRPO step, every N steps
    and after the last, the policy answers the first ``rl_eval_samples`` validation questions
    greedily; mean R_KA / R_EC / R_CS, Acc, MECE and step AUROC go to
    ``rl/run/heldout_log.jsonl`` and a report figure (0 = off; measured ~2.5 s per evaluation
    of 64 questions on 1 thread)."""
    rl_eval_samples: int = 64
    """Validation questions of the held-out RL curves (``RLConfig.eval_samples``)."""
    diagnostics: bool = True
    """Diagnostics stage (issue #12, ``demo/diagnostics.py``): stated vs internal level of the
    warm-up and RL models on the evaluated split (confusion, Cohen's kappa), and the linear probe;
    shown in the report. False = no stage, no sections."""
    diagnostics_probe: bool = True
    """The linear probe of the diagnostics stage (vanilla, warm-up and RL models: hidden state at
    each step's last content token -> step correct; AUROC on validation)."""
    diagnostics_probe_train: int = 0
    """Train questions whose answers' steps train the probe (0 = the ``n_rl`` RL prompts)."""
    diagnostics_internal_auroc: bool = True
    """Next to the probe, the internal confidence C's AUROC on the same validation steps (one
    scoring pass per model; measured ~5 s of the stage's ~43 s at the default size, 1 thread)."""
    sc_samples: int = 5
    """Samples per question for the self-consistency and multisample baselines."""
    baselines: tuple[str, ...] = ("token-prob", "internal", "dpv", "dps", "sc", "multisample")
    """Baselines evaluated besides vanilla and the two constants (``baseline_runs.METHODS``);
    fewer when choosing settings on validation, where only MMBoundary's rows matter."""
    ablations: tuple[str, ...] = ("wo_rl", "w_max")
    """Cheap ablations: the warm-up alone and max-pooling fusion (a warm-up variant). More
    (``demo.ablations``): ``wo_lnlp``, ``wo_mte``, ``wo_tokensar``, ``wo_clips`` (one estimator
    off), ``wo_ssmap`` (numbers instead of statements), ``wo_ka``, ``wo_ec``, ``wo_cs`` (one
    reward off), ``drl`` (RL without warm-up); ``--preset table1`` runs them all."""
    ablation_rl: bool = False
    """Warm-up variants (estimators, ``w_max``, ``wo_ssmap``) also get RL, as the paper's rows do
    (True in ``table1``); False = the variant's warm-up alone, named "(w/o RL)" (cheap)."""
    guided: bool = True
    """Confidence-guided resampling (issue #17, docs/GUIDED.md "In the demo"): MMBoundary
    resamples a step its own statement rates low, the vanilla model one its internal confidence
    rates low; LEVEL and K chosen on validation; two rows, a table and two plots in the report."""
    guided_levels: tuple[int, ...] = (2, 3)
    """The LEVEL grid (2..6): a step whose confidence level is < LEVEL is resampled (ours: on
    200 validation questions LEVEL 4 cost 2.6-2.7x the plain tokens for no gain over LEVEL 3)."""
    guided_tries: tuple[int, ...] = (2, 4)
    """The K grid (>= 1): alternatives sampled per low step."""
    guided_val: int = 200
    """Validation questions (the first of the split) on which LEVEL and K are chosen, by accuracy,
    ties by fewer tokens; 0 = all ``n_val`` (ours: 200 keeps the stage near a minute on 2 cores)."""
    guided_temperature: float = 1.0
    """Sampling temperature of the alternatives (top-p 1, top-k off) (ours: GUIDED.md measured
    0.7 and 1 alike)."""
    fresh: bool = False
    """Ignore finished stages in ``out_dir`` and redo everything."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes recorded in the report (e.g. the command line)."""

    def __post_init__(self) -> None:
        """Validate on load (a YAML typo fails here, not at stage 5)."""
        from mmboundary.evaluation.baseline_runs import METHODS
        from mmboundary.training.rewards import CS_FORMS
        from mmboundary.training.step_credit import CREDITS

        checks = [
            (self.eval_split in ("test", "validation"), "eval_split", "'test' or 'validation'"),
            (self.level_rule in ("quantile", "sigma", "accuracy"), "level_rule",
             "'quantile', 'sigma' or 'accuracy'"),
            (self.fusion in ("mean", "fitted"), "fusion", "'mean' or 'fitted'"),
            (self.answer_step in ANSWER_STEP_RULES, "answer_step",
             f"one of {ANSWER_STEP_RULES}"),
            (self.rl_calibrator in ("start_model", "given"), "rl_calibrator",
             "'start_model' or 'given'"),
            (self.rl_credit in CREDITS, "rl_credit", f"one of {CREDITS}"),
            (self.rl_cs_form in CS_FORMS, "rl_cs_form", f"one of {CS_FORMS}"),
            (self.sft_teacher in SFT_TEACHERS, "sft_teacher", f"one of {SFT_TEACHERS}"),
            (self.sft_teacher != "probe" or self.rl_calibrator == "start_model", "rl_calibrator",
             "'start_model' with sft_teacher 'probe' (R_CS's probe is the start model's own)"),
            (self.statements_per_level >= 0, "statements_per_level", ">= 0 (0 = the full bank)"),
            (len(self.rl_weights) == 3 and min(self.rl_weights) >= 0, "rl_weights",
             "three non-negative weights alpha, beta, gamma"),
            (self.rl_generations >= 1 and self.rl_batch % self.rl_generations == 0, "rl_batch",
             f"a multiple of rl_generations ({self.rl_generations})"),
            (min(self.n_train, self.n_val, self.n_test, self.n_rl) > 0, "n_train/n_val/n_test/"
             "n_rl", "> 0"),
            (set(self.ablations) <= set(ABLATIONS), "ablations", f"names from {ABLATIONS}"),
            (set(self.baselines) <= set(METHODS) - {"constant"}, "baselines",
             f"names from {sorted(set(METHODS) - {'constant'})} (the constants always run)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"DemoConfig.{name}: expected {expected}, got "
                                 f"{getattr(self, name, None)!r}")

    @property
    def out(self) -> Path:
        return Path(self.out_dir)



#: Each preset's overrides of the dataclass defaults (``DemoConfig.PRESETS``; a YAML's
#: ``preset:`` key, ``mmboundary demo --preset``).
DEMO_PRESETS: dict[str, dict[str, Any]] = {
    # `mmboundary demo --quick`: a smoke run of every stage (used by the tests).
    "quick": {"out_dir": "runs/demo-quick", "n_train": 48, "n_rl": 24, "n_test": 40, "n_val": 40,
              "sft_epochs": 1.0, "rl_steps": 2, "rl_batch": 8, "sc_samples": 3,
              "ablations": ("wo_rl", "w_max")},
    # `mmboundary demo`: the README's main job, about ten minutes on 2 CPU cores.
    "default": {},
    # `mmboundary demo --preset table1`: every ablation row of the paper's Table 1, each warm-up
    # variant with its own RL, in one report (the default sizes; 17 min on 2 idle cores, measured).
    "table1": {"out_dir": "runs/demo-table1", "ablation_rl": True, "guided": False,
               "ablations": ("wo_lnlp", "wo_mte", "wo_tokensar", "wo_clips", "w_max",
                             "wo_ssmap", "wo_ka", "wo_ec", "wo_cs", "wo_rl", "drl")},
    # `mmboundary demo --preset large`: more data and RL (13 min on 2 idle cores, measured).
    "large": {"out_dir": "runs/demo-large", "n_train": 2000, "n_rl": 1000, "n_test": 1000,
              "n_val": 1000, "sft_epochs": 3.0, "rl_steps": 300, "sc_samples": 8},
    # `mmboundary demo --preset probe`: the ninth validation round's candidate (README "The probe
    # teacher, distilled, with longer RL"): statements taught the probe's levels, the content
    # distilled at 1.0, 200 GRPO steps with the paper's three rewards. Validation seeds 0 / 3:
    # MECE 0.52x / 0.51x Internal C's, step AUROC .777 / .787 (above it), accuracy .011 / .014
    # under the vanilla model (the goal's bar is .01); seed 4: .001 under, but RL folds the
    # statements onto levels 1 and 3 (MECE 0.85x). Not the default.
    "probe": {"out_dir": "runs/demo-probe", "sft_teacher": "probe", "sft_distill": 1.0,
              "rl_steps": 200},
}
DemoConfig.PRESETS = DEMO_PRESETS

#: The presets as configs (``DemoConfig.preset(name)``), for callers that read a preset's values.
PRESETS: dict[str, DemoConfig] = {name: DemoConfig.preset(name) for name in DEMO_PRESETS}
