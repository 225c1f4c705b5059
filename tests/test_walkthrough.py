"""The README's GPU walk-through and its CPU rehearsal (examples/walkthrough.sh) stay in step, and
the rehearsal runs: Qwen2-VL under two processes (accelerate's multi-GPU launch path, gloo on CPU)
and LLaVA in one. Checks of the multi-process run: one saved model per stage (the main process
saves), rewards logged once per step, a falling SFT loss, and two estimate shards run in parallel
+ `estimate merge` equal to the unsharded run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "walkthrough.sh"
CONFIGS = REPO / "configs"
OPTIONS_COMPARED_BY_VALUE = ("--method",)
#: fields a CPU-rehearsal twin may change: sizes and hardware, never the method
SIZE_FIELDS = {"learning_rate", "batch_size", "max_length", "use_cpu", "max_steps",
               "logging_steps", "save_steps", "max_completion_length"}


def readme_block(text: str) -> str:
    """The bash block of the README section "Using a real model on a GPU"."""
    section = text[text.index("## Using a real model on a GPU"):]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "no ```bash block in the README's GPU section"
    return match.group(1)


def script_block(text: str) -> str:
    """The lines of walkthrough.sh between its README walk-through BEGIN and END markers."""
    start = text.index("# --- README walk-through (BEGIN)")
    return text[start:text.index("# --- README walk-through (END)")]


def logical_lines(block: str) -> list[str]:
    """Lines with backslash continuations joined; comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def commands(block: str) -> list[tuple]:
    """Every ``mmboundary`` call as (subcommand words, option names, compared option values), in
    order, plus each ``for VAR in WORDS`` loop's word list."""
    out: list[tuple] = []
    for line in logical_lines(block):
        tokens = shlex.split(line.replace(";", " ; "), posix=True)
        if tokens[:1] == ["for"] and "in" in tokens:
            words = tokens[tokens.index("in") + 1:tokens.index(";")]
            if not any(w.startswith("$") for w in words):
                out.append(("for", tuple(words)))
        if "mmboundary" not in tokens:
            continue
        rest = tokens[tokens.index("mmboundary") + 1:]
        sub = []
        while rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
            sub.append(rest.pop(0))
        names = tuple(t.split("=")[0] for t in rest if t.startswith("--"))
        values = tuple((t, rest[i + 1]) for i, t in enumerate(rest)
                       if t in OPTIONS_COMPARED_BY_VALUE)
        out.append((" ".join(sub), names, values))
    return out


def test_readme_and_walkthrough_run_the_same_commands() -> None:
    readme = commands(readme_block((REPO / "README.md").read_text()))
    script = commands(script_block(SCRIPT.read_text()))
    assert readme == script
    subcommands = [c[0] for c in readme if c[0] != "for"]
    for needed in ("estimate", "estimate merge", "build-sft", "train sft", "train rl",
                   "generate", "evaluate", "baselines", "report"):
        assert needed in subcommands, needed


def test_both_train_under_the_multi_gpu_accelerate_config() -> None:
    launch = "accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes"
    readme = " ".join(logical_lines(readme_block((REPO / "README.md").read_text())))
    assert readme.count(launch) == 2
    assert re.search(r"-m mmboundary train sft .*-m mmboundary train rl", readme)
    text = SCRIPT.read_text()
    assert "LAUNCH=(accelerate launch --config_file configs/accelerate/multi_gpu.yaml" in text
    block = " ".join(logical_lines(script_block(text)))
    assert block.count('"${LAUNCH[@]}" mmboundary train') == 2


def test_readme_block_is_parsed_as_expected() -> None:
    block = """for i in 0 1; do
  CUDA_VISIBLE_DEVICES=$i mmboundary estimate --model "$M" \\
      --out "$R/e$i.jsonl" --num-shards 2 &
done; wait
mmboundary estimate merge "$R/e.jsonl" "$R"/e*.jsonl
accelerate launch --num_processes 2 -m mmboundary train sft --config c.yaml
mmboundary baselines --method sc,dps --out "x/{method}.jsonl"
"""
    assert commands(block) == [
        ("for", ("0", "1")), ("estimate", ("--model", "--out", "--num-shards"), ()),
        ("estimate merge", (), ()), ("train sft", ("--config",), ()),
        ("baselines", ("--method", "--out"), (("--method", "sc,dps"),))]


@pytest.mark.parametrize("name", ["sft_qwen2vl_7b.yaml", "sft_llava_next_7b.yaml",
                                  "rl_qwen2vl_7b.yaml", "rl_llava_next_7b.yaml"])
