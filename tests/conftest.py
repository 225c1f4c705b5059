"""Shared fixtures: offline mode, the shared data folder, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "mmboundary"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The authors' annotated files (../shared/data/mmboundary); skip-free: CI has them."""
    assert SHARED_DATA.is_dir(), f"expected the shared data folder at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build each tiny architecture once per test session: ``tiny_model_dir("llava")`` -> path."""
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            from mmboundary.models.tiny import make_tiny

            out = tmp_path_factory.mktemp(f"tiny-{arch}")
            make_tiny(arch, out, seed=0)
            built[arch] = out
        return built[arch]

    return get
