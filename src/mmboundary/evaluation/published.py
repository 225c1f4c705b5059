"""The paper's published numbers (He et al., ACL 2025, Table 1, LLaVA-NeXT-7B), as METHOD.md quotes
them. These are NOT re-runs: reports show them in a separately labelled block, never mixed with
results computed here. Only the rows METHOD.md records are listed (no number is made up).
"""

from __future__ import annotations

SOURCE = "He et al., ACL 2025, Table 1 (LLaVA-NeXT-7B); published numbers, not re-runs"
DATASETS = ("A-OKVQA", "ScienceQA", "CulturalVQA")
METRICS = ("ECE", "MECE", "Acc", "F1")

# system -> dataset -> (ECE, MECE, Acc, F1)
TABLE1: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "MMBoundary": {"A-OKVQA": (0.316, 0.304, 0.835, 0.661),
                   "ScienceQA": (0.354, 0.392, 0.703, 0.565),
                   "CulturalVQA": (0.337, 0.361, 0.448, 0.665)},
    "SaySelf (best baseline)": {"A-OKVQA": (0.345, 0.384, 0.734, 0.603),
                                "ScienceQA": (0.386, 0.462, 0.633, 0.483),
                                "CulturalVQA": (0.375, 0.437, 0.417, 0.571)},
    "MMBoundary w/o RL": {"A-OKVQA": (0.392, 0.427, 0.768, 0.581),
                          "ScienceQA": (0.419, 0.481, 0.663, 0.495),
                          "CulturalVQA": (0.408, 0.456, 0.419, 0.595)},
}


def published_rows() -> list[dict[str, object]]:
    """One dict per (system, dataset): system, dataset, ECE, MECE, Acc, F1, source."""
    return [{"system": system, "dataset": dataset, **dict(zip(METRICS, values, strict=True)),
             "source": SOURCE}
            for system, per in TABLE1.items() for dataset, values in per.items()]
