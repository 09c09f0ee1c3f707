"""The lab result detail window: one DiagnosticReport with its results and status history.

The report and its Observations come from the shared store (`LabReport` key: the report with
`_include`d results, pulled in full). The status history is read from the server's version
history of the report and of every result that has more than one version (R4
http.html#history), again whenever a new version of any of them becomes visible, one read at
a time (a change during a read schedules exactly one more, and a late answer for a closed
window is dropped). A failed read is retried with backoff and says so in the window.
"""

from __future__ import annotations

import asyncio
import logging
import math

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.queries import LabReport
from wardsync.fhir.errors import FhirError
from wardsync.station.workspace import PanelContext, Workspace
from wardsync.sync.presence import PresenceService
from wardsync.ui.chart_widgets.grouped_table import GroupedTable
from wardsync.ui.chart_widgets.panel_message import LoadingDelay, PanelMessage
from wardsync.ui.chart_widgets.patient_window import PatientWindow
from wardsync.viewmodels.clinical_text import reference_id
from wardsync.viewmodels.lab_rows import LAB_COLUMNS, report_summary, result_refs, result_row
from wardsync.viewmodels.report_history import (
    HISTORY_COLUMNS,
    HistorySource,
    read_history,
    status_history,
)
from wardsync.viewmodels.table_rows import Row, newly_visible

log = logging.getLogger(__name__)

HISTORY_RETRY_INITIAL_S = 1.0
HISTORY_RETRY_CAP_S = 30.0
HEADER_FIELDS = (("panel", "Test panel"), ("status", "Report status"),
                 ("accession", "Accession number"), ("collected", "Specimen collected"),
                 ("issued", "Issued"), ("performer", "Laboratory"), ("conclusion", "Conclusion"))


