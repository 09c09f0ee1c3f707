"""The edit session's state machine without Qt: a real bus, store and draft book; a form of
one text field; saves answered by the test (the live saves are tests/ui/test_task_edit.py and
tests/sync/test_edits_live.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytest

from wardsync.core.bus import EventBus
from wardsync.core.store import ResourceStore
from wardsync.sync.alerts import Clinician
from wardsync.sync.edits import (
    NOTE_COMPONENT,
    Draft,
    NoteDraft,
    RecordEdits,
    SaveConflict,
    Saved,
    SaveFailed,
    SaveResult,
)
from wardsync.sync.workstation import Workstation
from wardsync.viewmodels.edit_session import (
    URGENT_PAUSE_TEXT,
    EditorControls,
    EditSession,
    MessageKind,
    Mode,
)

PATIENT = "pat-01"
NOTE = {"resourceType": "Observation", "id": "note-1", "meta": {"versionId": "1"},
        "status": "final", "subject": {"reference": f"Patient/{PATIENT}"},
        "valueString": "Comfortable overnight."}


def version(resource: Mapping[str, Any], v: str, **changes: Any) -> dict[str, Any]:
    return {**resource, "meta": {"versionId": v}, **changes}


class OneFieldSession(EditSession):
    """A form of one text field, and a view that records what it was told."""

    def __init__(self, store: ResourceStore, bus: EventBus, edits: RecordEdits) -> None:
        self.text = ""
        self.editable = False
        self.controls_shown: EditorControls | None = None
        self.messages: list[tuple[str, MessageKind]] = []
        self.urgent = ""
        self.modes: list[Mode] = []
        self.saved_refs: list[str] = []
        self.reviewed: list[str] = []
        self.conflicts: list[SaveConflict] = []
        self.answers: list[SaveResult] = []
        self.sent: list[Draft] = []
        super().__init__(store=store, subscribe=bus.subscribe, edits=edits, presence=None,
                         patient_id=PATIENT, component=NOTE_COMPONENT, what="nursing note")

    def fill(self, resource: Mapping[str, Any] | None) -> None:
        self.text = str((resource or {}).get("valueString") or "")
        self.form_changed()  # as a Qt field's change signal would: must not count as an edit

    def draft_from_form(self) -> Draft | None:
        return NoteDraft(PATIENT, self.text, self.base if self.mode != "view" else self.resource)

    def load_draft(self, draft: Draft) -> None:
        assert isinstance(draft, NoteDraft)
        self.text = draft.text

    async def save_draft(self, draft: Draft) -> SaveResult:
        self.sent.append(draft)
        return self.answers.pop(0)

    def set_form_editable(self, editable: bool) -> None:
        self.editable = editable

    def allows_new(self) -> bool:
        return True

    def edit_refusal(self, resource: Mapping[str, Any] | None) -> str:
        return ""

    def edit_label(self) -> str:
        return "Edit"

    def render(self, controls: EditorControls) -> None:
        self.controls_shown = controls

    def show_message(self, text: str, kind: MessageKind) -> None:
        self.messages.append((text, kind))

    def clear_message(self) -> None:
        self.messages.clear()

    def show_urgent(self, text: str) -> None:
        self.urgent = text

    def hide_urgent(self) -> None:
        self.urgent = ""

    def open_conflict(self, conflict: SaveConflict) -> None:
        self.conflicts.append(conflict)

    def mode_changed(self, mode: Mode) -> None:
        self.modes.append(mode)

    def saved(self, ref: str) -> None:
        self.saved_refs.append(ref)

    def review_requested(self, ref: str) -> None:
        self.reviewed.append(ref)

    def type(self, text: str) -> None:
        self.text = text
        self.form_changed()

    @property
    def shown(self) -> EditorControls:
        assert self.controls_shown is not None
        return self.controls_shown


@pytest.fixture
def bus() -> EventBus:
    return EventBus()  # unscheduled: every event is delivered at once


@pytest.fixture
def store(bus: EventBus) -> ResourceStore:
    store = ResourceStore(bus)
    store.apply([NOTE])
    return store


@pytest.fixture
def edits() -> RecordEdits:
    # The session only keeps drafts in the book; the saving itself is `save_draft`'s.
    return RecordEdits(cast(Workstation, None), Clinician("Practitioner/n1", "Nurse Demo"))


@pytest.fixture
def session(store: ResourceStore, bus: EventBus, edits: RecordEdits) -> OneFieldSession:
    s = OneFieldSession(store, bus, edits)
    s.set_record(store.get("Observation/note-1"))
    return s


def test_the_hooks_are_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        EditSession(store=None, subscribe=None, edits=None,  # type: ignore[abstract,arg-type]
                    presence=None, patient_id=PATIENT, component="c", what="w")


def test_reading_shows_the_record_with_edit_enabled_and_the_form_read_only(
    session: OneFieldSession,
) -> None:
    assert session.mode == "view" and session.text == "Comfortable overnight."
    c = session.shown
    assert (c.edit_text, c.edit_visible, c.edit_enabled) == ("Edit", True, True)
    assert not c.save_visible and not c.form_editable and not session.editable
    assert c.lock_sentence == "" and not c.present  # no presence service: no avatars
    assert session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT) is None


async def test_editing_keeps_every_change_as_a_draft_and_a_save_returns_to_reading(
    session: OneFieldSession, store: ResourceStore
) -> None:
    assert await session.start_editing()
    assert session.modes == ["claiming", "editing"] and session.base == NOTE
    assert session.shown.save_enabled and session.editable and not session.shown.edit_visible
    session.type("Comfortable overnight. Mobilised.")
    kept = session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT)
    assert isinstance(kept, NoteDraft) and kept.text.endswith("Mobilised.")
    v2 = version(NOTE, "2", valueString="Comfortable overnight. Mobilised.")
    session.answers.append(Saved(v2))
    store.apply([v2])
    result = await session.save()
    assert isinstance(result, Saved)
    assert session.modes == ["claiming", "editing", "saving", "view"]
    assert session.saved_refs == ["Observation/note-1"]
    assert session.messages[-1] == ("Saved (version 2).", "info")
    assert session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT) is None
    assert session.text == "Comfortable overnight. Mobilised." and not session.editable


async def test_a_failed_save_keeps_the_draft_and_the_form_open(
    session: OneFieldSession,
) -> None:
    await session.start_editing()
    session.type("Changed.")
    session.answers.append(SaveFailed(cast(Draft, None), "The server could not be reached."))
    await session.save()
    assert session.mode == "editing" and session.editable
    assert session.messages[-1] == ("The server could not be reached.", "error")
    kept = session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT)
    assert isinstance(kept, NoteDraft) and kept.text == "Changed."


def conflict_for(session: OneFieldSession) -> SaveConflict:
    draft = session.draft_from_form()
    assert draft is not None
    theirs = version(NOTE, "2", valueString="Their words.")
    return SaveConflict(draft, theirs, version(NOTE, "2", valueString=session.text), (), ())


@pytest.mark.parametrize("choice", ["theirs", "edit", "mine"])
async def test_a_conflict_is_shown_and_only_the_users_choice_decides(
    session: OneFieldSession, choice: Any
) -> None:
    await session.start_editing()
    session.type("My words.")
    conflict = conflict_for(session)
    session.answers.append(conflict)
    await session.save()
    assert session.conflicts == [conflict] and session.conflict is conflict
    assert session.mode == "editing"
    assert session.messages[-1][1] == "error" and "Your changes are kept" in session.messages[-1][0]
    theirs = conflict.theirs
    session.answers.append(Saved(version(NOTE, "3", valueString="My words.")))
    session.conflict_chosen(conflict, choice)
    await session.wait_closed()
    kept = session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT)
    if choice == "theirs":
        assert session.mode == "view" and kept is None and session.text == "Their words."
        assert len(session.sent) == 1  # nothing written over theirs
    elif choice == "edit":
        assert session.mode == "editing" and session.base == theirs
        assert isinstance(kept, NoteDraft) and kept.base == theirs and kept.text == "My words."
        assert len(session.sent) == 1
    else:  # mine: saved on top of their version, If-Match theirs
        assert session.mode == "view" and kept is None
        assert session.sent[-1].base == theirs  # type: ignore[union-attr]
    assert session.conflict is None


async def test_an_urgent_result_pauses_the_edit_until_it_has_arrived_and_been_seen(
    session: OneFieldSession, store: ResourceStore, bus: EventBus
) -> None:
    from wardsync.core.events import ResourcesChanged

    report = {"resourceType": "DiagnosticReport", "id": "rep-9", "meta": {"versionId": "2"},
              "subject": {"reference": f"Patient/{PATIENT}"}, "status": "final"}
    bus.publish(ResourcesChanged(("DiagnosticReport/rep-9",), urgent=True))
    assert session.paused_for is None  # reading: nothing to pause
    await session.start_editing()
    session.type("Half a sentence")
    session.pause_for("DiagnosticReport/rep-9", "2")  # as an urgent poke does
    assert session.urgent == URGENT_PAUSE_TEXT
    assert not session.shown.save_enabled and not session.editable
    assert not session.shown.review_ready  # not pulled yet: nothing to show
    session.review()
    assert session.reviewed == [] and session.paused_for is not None
    store.apply([report], urgent=True)
    assert session.shown.review_ready
    session.review()
    assert session.reviewed == ["DiagnosticReport/rep-9"] and session.urgent == ""
    assert session.shown.save_enabled and session.mode == "editing"
    kept = session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT)
    assert isinstance(kept, NoteDraft) and kept.text == "Half a sentence"


async def test_a_closed_editor_keeps_the_draft_and_the_next_one_continues_it(
    session: OneFieldSession, store: ResourceStore, bus: EventBus
) -> None:
    await session.start_editing()
    session.type("Unsaved words.")
    session.release()
    assert session.released
    again = OneFieldSession(store, bus, session.edits)
    again.set_record(store.get("Observation/note-1"))
    assert again.shown.edit_text == "Continue editing"
    assert await again.start_editing()
    assert again.text == "Unsaved words."
    assert again.messages == [("Your unsaved changes are back.", "info")]


async def test_a_newer_version_arriving_while_editing_is_announced_not_loaded(
    session: OneFieldSession, store: ResourceStore
) -> None:
    await session.start_editing()
    session.type("Mine.")
    store.apply([version(NOTE, "2", valueString="Theirs.")])
    assert "changed by someone else" in session.messages[-1][0]
    session.set_record(store.get("Observation/note-1"))  # the panel's repaint shows it
    assert session.text == "Mine." and session.base == NOTE  # the edit stays on its base
    session.discard()
    assert session.mode == "view" and session.text == "Theirs."
    assert session.edits.drafts.get("Observation/note-1", NOTE_COMPONENT) is None
