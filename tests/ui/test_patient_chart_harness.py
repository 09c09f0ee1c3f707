"""Shared set-up of the patient window tests: a signed-in workstation on the real in-process
sandbox, wrapped in the Workspace windows receive, and helpers that read the server's copy.
(No tests here; the chart and lab detail test modules import these fixtures.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.sync.test_sync_live import workstation
from wardsync.auth.session import Session
from wardsync.core.metrics import MemoryMetrics
from wardsync.sandbox.server import Sandbox
from wardsync.ui.workspace import Workspace

PATIENT = "pat-03"


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0,
                     what: str = "condition") -> None:
    """Let the Qt/asyncio loop run until `predicate()` is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def workspace(sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
                    ) -> AsyncIterator[Workspace]:
    """A live workstation (real hub, real FHIR over HTTP) as the app's windows see it."""
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        yield Workspace(workstation=ws, metrics=metrics, user_name=clinician.user_display_name,
                        demo=True, ward=sandbox.ready_info()["ward"])
        assert ws.bus.handler_errors == 0, "a window's bus handler raised"


def metrics_of(workspace: Workspace) -> MemoryMetrics:
    metrics = workspace.metrics
    assert isinstance(metrics, MemoryMetrics)
    return metrics


def server_resources(sandbox: Sandbox, rtype: str, patient: str = PATIENT,
                     *extra: tuple[str, str]) -> list[dict]:
    """What the sandbox's FHIR store holds for a patient (the truth the window must show)."""
    page = sandbox.store.search(
        rtype, [("patient", f"Patient/{patient}"), ("_count", "1000"), *extra])
    return list(page.matches)


def rendered_refs(workspace: Workspace, window_id: str) -> dict[str, set[str]]:
    """ref -> every version a window reported visible in its `rendered` events."""
    out: dict[str, set[str]] = {}
    for event in metrics_of(workspace).of("rendered"):
        if event["window"] == window_id:
            for ref, version in event["versions"].items():
                out.setdefault(ref, set()).add(version)
    return out
