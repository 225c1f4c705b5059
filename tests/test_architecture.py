"""The layer order of ARCHITECTURE.md, checked on the source: no package imports a higher one,
no import cycle between modules, and the public API of each stage imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mmboundary"
# lower rank = lower layer; a package may import only packages of a lower or equal-free rank
RANK = {"data": 0, "models": 1, "text": 2, "annotate": 3, "judging": 4, "confidence": 4,
        "training": 5, "evaluation": 6, "guidance": 6, "shapesworld": 7, "demo": 8, "cli": 9}


def _imports() -> dict[str, set[str]]:
    """module -> the mmboundary modules it imports (anywhere in the file, lazy ones included)."""
    out: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("mmboundary."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("mmboundary.")}
        out[module] = found
    return out


def test_no_package_imports_a_higher_layer() -> None:
    bad = []
    for module, targets in _imports().items():
        own = module.split(".")[1] if module.count(".") else ""
        for target in targets:
            other = target.split(".")[1]
            if own in RANK and other in RANK and other != own and RANK[other] >= RANK[own]:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_method_packages_do_not_import_the_demo_world_or_cli() -> None:
    method = ("data", "models", "text", "judging", "confidence", "training", "evaluation",
              "guidance")
    bad = [f"{m} -> {t}" for m, t_all in _imports().items() for t in t_all
           if m.split(".")[1:2] and m.split(".")[1] in method
           and t.split(".")[1] in ("demo", "cli", "shapesworld")]
    assert not bad, bad


def test_no_module_level_import_cycle() -> None:
    """Module-level imports only (what runs at import time): a cycle there is an error or a shim."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(
            ".__init__")
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:  # top level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "mmboundary.") and node.level == 0:
                folder = SRC.parent / node.module.replace(".", "/")
                subs = [a.name for a in node.names if (folder / f"{a.name}.py").exists()]
                # "from pkg import submodule" needs the submodule, not the package's __init__
                targets |= {f"{node.module}.{n}" for n in subs} if subs else {node.module}
        graph[module] = {t for t in targets if t in graph or (SRC.parent / (t.replace(".", "/")
                                                                             + ".py")).exists()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if state.get(nxt) is None:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in list(graph):
        if state.get(node) is None:
            visit(node, [])


@pytest.mark.parametrize("statement", [
    "from mmboundary.evaluation import expected_calibration_error, evaluate_predictions",
    "from mmboundary.training import knowledge_accuracy_reward, expected_calibration_reward",
    "from mmboundary.judging import StepRules, RuleConfig, make_judge",
    "from mmboundary.confidence import InternalConfidenceScorer, ConfidenceCalibrator",
    "from mmboundary.text import split_steps, parse_steps, StatementParser",
    "from mmboundary.models import VLM, default_similarity",
    "from mmboundary.data import Sample, load_annotated",
])
def test_public_api_imports_without_heavy_dependencies(statement: str) -> None:
    import subprocess
    import sys

    code = (f"{statement}\nimport sys\nheavy = [m for m in ('torch', 'transformers', 'trl', "
            "'sentence_transformers', 'datasets', 'peft') if m in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
