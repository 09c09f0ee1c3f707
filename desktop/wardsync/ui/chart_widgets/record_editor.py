"""The base of the chart's edit components (the task editor, the nursing note): presence,
the record lock, saving, conflicts, and the pause for urgent news.

One editor shows one record at a time (`set_record`). While it does, the window is present on
the record's channel through the workstation's `PresenceService` (sync/presence.py) and its
avatar stack shows who else has the record open. Editing is component level:

- "Edit" claims the lock for this component. If another workstation holds it, the editor
  says "<name> is editing this … since hh:mm" and its controls stay disabled while the record
  stays readable; another window of this workstation holding it is said too.
- While editing, every change is written to the workstation's `DraftBook` (memory only), so
  a failed save, a lost connection, a lock that lapsed or a closed window never loses it;
  reopening the record offers "Continue editing".
- "Save" goes through `RecordEdits` with `If-Match`; a conflict opens the conflict view
  (ui/conflict_view.py) and nothing is overwritten unless the user chooses so.
- A lock that ends without the user asking (idle, connection lost, an earlier claim) puts
  the editor back to reading with the reason and the draft kept.
- An urgent update for this patient (a critical result: an urgent poke, or an urgent store
  change) while editing pauses the editor behind a banner until the user has looked at the
  new data ("Show the new result", enabled once it has arrived).

Subclasses build the form and implement `fill`, `draft_from_form`, `load_draft`,
`save_draft`, `set_form_editable` and optionally `edit_refusal`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.events import PokeAccepted, ResourcesChanged
from wardsync.core.presence import EditLockEnded, PresenceChanged, record_channel_of_ref
from wardsync.core.store import ResourceStore, resource_ref
from wardsync.sync.edits import (
    Draft,
    RecordEdits,
    SaveConflict,
    Saved,
    SaveFailed,
    SaveResult,
    version_of,
)
from wardsync.sync.presence import ComponentLock, PresenceHandle, PresenceService
from wardsync.ui.chart_widgets.panel_message import PanelMessage
from wardsync.ui.conflict_view import ConflictChoice, ConflictView
from wardsync.ui.presence_avatars import PresenceAvatars
from wardsync.viewmodels.ward_rows import patient_ref_of

log = logging.getLogger(__name__)

Mode = Literal["view", "claiming", "editing", "saving"]
Subscribe = Callable[[Any, Callable[[list[Any]], None]], Any]

EDITOR_STYLE = """
QLabel#editLockBanner { background: #fff4ce; color: #3d2e00; border: 1px solid #c9a227;
                        border-left: 5px solid #8a6d00; padding: 6px 8px; font-weight: 600; }
QFrame#urgentEditBanner { background: #bf360c; border: 0; border-left: 5px solid #7f1d00; }
QFrame#urgentEditBanner QLabel { color: #ffffff; background: transparent; font-weight: 600; }
QFrame#urgentEditBanner QPushButton { background: #ffffff; color: #5d1000; font-weight: 700;
                                      padding: 4px 10px; border: 1px solid #5d1000; }
