"""The base of every window about one patient: identity banner, loading / error lines,
freshness, and the signals that let the launcher open linked windows.

A subclass builds its panels, registers a `QueryStatusLine` per panel, opens its queries and
implements `render_sections`: given the references that changed, it repaints only the
panels those references touch and returns the resource versions that became visible. This
base turns that into one `rendered` metrics event per repaint (docs/architecture.md §3.4).

Candidates for `PanelWindow` itself (kept here so the base stays untouched meanwhile):
status lines driven by `QueryStateChanged`, freshness from the oldest confirmation of the
window's open keys refreshed on a timer, and the render-then-emit loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from wardsync.core.events import QueryStateChanged, ResourcesChanged
from wardsync.core.presence import PresenceChanged
from wardsync.core.queries import PatientAllergies, PatientIdentity, QueryKey
from wardsync.station.workspace import PanelContext
from wardsync.sync.presence import PresenceHandle, PresenceService
from wardsync.ui.chart_widgets.panel_message import QueryStatusLine
from wardsync.ui.patient_banner import PatientBanner
from wardsync.ui.presence_avatars import PresenceAvatars
from wardsync.ui.window_base import PanelWindow
from wardsync.viewmodels.banner_facts import LoadStatus, banner_facts
from wardsync.viewmodels.table_rows import newly_visible
from wardsync.viewmodels.ward_rows import patient_ref_of

FRESHNESS_REFRESH_MS = 1000  # how often "Updated hh:mm:ss" is re-read from the query states
BANNER_TYPES = frozenset({"Patient", "Encounter", "Location", "AllergyIntolerance"})


class PatientWindow(PanelWindow):
    """A window about one patient (subclasses: the chart, the lab result detail)."""

    patient_requested = Signal(str)  # patient id: open (or raise) that patient's chart
    report_requested = Signal(str, str)  # report id, patient id: open the lab result detail

    def __init__(self, panel: PanelContext, patient_id: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(panel, parent)
        self.patient_id = patient_id
        self.patient_ref = f"Patient/{patient_id}"
        self.banner = PatientBanner(self)
        self.identity_key = PatientIdentity(patient_id)
        self.allergies_key = PatientAllergies(patient_id)
        self.status_lines: list[QueryStatusLine] = []
        self.shown: dict[str, dict[str, str]] = {}  # section -> ref -> version on screen
        self.repaints = 0  # repaints caused by new data (each emits one `rendered`)
        self._base_title = self.title  # what the window shows, before the patient's name
        self._patient_name: str | None = None
        self.presence_handle: PresenceHandle | None = None
        self.presence_avatars: PresenceAvatars | None = None
        self.subscribe(ResourcesChanged, self._on_bus_resources_changed)
        self.subscribe(QueryStateChanged, self._on_bus_query_state)
        self._freshness_timer = QTimer(self)
        self._freshness_timer.timeout.connect(self._on_freshness_timer_timeout)
        self._freshness_timer.start(FRESHNESS_REFRESH_MS)

    # ------------------------------------------------------------------ building
    def status_line(self, what: str, keys: Sequence[QueryKey], has_data: Callable[[], bool],
                    parent: QWidget | None = None) -> QueryStatusLine:
        """A loading / error line for a panel fed by `keys`."""
        line = QueryStatusLine(lambda: self.panel.queries, what, keys, has_data,
                               parent or self)
        self.status_lines.append(line)
        return line

    def join_presence(self, presence: PresenceService | None) -> PresenceAvatars | None:
        """Be present on this patient's record channel (`record:Patient:<id>`) while the
        window is open, and return the avatar stack of the others to lay out (None without a
        presence service). However many windows show the patient, the workstation is one
        member (the service counts them)."""
        if presence is None:
            return None
        self.presence_handle = presence.join("Patient", self.patient_id)
        self.presence_avatars = PresenceAvatars("Also viewing this patient:", self)
        self.subscribe(PresenceChanged, self._on_bus_presence_changed)
        self.render_presence()
        return self.presence_avatars

    def patient_layout(self, presence: PresenceService | None) -> QVBoxLayout:
        """The window's central layout, started: the identity banner, then (with presence)
        who else is looking at this patient right now, right-aligned. The caller adds the
        window's own contents below."""
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.addWidget(self.banner)
        avatars = self.join_presence(presence)
        if avatars is not None:
            row = QHBoxLayout()
            row.addStretch(1)
            row.addWidget(avatars)
            layout.addLayout(row)
        self.setCentralWidget(central)
        return layout

    def render_presence(self) -> None:
        handle, avatars = self.presence_handle, self.presence_avatars
        if handle is not None and avatars is not None:
            avatars.show_members(handle.others(), checking=handle.checking)

    def _on_bus_presence_changed(self, events: list[PresenceChanged]) -> None:
        handle = self.presence_handle
        if handle is not None and any(e.channel == handle.channel for e in events):
            self.render_presence()

    def open_identity_queries(self) -> None:
        self.open_query(self.identity_key)
        self.open_query(self.allergies_key)

    def _status(self, key: QueryKey) -> tuple[LoadStatus, str]:
        try:
            st = self.panel.queries.state(key)
        except KeyError:
            return "loading", ""
        status: LoadStatus = st.status if st.status in ("ok", "error") else "loading"
        return status, st.user_message

    # ------------------------------------------------------------------ rendering
    def render_banner(self) -> dict[str, str]:
        """Refresh the banner; returns the refs (and versions) it shows."""
        identity, identity_msg = self._status(self.identity_key)
        allergies, allergies_msg = self._status(self.allergies_key)
        facts = banner_facts(self.panel.store, self.patient_id, today=date.today(),
                             identity=identity, identity_message=identity_msg,
                             allergies=allergies, allergies_message=allergies_msg)
        self.banner.show_facts(facts)
        if self.panel.store.get(self.patient_ref) is not None:
            self._patient_name = facts.name
            self._apply_title()
        self.shown["banner"] = dict(facts.refs)
        return self.shown["banner"]

    def set_base_title(self, base: str) -> None:
        """What the window shows (e.g. the lab panel); the patient's name is always added."""
        self._base_title = base
        self._apply_title()

    def _apply_title(self) -> None:
        name = self._patient_name
        title = f"{self._base_title} — {name}" if name else self._base_title
        if title != self.title:
            self.title = title
            self.setWindowTitle(self._window_title())

    def render_sections(self, refs: set[str] | None) -> dict[str, str]:
        """Repaint the panels `refs` touch (all when None); return newly visible versions.

        Subclasses extend this; the base repaints the banner.
        """
        if refs is None or any(r.split("/", 1)[0] in BANNER_TYPES for r in refs):
            before = self.shown.get("banner", {})
            after = self.render_banner()
            return newly_visible(before, after, new_data=refs is not None)
        return {}

    def is_mine(self, ref: str, *sections: str) -> bool:
        """True if the held resource `ref` is about this patient, or one of `sections`
        showed it (a resource removed or moved to another patient must leave the screen)."""
        resource = self.panel.store.get(ref)
        if resource is not None and patient_ref_of(resource) == self.patient_ref:
            return True
        return any(ref in self.shown.get(s, {}) for s in sections)

    def _on_bus_resources_changed(self, events: list[ResourcesChanged]) -> None:
        refs = {ref for e in events for ref in e.refs}
        visible = self.render_sections(refs)
        if visible:
            self.repaints += 1
            self.emit_rendered(visible)
        self.refresh_status()

    def _on_bus_query_state(self, events: list[QueryStateChanged]) -> None:
        mine = {key.label() for key in self.open_keys}
        changed = {e.key for e in events} & mine
        if not changed:
            return
        if changed & {self.identity_key.label(), self.allergies_key.label()}:
            # "Allergies: none recorded" follows a successful empty search, which changes
            # no resource: the query state alone must repaint the banner.
            self.render_banner()
        self.refresh_status()

    def refresh_status(self) -> None:
        for line in self.status_lines:
            line.refresh()
        self.update_freshness()

    def update_freshness(self) -> None:
        """"Updated hh:mm:ss": the oldest last confirmation among this window's queries.

        A query that never succeeded does not hold the others back: its panel says it could
        not be loaded, which is clearer than a window that never looks fresh.
        """
        stamps = []
        for key in self.open_keys:
            try:
                stamp = self.panel.queries.state(key).last_ok_wall
            except KeyError:
                continue
            if stamp is not None:
                stamps.append(stamp)
        if stamps:
            self.mark_fresh(min(stamps))

    def _on_freshness_timer_timeout(self) -> None:
        self.update_freshness()

    def release(self) -> None:
        self._freshness_timer.stop()
        if self.presence_handle is not None:
            self.presence_handle.close()
            self.presence_handle = None
        super().release()
