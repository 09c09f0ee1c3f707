"""What the windows of one signed-in session share, and the narrow parts each window takes.

`Workspace` wraps the workstation sync stack with what windows need besides data: the
signed-in user's name, whether this is the demo sandbox, the metrics sink, stable window ids
and the workstation's critical-result alert center (None when the app runs without one). The
app holds it; a window does not. As napari's views take their model, a window receives only
what it shows: every panel's chrome takes a `PanelContext` (its window id, the bus, the store
and queries, the connection status, who is signed in, demo or not, the alert center), and a
window adds its own view model (the ward overview a `viewmodels.ward_overview.WardOverview`,
the lab report the FHIR history reader and presence). None of them can reach the rest of
the sync stack.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from wardsync.core.bus import EventBus
from wardsync.core.connection_status import ConnectionStatus
from wardsync.core.metrics import MetricsSink
from wardsync.core.store import ResourceStore
from wardsync.sync.alerts import AlertCenter
from wardsync.sync.edits import RecordEdits
from wardsync.sync.presence import PresenceService
from wardsync.sync.pull import QueryCache
from wardsync.sync.workstation import Workstation


@dataclass(frozen=True)
class PanelContext:
    """What every panel window needs besides its own data (its status bar, demo marker,
    alert banner, subscriptions and leases)."""

    window_id: str  # stable for the window's lifetime: `ward-1`, `chart-2` (metrics `window`)
    bus: EventBus
    store: ResourceStore
    queries: QueryCache
    metrics: MetricsSink
    connection_status: Callable[[], ConnectionStatus]
    user_name: str
    demo: bool
    alerts: AlertCenter | None = None


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

    def panel(self, kind: str) -> PanelContext:
        """The chrome of a new window of `kind`, with its own window id."""
        workstation = self.workstation
        return PanelContext(
            window_id=self.new_window_id(kind), bus=self.bus, store=self.store,
            queries=self.queries, metrics=self.metrics,
            connection_status=lambda: workstation.status, user_name=self.user_name,
            demo=self.demo, alerts=self.alerts)