class LabReportWindow(PatientWindow):
    """One lab report. The launcher connects `patient_requested` to open the chart.

    It takes what it shows: the panel context (the store holds the report and its results),
    the server's version history (`history`, the FHIR client's search) and presence.
    """

    kind = "report"
    title = "Lab result"

    def __init__(self, panel: PanelContext, report_id: str, patient_id: str, *,
                 history: HistorySource, presence: PresenceService | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(panel, patient_id, parent)
        self.history_source = history
        self.report_id = report_id
        self.report_ref = f"DiagnosticReport/{report_id}"
        self.report_key = LabReport(report_id, patient_id)
        self.wrong_patient = False

        self.header_labels: dict[str, QLabel] = {}
        header = QWidget(self)
        header.setObjectName("reportHeader")
        form = QFormLayout(header)
        for field, caption in HEADER_FIELDS:
            label = QLabel("—", header)
            label.setObjectName(f"report{field.capitalize()}")
            label.setAccessibleName(caption)
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(field == "conclusion")  # free text; the others are short
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            if field == "status":  # its colour marks the words only, not a full-width bar
                label.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)
            form.addRow(f"{caption}:", label)
            self.header_labels[field] = label
        self.report_message = self.status_line(
            "Lab result", [self.report_key], lambda: self.panel.store.get(
                self.report_ref) is not None)
        self.results = GroupedTable(LAB_COLUMNS, object_name="reportResults",
                                    accessible_name="Results of this report", flat=True,
                                    numeric_columns=(1,))
        self.history_message = PanelMessage(self)
        self.history = GroupedTable(HISTORY_COLUMNS, object_name="reportHistory",
                                    accessible_name="Status history, newest first", flat=True)
        history_heading = QLabel("Status &history (newest first)", self)
        history_heading.setObjectName("sectionHeading")
        history_heading.setBuddy(self.history)
        results_heading = QLabel("&Results", self)
        results_heading.setObjectName("sectionHeading")
        results_heading.setBuddy(self.results)
        self.open_chart_button = QPushButton("Open patient &chart", self)
        self.open_chart_button.setAccessibleName("Open this patient's chart")
        self.open_chart_button.clicked.connect(self._on_open_chart_button_clicked)
        QShortcut(QKeySequence("Ctrl+Shift+C"), self).activated.connect(
            self._on_open_chart_button_clicked)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.report_message)
        top_layout.addWidget(header)
        top_layout.addWidget(results_heading)
        top_layout.addWidget(self.results, 1)
        bottom = QWidget(self)
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(history_heading)
        bottom_layout.addWidget(self.history_message)
        bottom_layout.addWidget(self.history, 1)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.open_chart_button)
        layout = self.patient_layout(presence)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)
        self.resize(1000, 760)
        self.setTabOrder(self.results, self.history)
        self.setTabOrder(self.history, self.open_chart_button)

        # Status history: one read at a time, owned by this window.
        self._history_task: asyncio.Task[None] | None = None
        self._history_again = False
        self._history_basis: dict[str, str] = {}
        self._history_failures = 0
        # Equal jitter: windows of many workstations do not retry in step, and never sooner
        # than half the base delay (core/backoff.py).
        self._history_backoff = Backoff(initial_s=HISTORY_RETRY_INITIAL_S, factor=2.0,
                                        cap_s=HISTORY_RETRY_CAP_S, jitter=Jitter.EQUAL)
        self._history_retry = QTimer(self)
        self._history_retry.setSingleShot(True)
        self._history_retry.timeout.connect(self._on_history_retry_timeout)
        self._history_delay = LoadingDelay(self, self._on_history_slow)
        self.history_loads = 0  # completed reads, for tests and diagnostics

        self.open_identity_queries()
        self.open_query(self.report_key)
        self.render_sections(None)
        self.refresh_status()

    # ------------------------------------------------------------------ rendering
    @classmethod
    def in_workspace(cls, workspace: Workspace, report_id: str, patient_id: str
                     ) -> LabReportWindow:
        """The report's window for this session (history from its FHIR client)."""
        return cls(workspace.panel(cls.kind), report_id, patient_id,
                   history=workspace.workstation.fhir, presence=workspace.presence)

    def _report_refs(self) -> set[str]:
        report = self.panel.store.get(self.report_ref)
        return {self.report_ref, *(result_refs(report) if report else ())}

    def render_sections(self, refs: set[str] | None) -> dict[str, str]:
        visible = super().render_sections(refs)
        if refs is None or refs & (self._report_refs() | set(self.shown.get("report", {}))):
            before = self.shown.get("report", {})
            after = self._render_report()
            self.shown["report"] = after
            visible.update(newly_visible(before, after, new_data=refs is not None))
            if after != self._history_basis and self.report_ref in after:
                self._history_basis = dict(after)
                self.request_history()
        return visible

    def _render_report(self) -> dict[str, str]:
        store = self.panel.store
        report = store.get(self.report_ref)
        if report is not None and reference_id(report.get("subject"),
                                               "Patient") != self.patient_id:
            # Never show one patient's results under another patient's banner.
            self.wrong_patient = True
            report = None
        if report is None:
            self.results.set_rows([])
            return {}
        self.wrong_patient = False
        summary = report_summary(report)
        for field, _caption in HEADER_FIELDS:
            self.header_labels[field].setText(getattr(summary, field) or "—")
        self.header_labels["status"].setProperty("status", summary.status_code)
        self.header_labels["status"].style().unpolish(self.header_labels["status"])
        self.header_labels["status"].style().polish(self.header_labels["status"])
        rows: list[Row] = []
        for ref in result_refs(report):
            obs = store.get(ref)
            rows.append(result_row(obs) if obs is not None else
                        Row(ref, ("Result not loaded yet", "", "", "", "", ""), level="muted"))
        self.results.set_rows(rows)
        self.set_base_title(f"Lab result — {summary.panel}")
        shown = {self.report_ref: str((report.get("meta") or {}).get("versionId", ""))}
        shown.update({r.key: r.version for r in rows if r.version})
        return shown

    def refresh_status(self) -> None:
        super().refresh_status()
        try:
            st = self.panel.queries.state(self.report_key)
        except KeyError:
            return
        if st.status == "ok" and self.wrong_patient:
            self.report_message.show_message(
                "This lab report is about another patient, so it is not shown under this "
                "patient's banner. Open it from that patient's chart.", "error")
        elif st.status == "ok" and self.panel.store.get(self.report_ref) is None:
            self.report_message.show_message(
                "This lab report was not found on the server (it may have been withdrawn).",
                "error")

    # ------------------------------------------------------------------ status history
    def request_history(self) -> None:
        """Read the status history now, or once more after the read in flight."""
        if self._closed:
            return
        if self._history_task is not None and not self._history_task.done():
            self._history_again = True
            return
        self._history_retry.stop()
        self._history_task = asyncio.get_running_loop().create_task(
            self._load_history(), name=f"{self.window_id}: status history")
        self._history_task.add_done_callback(self._on_history_task_done)

    async def _load_history(self) -> None:
        fhir = self.history_source
        store = self.panel.store
        while True:
            self._history_again = False
            report = store.get(self.report_ref)
            if report is None:
                return
            # A result still at its first version has no history worth a request.
            changed_results = [r for r in result_refs(report) if store.version(r) not in
                               (None, "1")]
            self._history_delay.start()
            try:
                versions = await read_history(fhir, self.report_ref)
                results = {ref: await read_history(fhir, ref) for ref in changed_results}
            except FhirError as exc:
                if self._closed:
                    return
                self._history_failures += 1
                delay_s = self._history_backoff.delay(self._history_failures - 1)
                self.history_message.show_message(
                    f"Status history could not be loaded: {exc.user_message} — retrying in "
                    f"{math.ceil(delay_s)} s", "error")
                self._history_retry.start(int(delay_s * 1000))
                return
            finally:
                self._history_delay.stop()
            if self._closed:  # re-check after the awaits: the window may be gone
                return
            self._history_failures = 0
            self.history.set_rows(status_history(versions, results))
            self.history_message.clear_message()
            self.history_loads += 1
            if not self._history_again:
                return

    def _on_history_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("status history read failed", exc_info=task.exception())

    def _on_history_slow(self) -> None:
        if not self.history.row_keys():
            self.history_message.show_message("Loading status history…", "info")

    def _on_history_retry_timeout(self) -> None:
        self.request_history()

    # ------------------------------------------------------------------ interaction
    def _on_open_chart_button_clicked(self) -> None:
        self.patient_requested.emit(self.patient_id)

    def release(self) -> None:
        self._history_retry.stop()
        self._history_delay.stop()
        if self._history_task is not None:
            self._history_task.cancel()
        super().release()

    async def wait_closed(self) -> None:
        """Await the end of this window's own work (after `close()`)."""
        if self._history_task is not None:
            await asyncio.gather(self._history_task, return_exceptions=True)
