"""The patient chart window: identity banner, vital-sign trends, lab results by report,
problems and immunisations, medicines, tasks and nursing notes of one patient.

Fed by the shared store through five query keys (identity, allergies, record, vitals, labs),
plus the patient's nursing notes once that tab is first shown; a change repaints only the
tabs whose resources changed, highlights the changed lines, and emits one `rendered` event
naming the versions that became visible. Keyboard: Ctrl+1..6 (or Alt + the underlined
letter) switch tabs, Ctrl+Tab cycles them, Enter on a lab report opens it in its own window
(`report_requested`).

Working together (issue 5): with the workstation's `PresenceService` the chart is present on
the patient's record channel and shows who else has the patient open under the banner; with
`RecordEdits` too, the Tasks tab edits the selected task (status, owner, a note) and the
Nursing notes tab writes and amends notes, through record locks and `If-Match` saves
(ui/chart_widgets/record_editor.py). Both come from the constructor (`in_workspace` passes
the session's); without them the chart is read-only. Like every window it takes only what it
shows: its panel context (store, queries, bus), presence and edits.
"""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QLabel,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.queries import PatientLabs, PatientRecord, PatientVitals
from wardsync.station.workspace import PanelContext, Workspace
from wardsync.sync.edits import NursingNotes, RecordEdits, is_nursing_note
from wardsync.sync.presence import PresenceService
from wardsync.ui.chart_widgets.grouped_table import KEY_ROLE, GroupedTable
from wardsync.ui.chart_widgets.patient_window import PatientWindow
from wardsync.ui.chart_widgets.vital_trends import VitalTrendsPanel
from wardsync.ui.nursing_note import NursingNotesPanel
from wardsync.ui.task_editor import TaskEditor
from wardsync.viewmodels.lab_rows import LAB_COLUMNS, lab_groups
from wardsync.viewmodels.record_rows import (
    MEDICATION_COLUMNS,
    PROBLEM_COLUMNS,
    TASK_COLUMNS,
    medication_groups,
    problem_groups,
    task_groups,
)
from wardsync.viewmodels.table_rows import newly_visible, shown_versions
from wardsync.viewmodels.vital_series import vital_trends
from wardsync.viewmodels.ward_rows import is_vital_sign, patient_ref_of

# (section, tab text with its Alt mnemonic, accessible name)
TABS = (
    ("vitals", "&Vitals", "Vital signs"),
    ("labs", "&Labs", "Lab results"),
    ("problems", "&Problems && immunisations", "Problems and immunisations"),
    ("medicines", "&Medicines", "Medicines"),
    ("tasks", "&Tasks", "Tasks"),
    ("notes", "&Nursing notes", "Nursing notes"),
)
SECTION_OF_TYPE = {
    "DiagnosticReport": ("labs",),
    "Condition": ("problems",),
    "Immunization": ("problems",),
    "MedicationRequest": ("medicines",),
    "Task": ("tasks",),
    # Names of prescribers and task owners.
    "Practitioner": ("medicines", "tasks"),
}


