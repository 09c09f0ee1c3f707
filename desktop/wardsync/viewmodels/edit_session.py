"""One chart edit component's session, without Qt: presence, the record lock, the draft,
saving, conflicts and the pause for urgent news.

A session shows one record at a time (`set_record`). While it does, it is present on the
record's channel through the workstation's `PresenceService` (sync/presence.py). Editing is
component level:

- `start_editing` claims the lock for this component. If another workstation holds it, the
  controls say "<name> is editing this … since hh:mm" and editing stays off while the record
  stays readable; another window of this workstation holding it is said too.
- While editing, every change of the form is written to the workstation's `DraftBook` (memory
  only), so a failed save, a lost connection, a lock that lapsed or a closed window never
  loses it; showing the record again offers "Continue editing".
- `save` goes through `RecordEdits` with `If-Match`; a conflict is handed to the view to show
  both versions, and nothing is overwritten unless the user chooses so (`conflict_chosen`).
- A lock that ends without the user asking (idle, connection lost, an earlier claim) puts the
  session back to reading with the reason and the draft kept.
- An urgent update for this patient (a critical result: an urgent poke, or an urgent store
  change) while editing pauses the session until the user has looked at the new data
  (`review`, possible once it has arrived).

The states are `Mode`: view -> claiming -> editing <-> saving, and back to view. What the
buttons and banners show follows from the state alone (`controls()`), so the whole machine
is tested without a display. Concrete sessions implement the abstract hooks: the form
(`fill`, `draft_from_form`, `load_draft`, `save_draft`, `set_form_editable`, `edit_refusal`,
`edit_label`, `allows_new`) and the view
(`render`, `show_message`, `clear_message`, `show_urgent`, `hide_urgent`, `open_conflict`,
`mode_changed`, `saved`, `review_requested`). The Qt editor (ui/chart_widgets/record_editor.py)
is one such view.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from wardsync.core.events import PokeAccepted, ResourcesChanged
from wardsync.core.presence import EditLockEnded, Member, PresenceChanged, record_channel_of_ref
from wardsync.core.resources import resource_ref
from wardsync.core.resources import version_id as version_of
from wardsync.core.store import ResourceStore
from wardsync.core.tasks import TaskOwner
from wardsync.sync.edits import (
    Draft,
    RecordEdits,
    SaveConflict,
    Saved,
    SaveFailed,
    SaveResult,
)
from wardsync.sync.presence import ComponentLock, PresenceHandle, PresenceService
from wardsync.viewmodels.ward_rows import patient_ref_of

log = logging.getLogger(__name__)

Mode = Literal["view", "claiming", "editing", "saving"]
MessageKind = Literal["info", "error"]
ConflictChoice = Literal["mine", "theirs", "edit"]  # "edit": mine on top of theirs, not saved yet
Subscribe = Callable[[Any, Callable[[list[Any]], None]], Any]

URGENT_PAUSE_TEXT = ("A critical result for this patient arrived while you were editing. "
                     "Look at it before you continue — your changes are kept.")
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
    who = f"{lock.holder.name} ({lock.holder.role})"
    return (f"{who} is editing this {what} since {_clock(lock.claimed_at_ms)}. You can read "
            "it; editing is locked until they finish.")


@dataclass(frozen=True, slots=True)
class EditorControls:
    """What an editor's controls show in the current state (the view renders exactly this)."""

    present: bool  # on the record's presence channel (avatars shown)
    others: Sequence[Member]
    checking: bool  # presence not yet known
    lock_sentence: str  # the lock banner ("" hides it)
    edit_text: str
    edit_visible: bool
    edit_enabled: bool
    edit_tooltip: str
    save_visible: bool  # Save and Discard
    save_enabled: bool
    form_editable: bool
    review_ready: bool  # the urgent news has arrived: "Show the new result" works


