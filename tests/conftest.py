"""Shared test fixtures. Tests drive real servers over loopback; nothing here mocks them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sandbox_fixtures import (  # noqa: F401  (fixtures)
    clinician,
    http,
    nurse,
    sandbox,
    seeded_data_dir,
)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and other artefacts a person should look at."""
    path = Path(os.environ.get("WARDSYNC_TEST_ARTIFACTS", REPO / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
