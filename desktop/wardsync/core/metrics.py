"""The metrics sink interface: events with references only, never clinical content.

The file-backed sink (`WARDSYNC_METRICS_LOG`, docs/architecture.md §3.4) lives in `infra.metrics`;
layers below take any `MetricsSink` so they stay free of I/O.
"""

from __future__ import annotations

from typing import Any, Protocol


class MetricsSink(Protocol):
    def emit(self, event: str, **fields: Any) -> None:
        """Record one event. Fields are references, versions, states and numbers only."""


class NullMetrics:
    """Discards everything (the default when no metrics log is configured)."""

    def emit(self, event: str, **fields: Any) -> None:
        return None


class MemoryMetrics:
    """Keeps events in a list (tests and the Diagnostics window's recent log)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]