class EditSession(abc.ABC):
    """See the module docstring."""

    def __init__(self, *, store: ResourceStore, subscribe: Subscribe, edits: RecordEdits,
                 presence: PresenceService | None, patient_id: str, component: str,
                 what: str) -> None:
        self.store = store
        self.edits = edits
        self.presence = presence
        self.patient_id = patient_id
        self.component = component
        self.what = what
        self.resource: Mapping[str, Any] | None = None
        self.base: Mapping[str, Any] | None = None  # the version an edit started from
        self.ref: str | None = None
        self.handle: PresenceHandle | None = None
        self.mode: Mode = "view"
        self.paused_for: tuple[str, str] | None = None  # (ref, version) of urgent news
        self.conflict: SaveConflict | None = None  # shown, awaiting the user's choice
        self.filling = False  # the form is being filled, not edited by the user
        self.released = False
        self.tasks = TaskOwner(f"{what} editor", logger=log)
        self._subs = [
            subscribe(PresenceChanged, self.on_presence_changed),
            subscribe(EditLockEnded, self.on_lock_ended),
            subscribe(PokeAccepted, self.on_poke),
            subscribe(ResourcesChanged, self.on_resources_changed),
        ]

    # ------------------------------------------------------------------ the form
    @abc.abstractmethod
    def fill(self, resource: Mapping[str, Any] | None) -> None:
        """Show `resource` in the form (read-only values)."""

    @abc.abstractmethod
    def draft_from_form(self) -> Draft | None:
        """The draft the form holds now (None: nothing to save yet)."""

    @abc.abstractmethod
    def load_draft(self, draft: Draft) -> None:
        """Put a kept draft back into the form."""

    @abc.abstractmethod
    async def save_draft(self, draft: Draft) -> SaveResult:
        """Write `draft` through `RecordEdits` (If-Match on the draft's base)."""

    @abc.abstractmethod
    def set_form_editable(self, editable: bool) -> None:
        """Let the user change the form's fields, or not."""

    @abc.abstractmethod
    def edit_refusal(self, resource: Mapping[str, Any] | None) -> str:
        """Why this user may not edit `resource` ("" if they may: a nursing note is amended
        only by its author)."""

    @abc.abstractmethod
    def edit_label(self) -> str:
        """The edit button's words ("Edit", "Write a new note", "Amend note")."""

    @abc.abstractmethod
    def allows_new(self) -> bool:
        """True if this editor can create a new record (set_record(None))."""

    # ------------------------------------------------------------------ the view
    @abc.abstractmethod
    def render(self, controls: EditorControls) -> None:
        """Show `controls` (presence, lock banner, buttons)."""

    @abc.abstractmethod
    def show_message(self, text: str, kind: MessageKind) -> None:
        """Say `text` under the form."""

    @abc.abstractmethod
    def clear_message(self) -> None:
        """Remove the message under the form."""

    @abc.abstractmethod
    def show_urgent(self, text: str) -> None:
        """Pause the form behind the urgent-news banner saying `text`."""

    @abc.abstractmethod
    def hide_urgent(self) -> None:
        """Remove the urgent-news banner."""

    @abc.abstractmethod
    def open_conflict(self, conflict: SaveConflict) -> None:
        """Show both versions; the user's choice comes back as `conflict_chosen`."""

    @abc.abstractmethod
    def mode_changed(self, mode: Mode) -> None:
        """The session moved to `mode`."""

    @abc.abstractmethod
    def saved(self, ref: str) -> None:
        """A version of `ref` was saved."""

    @abc.abstractmethod
    def review_requested(self, ref: str) -> None:
        """The user asked to see the urgent news `ref`."""

    # ------------------------------------------------------------------ showing a record
    def draft_key(self) -> tuple[str, str]:
        """Where the draft is kept in the DraftBook."""
        return (self.ref or f"Patient/{self.patient_id}", self.component)

    def set_record(self, resource: Mapping[str, Any] | None) -> None:
        """Show `resource` (None: a new record of this kind, e.g. a new note)."""
        ref = resource_ref(resource) if resource is not None else None
        if ref != self.ref:
            if self.mode in ("editing", "claiming"):
                self.keep_draft()
                self.stop_editing()
            if self.handle is not None:
                self.handle.close()
                self.handle = None
            self.ref = ref
            self.clear_message()
            if ref is not None and self.presence is not None:
                self.handle = self.presence.join_channel(record_channel_of_ref(ref))
        self.resource = resource
        if self.mode == "view":
            self.fill_quietly(resource)
        self.refresh()

    def fill_quietly(self, resource: Mapping[str, Any] | None) -> None:
        """Fill the form without its changes counting as the user's edits."""
        self.filling = True
        try:
            self.fill(resource)
        finally:
            self.filling = False

    def load_quietly(self, draft: Draft) -> None:
        self.filling = True
        try:
            self.load_draft(draft)
        finally:
            self.filling = False

    def lock(self) -> ComponentLock:
        if self.handle is None:
            return ComponentLock(self.component)
        return self.handle.lock(self.component)

    def controls(self) -> EditorControls:
        """What the controls show now."""
        handle = self.handle
        lock = self.lock()
        sentence = lock_sentence(lock, self.what) if self.mode == "view" else ""
        refusal = self.edit_refusal(self.resource)
        has_draft = self.edits.drafts.get(*self.draft_key()) is not None
        editing = self.mode == "editing" and self.paused_for is None
        if self.mode == "view" and lock.blocked:
            # Said in words, not only by a greyed button (themes differ in how they grey).
            edit_text = "Locked"
        else:
            edit_text = "Continue editing" if has_draft else self.edit_label()
        return EditorControls(
            present=handle is not None,
            others=tuple(handle.others()) if handle is not None else (),
            checking=handle.checking if handle is not None else False,
            lock_sentence=sentence,
            edit_text=edit_text,
            edit_visible=self.mode in ("view", "claiming"),
            edit_enabled=(self.mode == "view" and not lock.blocked and not refusal
                          and (self.resource is not None or self.allows_new())),
            edit_tooltip=refusal or sentence or f"Edit this {self.what}",
            save_visible=self.mode in ("editing", "saving"),
            save_enabled=editing,
            form_editable=editing,
            review_ready=self.new_data_arrived(),
        )

    def refresh(self) -> None:
        """Render the controls for the current state."""
        if self.released:
            return
        controls = self.controls()
        self.render(controls)
        self.set_form_editable(controls.form_editable)

    # ------------------------------------------------------------------ editing
    def run(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `coro` as this session's background work (cancelled at `release`)."""
        self.tasks.spawn(coro, name)

    def set_mode(self, mode: Mode) -> None:
        if mode != self.mode:
            self.mode = mode
            self.mode_changed(mode)
        self.refresh()

    async def start_editing(self) -> bool:
        """Claim the lock (when the record exists) and open the form; False if refused."""
        if self.mode != "view" or self.edit_refusal(self.resource):
            return False
        self.clear_message()
        self.set_mode("claiming")
        outcome = None
        if self.handle is not None:
            handle = self.handle
            outcome = await handle.claim(self.component)
            if handle is not self.handle or self.released:
                if outcome.granted:
                    handle.release(self.component)
                return False
            if not outcome.granted:
                self.set_mode("view")
                if outcome.reason == "taken" and outcome.holder is not None:
                    self.show_message(
                        f"{outcome.holder.name} started editing this {self.what} first.",
                        "info")
                return False
        draft = self.edits.drafts.get(*self.draft_key())
        # The edit is pinned to the version on screen now (or the kept draft's): a newer
        # version arriving meanwhile must come back as a conflict, never be written over.
        self.base = self.resource
        self.set_mode("editing")
        if draft is not None:
            self.base = draft.base
            self.load_quietly(draft)
            self.show_message("Your unsaved changes are back.", "info")
        if outcome is not None and outcome.reason == "offline":
            self.show_message(
                "Not connected for live updates: others cannot see that you are editing. "
                "Saving still checks that nobody saved a newer version.", "info")
        return True

    def form_changed(self) -> None:
        """The user changed the form: keep the draft and keep the lock alive."""
        if self.filling or self.mode != "editing":
            return
        self.keep_draft()
        if self.handle is not None:
            self.handle.touch(self.component)

    def keep_draft(self) -> None:
        draft = self.draft_from_form()
        if draft is not None:
            self.edits.drafts.put(*self.draft_key(), draft)

    def stop_editing(self) -> None:
        if self.handle is not None:
            self.handle.release(self.component)
        self.paused_for = None
        self.base = None
        self.hide_urgent()
        self.set_mode("view")
        self.fill_quietly(self.resource)

    def discard(self) -> None:
        """Drop the draft and go back to reading."""
        if self.mode == "editing":
            self.edits.drafts.discard(*self.draft_key())
            self.stop_editing()
            self.show_message("Changes discarded.", "info")

    def request_save(self) -> None:
        """The user pressed Save (ignored unless editing and not paused)."""
        if self.mode == "editing" and self.paused_for is None:
            self.run(self.save(), "save edit")

    async def save(self, draft: Draft | None = None) -> SaveResult | None:
        """Save the form's draft (or `draft`); returns the result (also shown)."""
        draft = draft or self.draft_from_form()
        if draft is None:
            return None
        key = self.draft_key()
        self.edits.drafts.put(*key, draft)
        self.set_mode("saving")
        self.show_message("Saving…", "info")
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
            self.stop_editing()
            self.set_record(self.resource)
            self.show_message(f"Saved (version {version_of(result.resource) or '?'}).", "info")
            self.saved(saved_ref)
        elif isinstance(result, SaveConflict):
            self.set_mode("editing")
            self.show_message(
                f"Not saved: someone else saved this {self.what} first. Your changes are "
                "kept.", "error")
            self.conflict = result
            self.open_conflict(result)
        elif isinstance(result, SaveFailed):
            self.set_mode("editing")
            self.show_message(result.user_message, "error")
        return result

    def conflict_chosen(self, conflict: SaveConflict, choice: ConflictChoice) -> None:
        """The user chose in the conflict view: keep theirs, save mine over it, or merge."""
        self.conflict = None
        if self.released:
            return
        rebased = RecordEdits.rebase(conflict)
        self.resource = conflict.theirs
        if choice == "theirs":
            self.edits.drafts.discard(*self.draft_key())
            self.stop_editing()
            self.show_message("Their version kept; your changes were discarded.", "info")
            return
        self.edits.drafts.put(*self.draft_key(), rebased)
        self.base = rebased.base
        self.load_quietly(rebased)
        if choice == "mine":
            self.run(self.save(rebased), "save over their version")
        else:
            self.show_message(
                "Your changes are now on top of their version. Save when ready.", "info")
            self.refresh()

    # ------------------------------------------------------------------ bus
    def on_presence_changed(self, events: list[PresenceChanged]) -> None:
        if self.handle is not None and any(e.channel == self.handle.channel for e in events):
            self.refresh()

    def on_lock_ended(self, events: list[EditLockEnded]) -> None:
        if self.handle is None or self.mode not in ("editing", "claiming"):
            return
        for event in events:
            if event.channel == self.handle.channel and event.component == self.component:
                self.keep_draft()
                holder = self.lock().holder
                idle_s = self.presence.lock_idle_s if self.presence else 0.0
                text = LOCK_END_WORDS[event.reason].format(
                    minutes=_minutes(idle_s), what=self.what,
                    holder=holder.name if holder else "Someone")
                self.stop_editing()
                self.show_message(text, "error")
                return

    def on_poke(self, events: list[PokeAccepted]) -> None:
        for event in events:
            poke = event.poke
            if poke.is_urgent and poke.patient_id == self.patient_id:
                self.pause_for(poke.ref, poke.version_id)

    def on_resources_changed(self, events: list[ResourcesChanged]) -> None:
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
                    self.fill_quietly(held)
                elif (self.mode == "editing" and self.conflict is None
                      and version_of(held) != version_of(self.base)):
                    self.show_message(
                        f"This {self.what} was changed by someone else while you were "
                        "editing. Saving will show you both versions.", "info")
        self.refresh()

    # ------------------------------------------------------------------ urgent updates
    def pause_for(self, ref: str, version: str) -> None:
        """Pause the form until the user has seen `ref` (only while editing or saving)."""
        if self.mode not in ("editing", "saving"):
            return
        if self.paused_for is None:
            self.keep_draft()
            self.paused_for = (ref, version)
        elif ref == self.paused_for[0] or (ref.startswith("DiagnosticReport/")
                                           and not self.paused_for[0].startswith(
                                               "DiagnosticReport/")):
            # A report shows all its results: it is the better thing to look at.
            self.paused_for = (ref, version)
        self.show_urgent(URGENT_PAUSE_TEXT)
        self.refresh()

    def new_data_arrived(self) -> bool:
        """The urgent news the session is paused for is in the store (at least that version)."""
        if self.paused_for is None:
            return False
        ref, version = self.paused_for
        held = version_of(self.store.get(ref))
        if held is None:
            return False
        if held.isdigit() and version.isdigit():
            return int(held) >= int(version)
        return True

    def review(self) -> None:
        """The user asked to see the urgent news (once it has arrived): the pause ends."""
        if self.paused_for is None or not self.new_data_arrived():
            return
        ref, _ = self.paused_for
        self.paused_for = None
        self.hide_urgent()
        self.review_requested(ref)
        if self.handle is not None:
            self.handle.touch(self.component)
        self.refresh()

    # ------------------------------------------------------------------ lifetime
    def release(self) -> None:
        """The view closes: keep the draft, release the lock and presence, stop tasks."""
        if self.released:
            return
        if self.mode in ("editing", "claiming", "saving"):
            self.keep_draft()
        self.released = True
        for sub in self._subs:
            sub.close()
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        for task in self.tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await self.tasks.wait()
