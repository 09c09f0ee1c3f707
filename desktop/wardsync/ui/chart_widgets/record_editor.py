"""The base of the chart's edit components (the task editor, the nursing note): the Qt view
of an edit session.

What editing means — presence on the record's channel, the component lock, drafts kept in
memory, `If-Match` saves, conflicts, the pause for urgent news — is the Qt-free state machine
`EditSession` (viewmodels/edit_session.py), tested without a display. This widget is its
view: it builds the title, avatars, lock and urgent banners, message and buttons, renders the
session's `EditorControls`, opens the conflict view (ui/conflict_view.py) and forwards the
buttons to the session. Its colours are in `resources/styles/components/record-editor.qss`.

Subclasses build the form (`build_form`) and implement `fill`, `draft_from_form`, `load_draft`,
`save_draft`, `set_form_editable` and optionally `edit_refusal`, `edit_label` and
`allows_new`; the session calls them through `_WidgetSession`. (Qt widgets cannot be
`abc.ABC`s — Shiboken's metaclass skips the abstract check — so the enforced contract is
`EditSession`'s; the stubs here raise NotImplementedError.)
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.store import ResourceStore
from wardsync.sync.edits import Draft, RecordEdits, SaveConflict, SaveResult
from wardsync.sync.presence import PresenceService
from wardsync.ui.chart_widgets.panel_message import PanelMessage
from wardsync.ui.conflict_view import ConflictView
from wardsync.ui.presence_avatars import PresenceAvatars
from wardsync.ui.stylesheets import component_stylesheet
from wardsync.viewmodels.edit_session import (
    EditorControls,
    EditSession,
    MessageKind,
    Mode,
    Subscribe,
    lock_sentence,
)

__all__ = ["Mode", "RecordEditor", "Subscribe", "lock_sentence"]


class _WidgetSession(EditSession):
    """The session of one `RecordEditor`: every hook goes to the widget."""

    def __init__(self, widget: RecordEditor, **kwargs: Any) -> None:
        self.widget = widget
        super().__init__(**kwargs)

    def fill(self, resource: Mapping[str, Any] | None) -> None:
        self.widget.fill(resource)

    def draft_from_form(self) -> Draft | None:
        return self.widget.draft_from_form()

    def load_draft(self, draft: Draft) -> None:
        self.widget.load_draft(draft)

    async def save_draft(self, draft: Draft) -> SaveResult:
        return await self.widget.save_draft(draft)

    def set_form_editable(self, editable: bool) -> None:
        self.widget.set_form_editable(editable)

    def edit_refusal(self, resource: Mapping[str, Any] | None) -> str:
        return self.widget.edit_refusal(resource)

    def edit_label(self) -> str:
        return self.widget.edit_label()

    def allows_new(self) -> bool:
        return self.widget.allows_new()

    def render(self, controls: EditorControls) -> None:
        self.widget.render_controls(controls)

    def show_message(self, text: str, kind: MessageKind) -> None:
        self.widget.message.show_message(text, kind)

    def clear_message(self) -> None:
        self.widget.message.clear_message()

    def show_urgent(self, text: str) -> None:
        self.widget.show_urgent(text)

    def hide_urgent(self) -> None:
        self.widget.urgent_banner.hide()

    def open_conflict(self, conflict: SaveConflict) -> None:
        self.widget.open_conflict(conflict)

    def mode_changed(self, mode: Mode) -> None:
        self.widget.mode_changed.emit(mode)

    def saved(self, ref: str) -> None:
        self.widget.saved.emit(ref)

    def review_requested(self, ref: str) -> None:
        self.widget.review_requested.emit(ref)


class RecordEditor(QFrame):
    """See the module docstring."""

    component = ""
    what = "record"

    saved = Signal(str)  # reference of the saved version's resource
    review_requested = Signal(str)  # reference of urgent new data the user asked to see
    mode_changed = Signal(str)

    def __init__(self, *, store: ResourceStore, subscribe: Subscribe, edits: RecordEdits,
                 presence: PresenceService | None, patient_id: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(component_stylesheet("record-editor"))
        self.store = store
        self.edits = edits
        self.presence = presence
        self.patient_id = patient_id
        self.conflict_view: ConflictView | None = None

        self.title = QLabel(self)
        self.title.setObjectName("editorTitle")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.avatars = PresenceAvatars("Also viewing:", self)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.avatars)

        self.lock_banner = QLabel(self)
        self.lock_banner.setObjectName("editLockBanner")
        self.lock_banner.setWordWrap(True)
        self.lock_banner.setTextFormat(Qt.TextFormat.PlainText)
        self.lock_banner.hide()

        self.urgent_banner = QFrame(self)
        self.urgent_banner.setObjectName("urgentEditBanner")
        self.urgent_text = QLabel(self.urgent_banner)
        self.urgent_text.setWordWrap(True)
        self.review_button = QPushButton("Show the new result", self.urgent_banner)
        self.review_button.clicked.connect(self._on_review_button_clicked)
        urgent_row = QHBoxLayout(self.urgent_banner)
        urgent_row.addWidget(self.urgent_text, 1)
        urgent_row.addWidget(self.review_button)
        self.urgent_banner.hide()

        self.form = QWidget(self)
        self.form.setObjectName("editorForm")

        self.message = PanelMessage(self)
        self.edit_button = QPushButton("Edit", self)
        self.edit_button.setObjectName("editButton")
        self.save_button = QPushButton("Save", self)
        self.save_button.setObjectName("saveButton")
        self.discard_button = QPushButton("Discard changes", self)
        self.discard_button.setObjectName("discardButton")
        self.edit_button.clicked.connect(self._on_edit_button_clicked)
        self.save_button.clicked.connect(self._on_save_button_clicked)
        self.discard_button.clicked.connect(self._on_discard_button_clicked)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.edit_button, self.save_button, self.discard_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.lock_banner)
        layout.addWidget(self.urgent_banner)
        layout.addWidget(self.form, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)

        self.session = _WidgetSession(
            self, store=store, subscribe=subscribe, edits=edits, presence=presence,
            patient_id=patient_id, component=self.component, what=self.what)
        self.build_form()
        self.set_record(None)

    # ------------------------------------------------------------------ subclass hooks
    def build_form(self) -> None:
        """Lay out the form's fields in `self.form` and connect their change signals to
        `_on_form_changed` (called once, from the constructor)."""
        raise NotImplementedError

    def fill(self, resource: Mapping[str, Any] | None) -> None:
        """Show `resource` in the form (read-only values)."""
        raise NotImplementedError

    def draft_from_form(self) -> Draft | None:
        """The draft the form holds now (None: nothing to save yet)."""
        raise NotImplementedError

    def load_draft(self, draft: Draft) -> None:
        """Put a kept draft back into the form."""
        raise NotImplementedError

    async def save_draft(self, draft: Draft) -> SaveResult:
        raise NotImplementedError

    def set_form_editable(self, editable: bool) -> None:
        raise NotImplementedError

    def edit_refusal(self, resource: Mapping[str, Any] | None) -> str:
        """Why this user may not edit `resource` ("" if they may)."""
        return ""

    def edit_label(self) -> str:
        return "Edit"

    def allows_new(self) -> bool:
        """True if this editor can create a new record (set_record(None))."""
        return False

    # ------------------------------------------------------------------ the session's state
    @property
    def mode(self) -> Mode:
        return self.session.mode

    @property
    def ref(self) -> str | None:
        return self.session.ref

    @property
    def resource(self) -> Mapping[str, Any] | None:
        return self.session.resource

    @property
    def base(self) -> Mapping[str, Any] | None:
        return self.session.base

    def set_record(self, resource: Mapping[str, Any] | None) -> None:
        """Show `resource` (None: a new record of this kind, e.g. a new note)."""
        self.session.set_record(resource)

    def refresh(self) -> None:
        """Repaint presence, the lock banner and which controls are enabled."""
        self.session.refresh()

    async def start_editing(self) -> bool:
        """Claim the lock (when the record exists) and open the form; False if refused."""
        return await self.session.start_editing()

    async def save(self, draft: Draft | None = None) -> SaveResult | None:
        """Save the form's draft (or `draft`); returns the result (also shown)."""
        return await self.session.save(draft)

    def pause_for(self, ref: str, version: str) -> None:
        """Lock the form behind the urgent banner until the user has seen `ref`."""
        self.session.pause_for(ref, version)

    def _run(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self.session.run(coro, name)

    # ------------------------------------------------------------------ rendering
    def render_controls(self, c: EditorControls) -> None:
        self.avatars.show_members(c.others, checking=c.checking)
        self.avatars.setVisible(c.present)
        self.lock_banner.setText(c.lock_sentence)
        self.lock_banner.setAccessibleName(c.lock_sentence)
        self.lock_banner.setVisible(bool(c.lock_sentence))
        self.edit_button.setText(c.edit_text)
        self.edit_button.setVisible(c.edit_visible)
        self.edit_button.setEnabled(c.edit_enabled)
        self.edit_button.setToolTip(c.edit_tooltip)
        self.save_button.setVisible(c.save_visible)
        self.discard_button.setVisible(c.save_visible)
        self.save_button.setEnabled(c.save_enabled)
        self.discard_button.setEnabled(c.save_enabled)
        if self.session.paused_for is not None:
            self.review_button.setEnabled(c.review_ready)
            self.review_button.setText("Show the new result" if c.review_ready
                                       else "Loading the new result…")

    def show_urgent(self, text: str) -> None:
        self.urgent_text.setText(text)
        self.urgent_banner.setAccessibleName(text)
        self.urgent_banner.show()

    def open_conflict(self, conflict: SaveConflict) -> ConflictView:
        view = ConflictView(conflict, self.what, self)
        self.conflict_view = view
        view.chosen.connect(lambda choice: self._on_conflict_chosen(conflict, choice))
        view.open()
        return view

    # ------------------------------------------------------------------ user input
    def _on_form_changed(self, *_args: Any) -> None:
        """Subclasses connect their fields' change signals here."""
        self.session.form_changed()

    def _on_edit_button_clicked(self) -> None:
        if self.session.mode == "view":
            self.session.run(self.session.start_editing(), "claim edit lock")

    def _on_save_button_clicked(self) -> None:
        self.session.request_save()

    def _on_discard_button_clicked(self) -> None:
        self.session.discard()

    def _on_conflict_chosen(self, conflict: SaveConflict, choice: Any) -> None:
        self.conflict_view = None
        self.session.conflict_chosen(conflict, choice)

    def _on_review_button_clicked(self) -> None:
        self.session.review()

    # ------------------------------------------------------------------ lifetime
    def release(self) -> None:
        """The window closes: keep the draft, release the lock and presence, stop tasks."""
        self.session.release()

    async def wait_closed(self) -> None:
        await self.session.wait_closed()