QFrame#urgentEditBanner QPushButton:disabled { color: #8d6e63; }
QLabel#editorTitle { font-weight: 700; font-size: 11pt; }
"""

LOCK_END_WORDS = {
    "idle": "Your edit lock was released after {minutes} without input, so others can edit "
            "this {what}. Your changes are kept — press “Continue editing” to go on.",
    "disconnected": "The live connection was lost, so others could no longer see that you "
                    "were editing. Your changes are kept — press “Continue editing” to go on "
                    "(saving still checks for newer versions).",
    "taken": "{holder} claimed this {what} first. Your changes are kept; you can continue "
             "when they have finished.",
    "left": "Editing stopped. Your changes are kept.",
}


def _clock(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "now"
    return time.strftime("%H:%M", time.localtime(epoch_ms / 1000))


def _minutes(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        n = int(seconds // 60)
        return f"{n} minute" + ("s" if n != 1 else "")
    return f"{seconds:g} seconds"


def lock_sentence(lock: ComponentLock, what: str) -> str:
    """What the lock banner says (empty when nothing blocks editing here)."""
    if not lock.blocked or lock.holder is None:
        return ""
    if lock.by_me:
        return f"You are editing this {what} in another window."
    data = lock.holder.data
    who = f"{data.clinician.display_name} ({data.clinician.role})" if data else "Someone"
    return (f"{who} is editing this {what} since {_clock(lock.claimed_at_ms)}. You can read "
            "it; editing is locked until they finish.")


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
        self.setStyleSheet(EDITOR_STYLE)
        self.store = store
        self.edits = edits
        self.presence = presence
        self.patient_id = patient_id
        self.resource: Mapping[str, Any] | None = None
        self.base: Mapping[str, Any] | None = None  # the version an edit started from
        self.ref: str | None = None
        self.handle: PresenceHandle | None = None
        self.mode: Mode = "view"
        self.paused_for: tuple[str, str] | None = None  # (ref, version) of urgent news
        self.conflict_view: ConflictView | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._filling = False
        self.released = False

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

        self._subs = [
            subscribe(PresenceChanged, self._on_bus_presence_changed),
            subscribe(EditLockEnded, self._on_bus_lock_ended),
            subscribe(PokeAccepted, self._on_bus_poke),
            subscribe(ResourcesChanged, self._on_bus_resources_changed),
        ]

    # ------------------------------------------------------------------ subclass hooks
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

    def draft_key(self) -> tuple[str, str]:
        """Where the draft is kept in the DraftBook."""
        return (self.ref or f"Patient/{self.patient_id}", self.component)

    # ------------------------------------------------------------------ showing a record
    def set_record(self, resource: Mapping[str, Any] | None) -> None:
        """Show `resource` (None: a new record of this kind, e.g. a new note)."""
        ref = resource_ref(resource) if resource is not None else None
        if ref != self.ref:
            if self.mode in ("editing", "claiming"):
                self._keep_draft()
                self._stop_editing()
            if self.handle is not None:
                self.handle.close()
                self.handle = None
            self.ref = ref
            self.message.clear_message()
            if ref is not None and self.presence is not None:
                self.handle = self.presence.join_channel(record_channel_of_ref(ref))
        self.resource = resource
        if self.mode == "view":
            self._fill(resource)
        self.refresh()

    def _fill(self, resource: Mapping[str, Any] | None) -> None:
        self._filling = True
        try:
            self.fill(resource)
        finally:
            self._filling = False

    def lock(self) -> ComponentLock:
        if self.handle is None:
            return ComponentLock(self.component)
        return self.handle.lock(self.component)

    def refresh(self) -> None:
        """Repaint presence, the lock banner and which controls are enabled."""
        if self.released:
            return
        handle = self.handle
        if handle is not None:
            self.avatars.show_members(handle.others(), checking=handle.checking)
        else:
            self.avatars.show_members(())
        self.avatars.setVisible(handle is not None)
        lock = self.lock()
        sentence = lock_sentence(lock, self.what) if self.mode == "view" else ""
        self.lock_banner.setText(sentence)
        self.lock_banner.setAccessibleName(sentence)
        self.lock_banner.setVisible(bool(sentence))
        refusal = self.edit_refusal(self.resource)
        has_draft = self.edits.drafts.get(*self.draft_key()) is not None
        editing = self.mode == "editing" and self.paused_for is None
        if self.mode == "view" and lock.blocked:
            # Said in words, not only by a greyed button (themes differ in how they grey).
            self.edit_button.setText("Locked")
        else:
            self.edit_button.setText("Continue editing" if has_draft else self.edit_label())
        self.edit_button.setVisible(self.mode in ("view", "claiming"))
        self.edit_button.setEnabled(self.mode == "view" and not lock.blocked and not refusal
                                    and (self.resource is not None or self.allows_new()))
        self.edit_button.setToolTip(refusal or sentence or f"Edit this {self.what}")
        self.save_button.setVisible(self.mode in ("editing", "saving"))
        self.discard_button.setVisible(self.mode in ("editing", "saving"))
        self.save_button.setEnabled(editing)
        self.discard_button.setEnabled(editing)
        self.set_form_editable(editing)

    def edit_label(self) -> str:
        return "Edit"

    def allows_new(self) -> bool:
        """True if this editor can create a new record (set_record(None))."""
        return False

    # ------------------------------------------------------------------ editing
    def _run(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("editor task failed", exc_info=task.exception())

    def _set_mode(self, mode: Mode) -> None:
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)
        self.refresh()

    def _on_edit_button_clicked(self) -> None:
        if self.mode == "view":
            self._run(self.start_editing(), "claim edit lock")

    async def start_editing(self) -> bool:
        """Claim the lock (when the record exists) and open the form; False if refused."""
        if self.mode != "view" or self.edit_refusal(self.resource):
            return False
        self.message.clear_message()
        self._set_mode("claiming")
        outcome = None
        if self.handle is not None:
            handle = self.handle
            outcome = await handle.claim(self.component)
            if handle is not self.handle or self.released:
                if outcome.granted:
                    handle.release(self.component)
                return False
            if not outcome.granted:
                self._set_mode("view")
                if outcome.reason == "taken" and outcome.holder is not None:
                    self.message.show_message(
                        f"{outcome.holder.name} started editing this {self.what} first.",
                        "info")
                return False
        draft = self.edits.drafts.get(*self.draft_key())
        # The edit is pinned to the version on screen now (or the kept draft's): a newer
        # version arriving meanwhile must come back as a conflict, never be written over.
        self.base = self.resource
        self._set_mode("editing")
        if draft is not None:
            self.base = draft.base
            self._filling = True
            try:
                self.load_draft(draft)
            finally:
                self._filling = False
            self.message.show_message("Your unsaved changes are back.", "info")
        if outcome is not None and outcome.reason == "offline":
            self.message.show_message(
                "Not connected for live updates: others cannot see that you are editing. "
                "Saving still checks that nobody saved a newer version.", "info")
        return True

    def _on_form_changed(self, *_args: Any) -> None:
        """Subclasses connect their fields' change signals here."""
        if self._filling or self.mode != "editing":
            return
        self._keep_draft()
        if self.handle is not None:
            self.handle.touch(self.component)

    def _keep_draft(self) -> None:
        draft = self.draft_from_form()
        if draft is not None:
            self.edits.drafts.put(*self.draft_key(), draft)

    def _stop_editing(self) -> None:
        if self.handle is not None:
            self.handle.release(self.component)
        self.paused_for = None
        self.base = None
        self.urgent_banner.hide()
        self._set_mode("view")
        self._fill(self.resource)

    def _on_discard_button_clicked(self) -> None:
        if self.mode == "editing":
            self.edits.drafts.discard(*self.draft_key())
            self._stop_editing()
            self.message.show_message("Changes discarded.", "info")

    def _on_save_button_clicked(self) -> None:
        if self.mode == "editing" and self.paused_for is None:
            self._run(self.save(), "save edit")

    async def save(self, draft: Draft | None = None) -> SaveResult | None:
        """Save the form's draft (or `draft`); returns the result (also shown)."""
        draft = draft or self.draft_from_form()
        if draft is None:
            return None
        key = self.draft_key()
        self.edits.drafts.put(*key, draft)
        self._set_mode("saving")
        self.message.show_message("Saving…", "info")
        result = await self.save_draft(draft)
        if self.released:
            return result
        if isinstance(result, Saved):
            self.edits.drafts.discard(*key)
            saved_ref = resource_ref(result.resource)
            if self.ref is None or saved_ref != self.ref:
                # A new record: show it (and be present on it) from now on.
                self.resource = result.resource
            else:
                self.resource = self.store.get(saved_ref) or result.resource
            self._stop_editing()
            self.set_record(self.resource)
            self.message.show_message(
                f"Saved (version {version_of(result.resource) or '?'}).", "info")
            self.saved.emit(saved_ref)
        elif isinstance(result, SaveConflict):
            self._set_mode("editing")
            self.message.show_message(
                f"Not saved: someone else saved this {self.what} first. Your changes are "
                "kept.", "error")
            self.open_conflict(result)
        elif isinstance(result, SaveFailed):
            self._set_mode("editing")
            self.message.show_message(result.user_message, "error")
        return result

    def open_conflict(self, conflict: SaveConflict) -> ConflictView:
        view = ConflictView(conflict, self.what, self)
        self.conflict_view = view
        view.chosen.connect(lambda choice: self._on_conflict_chosen(conflict, choice))
        view.open()
        return view

    def _on_conflict_chosen(self, conflict: SaveConflict, choice: ConflictChoice) -> None:
        self.conflict_view = None
        if self.released:
            return
        rebased = RecordEdits.rebase(conflict)
        self.resource = conflict.theirs
        if choice == "theirs":
            self.edits.drafts.discard(*self.draft_key())
            self._stop_editing()
            self.message.show_message("Their version kept; your changes were discarded.",
                                      "info")
            return
        self.edits.drafts.put(*self.draft_key(), rebased)
        self.base = rebased.base
        self._filling = True
        try:
            self.load_draft(rebased)
        finally:
            self._filling = False
        if choice == "mine":
            self._run(self.save(rebased), "save over their version")
        else:
            self.message.show_message(
                "Your changes are now on top of their version. Save when ready.", "info")
            self.refresh()

    # ------------------------------------------------------------------ bus
    def _on_bus_presence_changed(self, events: list[PresenceChanged]) -> None:
        if self.handle is not None and any(e.channel == self.handle.channel for e in events):
            self.refresh()

    def _on_bus_lock_ended(self, events: list[EditLockEnded]) -> None:
        if self.handle is None or self.mode not in ("editing", "claiming"):
            return
        for event in events:
            if event.channel == self.handle.channel and event.component == self.component:
                self._keep_draft()
                holder = self.lock().holder
                idle_s = self.presence.lock_idle_s if self.presence else 0.0
                text = LOCK_END_WORDS[event.reason].format(
                    minutes=_minutes(idle_s), what=self.what,
                    holder=holder.name if holder else "Someone")
                self._stop_editing()
                self.message.show_message(text, "error")
                return

    def _on_bus_poke(self, events: list[PokeAccepted]) -> None:
        for event in events:
            poke = event.poke
            if poke.is_urgent and poke.patient_id == self.patient_id:
                self.pause_for(poke.ref, poke.version_id)

    def _on_bus_resources_changed(self, events: list[ResourcesChanged]) -> None:
        refs = {ref for e in events for ref in e.refs}
        for event in events:
            if not event.urgent:
                continue
            for ref in event.refs:
                held = self.store.get(ref)
                if held is not None and patient_ref_of(held) == f"Patient/{self.patient_id}":
                    self.pause_for(ref, version_of(held) or "")
        if self.ref is not None and self.ref in refs:
            held = self.store.get(self.ref)
            if held is not None:
                if self.mode == "view":
                    self.resource = held
                    self._fill(held)
                elif (self.mode == "editing" and self.conflict_view is None
                      and version_of(held) != version_of(self.base)):
                    self.message.show_message(
                        f"This {self.what} was changed by someone else while you were "
                        "editing. Saving will show you both versions.", "info")
        self._refresh_review_button()
        self.refresh()

    # ------------------------------------------------------------------ urgent updates
    def pause_for(self, ref: str, version: str) -> None:
        """Lock the form behind the urgent banner until the user has seen `ref`."""
        if self.mode not in ("editing", "saving"):
            return
        if self.paused_for is None:
            self._keep_draft()
            self.paused_for = (ref, version)
        elif ref == self.paused_for[0] or (ref.startswith("DiagnosticReport/")
                                           and not self.paused_for[0].startswith(
                                               "DiagnosticReport/")):
            # A report shows all its results: it is the better thing to look at.
            self.paused_for = (ref, version)
        self.urgent_text.setText(
            "A critical result for this patient arrived while you were editing. Look at it "
            "before you continue — your changes are kept.")
        self.urgent_banner.setAccessibleName(self.urgent_text.text())
        self.urgent_banner.show()
        self._refresh_review_button()
        self.refresh()

    def _new_data_arrived(self) -> bool:
        if self.paused_for is None:
            return False
        ref, version = self.paused_for
        held = version_of(self.store.get(ref))
        if held is None:
            return False
        if held.isdigit() and version.isdigit():
            return int(held) >= int(version)
        return True

    def _refresh_review_button(self) -> None:
        if self.paused_for is None:
            return
        ready = self._new_data_arrived()
        self.review_button.setEnabled(ready)
        self.review_button.setText("Show the new result" if ready else "Loading the new result…")

    def _on_review_button_clicked(self) -> None:
        if self.paused_for is None or not self._new_data_arrived():
            return
        ref, _ = self.paused_for
        self.paused_for = None
        self.urgent_banner.hide()
        self.review_requested.emit(ref)
        if self.handle is not None:
            self.handle.touch(self.component)
        self.refresh()

    # ------------------------------------------------------------------ lifetime
    def release(self) -> None:
        """The window closes: keep the draft, release the lock and presence, stop tasks."""
        if self.released:
            return
        if self.mode in ("editing", "claiming", "saving"):
            self._keep_draft()
        self.released = True
        for sub in self._subs:
            sub.close()
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