def test_rehearsal_configs_differ_from_the_paper_configs_only_in_sizes(name: str) -> None:
    from mmboundary.training.config import SFTConfig
    from mmboundary.training.rl_config import RLConfig

    cls = SFTConfig if name.startswith("sft") else RLConfig
    paper = cls.from_yaml(CONFIGS / name).to_dict()
    twin = cls.from_yaml(CONFIGS / "cpu-rehearsal" / name).to_dict()
    changed = {k for k in paper if paper[k] != twin[k]}
    assert changed <= SIZE_FIELDS, changed - SIZE_FIELDS
    raw = yaml.safe_load((CONFIGS / "cpu-rehearsal" / name).read_text())
    assert set(raw) >= set(yaml.safe_load((CONFIGS / name).read_text()))


def test_paper_configs_hold_the_paper_hyperparameters() -> None:
    from mmboundary.training.config import SFTConfig
    from mmboundary.training.rl_config import RLConfig

    for family in ("qwen2vl_7b", "llava_next_7b"):
        sft = SFTConfig.from_yaml(CONFIGS / f"sft_{family}.yaml")
        assert (sft.learning_rate, sft.batch_size, sft.finetuning) == (1e-4, 16, "lora")
        rl = RLConfig.from_yaml(CONFIGS / f"rl_{family}.yaml")
        assert (rl.num_generations, rl.learning_rate) == (3, 1e-5)
        batch = rl.per_device_train_batch_size * rl.gradient_accumulation_steps
        assert batch % rl.num_generations == 0


# --------------------------------------------------------------------------------------------
# The rehearsal itself (slow: it runs every command of the walk-through)
# --------------------------------------------------------------------------------------------
def run_walkthrough(arch: str, processes: int, out: Path) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # the script calls `mmboundary` and `accelerate`: this interpreter's ones
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([str(SCRIPT), arch, "--processes", str(processes), "--out", str(out),
                             "--val", "6"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = out / "runs" / "report"
    assert (report / "report.html").is_file() and (report / "table.csv").is_file()
    return out / "runs"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same(a: object, b: object, where: str = "") -> None:
    """Equal JSON values, floats up to a relative 1e-12 (summation order)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def one_save_by_the_main_process(run_dir: Path, processes: int) -> None:
    saves = read_lines(run_dir / "saves.jsonl")
    assert len(saves) == 1, saves
    assert saves[0]["rank"] == 0 and saves[0]["world_size"] == processes
    if processes > 1:
        assert saves[0]["distributed_type"] in ("MULTI_CPU", "MULTI_GPU")
    assert (Path(saves[0]["path"]) / "config.json").is_file()


@pytest.mark.slow
def test_walkthrough_qwen2vl_two_processes(tmp_path: Path) -> None:
    runs = run_walkthrough("qwen2-vl", 2, tmp_path / "wt")
    for stage in ("sft", "rl"):
        one_save_by_the_main_process(runs / stage, 2)
    losses = [row["loss"] for row in json.loads((runs / "sft" / "train_log.json").read_text())
              if "loss" in row]
    assert len(losses) == 8 and losses[-1] < losses[0]
    rewards = read_lines(runs / "rl" / "reward_log.jsonl")
    assert [row["step"] for row in rewards] == [1, 2]  # once per step, not once per process
    assert all("rewards/confidence_self_calibration_reward/mean" in row for row in rewards)
    # two shards in parallel + merge == one unsharded run, on the shards' thread count (the
    # walk-through gives each of its 2 processes cores // 2 threads; float sums over another
    # number of threads differ in the last bits on some CPUs, and these files are compared exactly)
    wt = tmp_path / "wt"
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    subprocess.run([sys.executable, "-m", "mmboundary", "estimate", "--model", str(wt / "models/vanilla"),
                    "--data", str(wt / "data/aokvqa_train_mmb.json"),
                    "--images", str(wt / "world/images"), "--clip", str(wt / "models/clip"),
                    "--out", str(tmp_path / "unsharded.jsonl"), "--max-new-tokens", "32",
                    "--batch-size", "1", "--device", "cpu", "--dtype", "float32",
                    "--no-progress"], check=True, capture_output=True, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": threads})
    merged = {r["sample_id"]: r for r in read_lines(runs / "estimates.jsonl")}
    single = {r["sample_id"]: r for r in read_lines(tmp_path / "unsharded.jsonl")}
    assert merged == single
    # the merged file lists the shards' samples shard by shard, so the calibrator's mean and std
    # sum the same numbers in another order: equal up to the last bits
    assert_same(json.loads((runs / "estimates.calibrator.json").read_text()),
                json.loads((tmp_path / "unsharded.calibrator.json").read_text()))


@pytest.mark.slow
def test_walkthrough_llava_one_process(tmp_path: Path) -> None:
    runs = run_walkthrough("llava", 1, tmp_path / "wt")
    for stage in ("sft", "rl"):
        one_save_by_the_main_process(runs / stage, 1)
    metrics = sorted(p.stem for p in (runs / "metrics").glob("*.json"))
    assert metrics == sorted(["mmboundary", "token-prob", "internal", "constant", "dpv", "dps",
                              "sc", "multisample"])