class PatientChartWindow(PatientWindow):
    """One patient's chart. The launcher connects `report_requested` / `patient_requested`."""

    kind = "chart"
    title = "Patient chart"

    @classmethod
    def in_workspace(cls, workspace: Workspace, patient_id: str, *,
                     presence: PresenceService | None = None,
                     edits: RecordEdits | None = None) -> PatientChartWindow:
        """The patient's chart for this session (its presence and edits unless given)."""
        return cls(workspace.panel(cls.kind), patient_id,
                   presence=presence if presence is not None else workspace.presence,
                   edits=edits if edits is not None else workspace.edits)

    def __init__(self, panel: PanelContext, patient_id: str,
                 parent: QWidget | None = None, *, presence: PresenceService | None = None,
                 edits: RecordEdits | None = None) -> None:
        super().__init__(panel, patient_id, parent)
        self.record_key = PatientRecord(patient_id)
        self.vitals_key = PatientVitals(patient_id)
        self.labs_key = PatientLabs(patient_id)
        self.notes_key = NursingNotes(patient_id)
        self.edits: RecordEdits | None = edits

        self.vitals = VitalTrendsPanel()
        self.labs = GroupedTable(LAB_COLUMNS, object_name="labResults",
                                 accessible_name="Lab results grouped by report",
                                 numeric_columns=(1,))
        self.problems = GroupedTable(
            PROBLEM_COLUMNS, object_name="problemList",
            accessible_name="Active and past problems, immunisation history")
        self.medicines = GroupedTable(MEDICATION_COLUMNS, object_name="medicationList",
                                      accessible_name="Medicines")
        self.tasks = GroupedTable(TASK_COLUMNS, object_name="taskList", accessible_name="Tasks")
        self.labs.activated_key.connect(self._on_labs_activated_key)
        self.task_editor: TaskEditor | None = None
        tasks_content: QWidget = self.tasks
        if edits is not None:
            self.task_editor = TaskEditor(store=panel.store, subscribe=self.subscribe,
                                          edits=edits, presence=presence,
                                          patient_id=patient_id)
            self.task_editor.review_requested.connect(self._on_editor_review_requested)
            self.tasks.currentItemChanged.connect(self._on_tasks_current_item_changed)
            split = QSplitter(Qt.Orientation.Vertical)
            split.setObjectName("tasksSplit")
            split.addWidget(self.tasks)
            split.addWidget(self.task_editor)
            split.setSizes([360, 320])
            tasks_content = split
        self.notes = NursingNotesPanel(store=panel.store, patient_id=patient_id,
                                       subscribe=self.subscribe, edits=edits,
                                       presence=presence)
        if self.notes.editor is not None:
            self.notes.editor.review_requested.connect(self._on_editor_review_requested)

        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("chartTabs")
        self.tabs.setAccessibleName("Chart sections")
        self.pages: dict[str, QWidget] = {}
        has_record = self._has_record_rows
        status = {
            "vitals": self.status_line("Vital signs", [self.vitals_key],
                                       lambda: self.vitals.has_readings),
            "labs": self.status_line("Lab results", [self.labs_key],
                                     lambda: bool(self.labs.group_keys())),
            "problems": self.status_line("Problems and immunisations", [self.record_key],
                                         has_record),
            "medicines": self.status_line("Medicines", [self.record_key], has_record),
            "tasks": self.status_line("Tasks", [self.record_key], has_record),
        }
        # The status lines of the sections loaded with the chart; the notes tab's line
        # speaks once its query opens (when the tab is first shown).
        self.messages = dict(status)
        self.notes_status = status["notes"] = self.status_line(
            "Nursing notes", [self.notes_key], lambda: bool(self.notes.table.row_keys()))
        scroll = QScrollArea()
        scroll.setObjectName("vitalsScroll")
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.vitals)
        contents: dict[str, QWidget] = {"vitals": scroll, "labs": self.labs,
                                        "problems": self.problems,
                                        "medicines": self.medicines, "tasks": tasks_content,
                                        "notes": self.notes}
        for index, (section, text, accessible) in enumerate(TABS):
            page = QWidget()
            page.setObjectName(f"{section}Page")
            page.setAccessibleName(accessible)
            layout = QVBoxLayout(page)
            layout.addWidget(status[section])
            if section == "labs":
                hint = QLabel("Enter or double-click opens a report in its own window.", page)
                hint.setObjectName("panelHint")
                layout.addWidget(hint)
            layout.addWidget(contents[section], 1)
            self.tabs.addTab(page, text)
            self.tabs.setTabToolTip(index, f"{accessible} (Ctrl+{index + 1})")
            self.pages[section] = page
            shortcut = QShortcut(QKeySequence(f"Ctrl+{index + 1}"), self)
            shortcut.activated.connect(lambda i=index: self._on_tab_shortcut_activated(i))
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)

        self.patient_layout(presence).addWidget(self.tabs, 1)
        self.resize(1200, 820)

        self.open_identity_queries()
        for key in (self.record_key, self.vitals_key, self.labs_key):
            self.open_query(key)
        self.render_sections(None)  # whatever the store already holds (other windows)
        self.refresh_status()

    # ------------------------------------------------------------------ rendering
    def _has_record_rows(self) -> bool:
        return any(t.row_keys() for t in (self.problems, self.medicines, self.tasks))

    def _sections_for(self, refs: set[str]) -> set[str]:
        sections: set[str] = set()
        store = self.panel.store
        for ref in refs:
            rtype = ref.split("/", 1)[0]
            if rtype == "Observation":
                obs = store.get(ref)
                if ref in self.shown.get("notes", {}) or (
                        obs is not None and is_nursing_note(obs) and self.is_mine(ref)):
                    sections.add("notes")
                    continue
                if obs is None:
                    sections |= {s for s in ("vitals", "labs") if ref in self.shown.get(s, {})}
                elif self.is_mine(ref, "vitals", "labs"):
                    sections.add("vitals" if is_vital_sign(obs) else "labs")
                    if ref in self.shown.get("vitals", {}) and not is_vital_sign(obs):
                        sections.add("vitals")
            elif rtype == "Practitioner":
                sections |= set(SECTION_OF_TYPE[rtype])
            elif rtype in SECTION_OF_TYPE:
                owners = SECTION_OF_TYPE[rtype]
                if self.is_mine(ref, *owners):
                    sections |= set(owners)
        return sections

    def render_sections(self, refs: set[str] | None) -> dict[str, str]:
        visible = super().render_sections(refs)
        sections = {s for s, _, _ in TABS} if refs is None else self._sections_for(refs)
        for section in sections:
            before = self.shown.get(section, {})
            after = self._render(section)
            self.shown[section] = after
            visible.update(newly_visible(before, after, new_data=refs is not None))
        return visible

    def _render(self, section: str) -> dict[str, str]:
        store, pid = self.panel.store, self.patient_id
        if section == "notes":
            return self.notes.render_notes()
        if section == "vitals":
            mine = store.select(
                "Observation",
                lambda o: patient_ref_of(o) == self.patient_ref and is_vital_sign(o))
            data = vital_trends(mine)
            self.vitals.show_trends(data)
            return dict(data.shown)
        table, groups = {
            "labs": lambda: (self.labs, lab_groups(store, pid)),
            "problems": lambda: (self.problems, problem_groups(store, pid)),
            "medicines": lambda: (self.medicines, medication_groups(store, pid)),
            "tasks": lambda: (self.tasks, task_groups(store, pid)),
        }[section]()
        if section == "tasks" and self.task_editor is not None:
            # A repaint is not the user choosing a task: a line that moves group (a task
            # done) must not move the editor to its neighbour.
            table.blockSignals(True)
            try:
                table.set_groups(groups)
            finally:
                table.blockSignals(False)
            self._select_quietly(self.tasks, self.task_editor.ref)
        else:
            table.set_groups(groups)
        return shown_versions(groups)

    @staticmethod
    def _select_quietly(table: GroupedTable, ref: str | None) -> None:
        item = table.item_for(ref) if ref else None
        if item is not None and table.currentItem() is not item:
            table.blockSignals(True)
            table.setCurrentItem(item)
            table.blockSignals(False)

    # ------------------------------------------------------------------ interaction
    def _on_labs_activated_key(self, key: str) -> None:
        item = self.labs.item_for(key)
        if key.startswith("Observation/") and item is not None and (
                parent := item.parent()) is not None:
            key = str(parent.data(0, KEY_ROLE))
        if key.startswith("DiagnosticReport/"):
            self.report_requested.emit(key.split("/", 1)[1], self.patient_id)

    def _on_tab_shortcut_activated(self, index: int) -> None:
        self.tabs.setCurrentIndex(index)

    def _on_tabs_current_changed(self, index: int) -> None:
        # Keyboard users land in the tab's content, not on the tab bar.
        section = TABS[index][0]
        if section == "notes" and self.notes_key not in self.open_keys:
            # Notes are pulled when first looked at, not with every chart.
            self.open_query(self.notes_key)
            self.notes_status.refresh()
        target = {"vitals": self.vitals.cards["hr"].view, "labs": self.labs,
                  "problems": self.problems, "medicines": self.medicines,
                  "tasks": self.tasks, "notes": self.notes.table}[section]
        if self.isActiveWindow():
            target.setFocus(Qt.FocusReason.TabFocusReason)

    def _on_tasks_current_item_changed(self, current: QTreeWidgetItem | None,
                                       _previous: QTreeWidgetItem | None) -> None:
        key = current.data(0, KEY_ROLE) if current is not None else None
        editor = self.task_editor
        if editor is None or not isinstance(key, str) or not key.startswith("Task/"):
            return
        if editor.mode != "view" and key != editor.ref:
            # One edit at a time: the edited task stays selected until it is saved or
            # discarded (its draft would be kept anyway, but a silent switch confuses).
            self._select_quietly(self.tasks, editor.ref)
            editor.message.show_message("Save or discard this edit before opening another "
                                        "task.", "info")
            return
        task = self.panel.store.get(key)
        if task is not None:
            editor.set_record(task)

    def _on_editor_review_requested(self, ref: str) -> None:
        """An editor paused for urgent news: show it (a lab result on the Labs tab)."""
        index = next(i for i, (s, _, _) in enumerate(TABS) if s == "labs")
        self.tabs.setCurrentIndex(index)
        item = self.labs.item_for(ref)  # a report's heading line or a result's line
        if item is not None:
            self.labs.setCurrentItem(item)
            self.labs.scrollToItem(item)
            self.labs.setFocus(Qt.FocusReason.OtherFocusReason)

    def refresh_status(self) -> None:
        super().refresh_status()
        try:
            loaded = self.panel.queries.state(self.notes_key).status == "ok"
        except KeyError:
            loaded = False  # the notes tab was not opened yet
        self.notes.show_loaded(loaded)

    def editors(self) -> list:
        return [e for e in (self.task_editor, self.notes.editor) if e is not None]

    def release(self) -> None:
        for editor in self.editors():
            editor.release()
        super().release()

    async def wait_closed(self) -> None:
        """Await the end of this window's own work (after `close()`)."""
        await asyncio.gather(*(e.wait_closed() for e in self.editors()))

