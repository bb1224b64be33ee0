"""Shared fixtures. Importing tumor_det first applies the Detectron2 compatibility fixes."""

from __future__ import annotations

import os
from pathlib import Path

import tumor_det  # noqa: F401

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "brain_tumor_mri"

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_mri() -> Path:
    """The 46 real annotated slices beside the repository (tests only; skip when absent)."""
    if not (SHARED / "train" / "via_region_data.json").is_file():
        pytest.skip(f"{SHARED} not present")
    return SHARED
