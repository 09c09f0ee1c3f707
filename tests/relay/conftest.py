"""Relay test fixtures: the real sandbox, quiet, and the relay under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.relay.local_hub import hub  # noqa: F401 (fixture: a bare hub)
from tests.sandbox_fixtures import running_sandbox
from wardsync.sandbox.server import Sandbox


@pytest.fixture
async def ward(seeded_data_dir: Path, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The sandbox without its own relay (`--no-relay`): the relay under test is the only one
    poking."""
    async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as sb:
        yield sb
