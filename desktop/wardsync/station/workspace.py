"""The one shared workspace every window of this process receives (views receive their model).

It wraps the workstation sync stack with what windows need besides data: the signed-in user's
name, whether this is the demo sandbox, the metrics sink, stable window ids and the
workstation's critical-result alert center (None when the app runs without one).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from wardsync.core.bus import EventBus
from wardsync.core.metrics import MetricsSink
from wardsync.core.store import ResourceStore
from wardsync.sync.alerts import AlertCenter
from wardsync.sync.edits import RecordEdits
from wardsync.sync.presence import PresenceService
from wardsync.sync.pull import QueryCache
from wardsync.sync.workstation import Workstation


@dataclass
class Workspace:
    workstation: Workstation
    metrics: MetricsSink
    user_name: str
    demo: bool
    ward: str
    alerts: AlertCenter | None = None
    presence: PresenceService | None = None
    edits: RecordEdits | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def bus(self) -> EventBus:
        return self.workstation.bus

    @property
    def store(self) -> ResourceStore:
        return self.workstation.store

    @property
    def queries(self) -> QueryCache:
        return self.workstation.queries

    def new_window_id(self, kind: str) -> str:
        """Stable for the window's lifetime: `ward-1`, `chart-2`, ... (metrics `window`)."""
        return f"{kind}-{next(self._ids)}"
