"""Shared fixtures. Importing tumor_det first applies the Detectron2 compatibility fixes."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads (libgomp reads its environment once, when it is loaded):
os.environ.setdefault("OMP_NUM_THREADS", "2")
# OpenMP threads that spin while waiting make CPU runs several times slower on busy cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests never download (CI machines may have internet): weights URLs fail at once unless a test
# serves them from 127.0.0.1 and removes this switch (tests/test_weights.py).
os.environ.setdefault("TUMOR_DET_OFFLINE", "1")

import tumor_det  # noqa: E402, F401

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "brain_tumor_mri"


@pytest.fixture(scope="session")
def shared_mri() -> Path:
    """The 46 real annotated slices beside the repository (tests only; skip when absent)."""
    if not (SHARED / "train" / "via_region_data.json").is_file():
        pytest.skip(f"{SHARED} not present")
    return SHARED
