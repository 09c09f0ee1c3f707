"""Saving what clinicians change from the chart: a Task's status, owner and note, and nursing
notes. Every update is guarded by `If-Match`; a conflict is data, never an exception or an
overwrite.

Updates (R4 http.html#concurrency): each save is a PUT of the version the user started from
with their changes applied, sent with `If-Match: W/"<that versionId>"`. If someone saved a
newer version first the server answers 412; `save_*` then reads the current version and
returns a `SaveConflict` with both versions and what each side changed, for the user to
decide. Nothing is written without a version to match. A draft is never dropped by a failed
save: `DraftBook` keeps it (in memory only, never on disk: it may hold clinical text) until it
is saved or the user discards it, across failed saves, reconnects and editors closing.

Task changes are intentions, not a copy of the form: only the fields the user changed are set
on save (`TaskEdit`), so another clinician's change to a field this user did not touch is kept
when the edit is re-applied on top of their version, and a field both changed shows in the
conflict view. A Task note is appended as a new `Task.note` annotation (author, time, text):
earlier notes are never rewritten.

Nursing note: an **Observation**, LOINC 34746-8 "Nurse note", text in `valueString`, the
nurse as `performer`, `effectiveDateTime`/`issued` the time written. Why not Communication: a
Communication is a message from a sender to recipients (the app records critical-result
acknowledgements as Communications, and the ward alerts query pulls them), and its status
describes delivery; a nursing note is a finding recorded about the patient, addressed to no
one, read in the chart next to the patient's other observations, and corrected as FHIR
corrects observations: a new version with status `amended` (R4 observation.html#status), so
the history keeps what was first written. A new note is a create (POST): it has no earlier
version that could conflict. Amendments are updates with `If-Match` like every other save.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from wardsync.core import codes
from wardsync.core.fhirtime import format_instant
from wardsync.core.queries import PatientKey, Search
from wardsync.core.resources import resource_ref
from wardsync.core.resources import version_id as version_of
from wardsync.fhir.errors import Conflict, FhirError, InvalidResource, Unreachable
from wardsync.sync.alerts import Clinician
from wardsync.sync.workstation import Workstation

log = logging.getLogger(__name__)

# SMART scopes the edits need: update Tasks; create and amend nursing-note Observations.
EDIT_WRITE_SCOPES = ("user/Task.u", "user/Observation.c", "user/Observation.u")
NURSING_NOTE = codes.Code("34746-8", "Nurse note", "")
MAX_NOTE_CHARS = 4000
# Task statuses a ward sets by hand (R4 valueset-task-status); the current status, whatever
# it is, is always offered too.
TASK_STATUSES = ("requested", "accepted", "in-progress", "on-hold", "completed", "cancelled")
UNASSIGNED = ""  # TaskEdit.owner meaning "nobody"

TASK_COMPONENT = "task"  # lock components (core/presence.py names)
NOTE_COMPONENT = "note"


class EditRefused(ValueError):
    """An edit that cannot be saved as it is; `user_message` says what to fix."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


def _instant(epoch_s: float) -> str:
    return format_instant(epoch_s, "seconds")


def _body_for_update(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A copy to PUT: the server assigns versionId and lastUpdated (R4 http.html#update)."""
    body = dict(resource)
    meta = {k: v for k, v in (body.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return body


def _check_text(text: str, what: str) -> str:
    text = text.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise EditRefused(f"The {what} is too long ({len(text)} characters, at most "
                          f"{MAX_NOTE_CHARS}).")
    return text


# ---------------------------------------------------------------- what changed


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs between two versions, in words for the conflict view."""

    field: str
    before: str
    after: str


def reference_text(reference: object) -> str:
    if not isinstance(reference, Mapping):
        return "nobody"
    display = reference.get("display")
    ref = reference.get("reference")
    if isinstance(display, str) and display:
        return display
    return str(ref) if isinstance(ref, str) and ref else "nobody"


def _notes(task: Mapping[str, Any]) -> list[str]:
    return [str(n.get("text", "")) for n in task.get("note") or () if isinstance(n, Mapping)]


def task_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[FieldChange]:
    """What differs from `before` to `after` in the fields a ward edits and reads."""
    out: list[FieldChange] = []
    for key, label in (("status", "Status"), ("priority", "Priority"),
                       ("description", "Details")):
        if before.get(key) != after.get(key):
            out.append(FieldChange(label, str(before.get(key) or "—"),
                                   str(after.get(key) or "—")))
    if (before.get("owner") or {}).get("reference") != (after.get("owner") or {}).get(
            "reference"):
        out.append(FieldChange("Owner", reference_text(before.get("owner")),
                               reference_text(after.get("owner"))))
    old, new = _notes(before), _notes(after)
    if new[:len(old)] == old:
        out += [FieldChange("Note added", "", text) for text in new[len(old):]]
    elif old != new:
        out.append(FieldChange("Notes", "\n".join(old), "\n".join(new)))
    return out


def note_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]
                 ) -> list[FieldChange]:
    """What differs between two versions of a nursing note (None: a new note)."""
    before = before or {}
    out = []
    if before.get("valueString") != after.get("valueString"):
        out.append(FieldChange("Note", str(before.get("valueString") or ""),
                               str(after.get("valueString") or "")))
    if before.get("status") != after.get("status"):
        out.append(FieldChange("Status", str(before.get("status") or "—"),
                               str(after.get("status") or "—")))
    return out


# ---------------------------------------------------------------- drafts


@dataclass(frozen=True, slots=True)
class TaskEdit:
    """What the user changed: None (or "") means "leave as it is"."""

    status: str | None = None
    owner: str | None = None  # "Practitioner/x", UNASSIGNED, or None
    owner_display: str = ""
    note: str = ""

    @property
    def empty(self) -> bool:
        return self.status is None and self.owner is None and not self.note.strip()


@dataclass(frozen=True, slots=True)
class TaskDraft:
    """An edit of one Task, on top of the version `base` it started from."""

    base: Mapping[str, Any]
    edit: TaskEdit = TaskEdit()

    @property
    def ref(self) -> str:
        return resource_ref(self.base)


@dataclass(frozen=True, slots=True)
class NoteDraft:
    """A new nursing note (`base` None) or an amendment of the note `base`."""

    patient_id: str
    text: str
    base: Mapping[str, Any] | None = None

    @property
    def ref(self) -> str | None:
        return resource_ref(self.base) if self.base is not None else None


Draft = TaskDraft | NoteDraft


class DraftBook:
    """Unsaved edits by (record reference, component), in memory only.

    An editor writes its draft here as the user types and removes it after a successful save
    or when the user discards it, so a failed save, a reconnect or a closed window never
    loses it. `clear()` is for a user switch: drafts belong to the person who wrote them.
    """

    def __init__(self) -> None:
        self._drafts: dict[tuple[str, str], Draft] = {}

    def get(self, ref: str, component: str) -> Draft | None:
        return self._drafts.get((ref, component))

    def put(self, ref: str, component: str, draft: Draft) -> None:
        self._drafts[(ref, component)] = draft

    def discard(self, ref: str, component: str) -> None:
        self._drafts.pop((ref, component), None)

    def __len__(self) -> int:
        return len(self._drafts)

    def clear(self) -> None:
        self._drafts.clear()


# ---------------------------------------------------------------- building resources


def apply_task_edit(task: Mapping[str, Any], edit: TaskEdit, author: Clinician,
                    now_s: float) -> dict[str, Any]:
    """`task` with `edit` applied (a new dict; `task` is not changed)."""
    if edit.status is not None and edit.status not in (*TASK_STATUSES, task.get("status")):
        raise EditRefused(f"'{edit.status}' is not a task status the ward sets")
    out = _body_for_update(task)
    if edit.status is not None:
        out["status"] = edit.status
    if edit.owner is not None:
        if edit.owner == UNASSIGNED:
            out.pop("owner", None)
        else:
            owner: dict[str, Any] = {"reference": edit.owner}
            if edit.owner_display:
                owner["display"] = edit.owner_display
            out["owner"] = owner
    note = _check_text(edit.note, "task note")
    if note:
        annotation: dict[str, Any] = {"time": _instant(now_s), "text": note}
        if author.practitioner_ref:
            annotation["authorReference"] = {"reference": author.practitioner_ref,
                                             "display": author.name}
        else:
            annotation["authorString"] = author.name
        out["note"] = [*(task.get("note") or []), annotation]
    out["lastModified"] = _instant(now_s)  # R4 Task.lastModified
    return out


def new_nursing_note(patient_id: str, text: str, author: Clinician, now_s: float
                     ) -> dict[str, Any]:
    """A new nursing-note Observation (see the module docstring)."""
    text = _check_text(text, "note")
    if not text:
        raise EditRefused("The note is empty.")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": codes.LOINC, "code": NURSING_NOTE.code,
                             "display": NURSING_NOTE.display}], "text": "Nursing note"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": _instant(now_s),
        "issued": _instant(now_s),
        "valueString": text,
    }
    if author.practitioner_ref:
        obs["performer"] = [{"reference": author.practitioner_ref, "display": author.name}]
    return obs


def amend_nursing_note(note: Mapping[str, Any], text: str, now_s: float) -> dict[str, Any]:
    """`note` with new text, status `amended` (R4 observation.html#status)."""
    text = _check_text(text, "note")
    if not text:
        raise EditRefused("An amended note cannot be empty.")
    out = _body_for_update(note)
    out["valueString"] = text
    out["status"] = "amended"
    out["issued"] = _instant(now_s)
    return out


def is_nursing_note(resource: Mapping[str, Any]) -> bool:
    return resource.get("resourceType") == "Observation" and any(
        isinstance(c, Mapping) and c.get("system") == codes.LOINC
        and c.get("code") == NURSING_NOTE.code
        for c in (resource.get("code") or {}).get("coding") or ())


def is_author(note: Mapping[str, Any], author: Clinician) -> bool:
    """True if `author` wrote `note` (only authors amend their notes)."""
    return author.practitioner_ref is not None and any(
        isinstance(p, Mapping) and p.get("reference") == author.practitioner_ref
        for p in note.get("performer") or ())


@dataclass(frozen=True, slots=True)
class NursingNotes(PatientKey):
    """Query key: one patient's nursing-note Observations (code search, R4 search.html)."""

    what: ClassVar[str] = "nursing notes"
    types: ClassVar[tuple[str, ...]] = ("Observation",)

    def searches(self) -> tuple[Search, ...]:
        return (Search("Observation", (("patient", f"Patient/{self.patient_id}"),
                                       ("code", f"{codes.LOINC}|{NURSING_NOTE.code}"))),)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Saved:
    """Stored: `resource` is the server's new version."""

    resource: dict[str, Any]
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveConflict:
    """Someone saved first (412). Nothing was written; the draft is kept.

    `theirs` is the server's current version, `yours` what this save would have stored on
    top of the version you started from. `their_changes` / `your_changes` are relative to
    that starting version; `overlap` names fields both changed.
    """

    draft: Draft
    theirs: dict[str, Any]
    yours: dict[str, Any]
    their_changes: tuple[FieldChange, ...]
    your_changes: tuple[FieldChange, ...]

    @property
    def overlap(self) -> frozenset[str]:
        mine = {c.field for c in self.your_changes if c.field != "Note added"}
        return frozenset(mine & {c.field for c in self.their_changes})


@dataclass(frozen=True, slots=True)
class SaveFailed:
    """Not saved (network, permission, invalid data); the draft is kept."""

    draft: Draft
    user_message: str
    retryable: bool = False


SaveResult = Saved | SaveConflict | SaveFailed


# ---------------------------------------------------------------- the service


@dataclass
class RecordEdits:
    """Saves edits for the signed-in clinician through the workstation's FHIR client; saved
    versions go straight into the shared store so every window shows them at once."""

    workstation: Workstation
    author: Clinician
    drafts: DraftBook = field(default_factory=DraftBook)
    saves: int = 0
    conflicts: int = 0

    def _now(self) -> float:
        return self.workstation.clock.wall()

    async def save_task(self, draft: TaskDraft) -> SaveResult:
        """PUT the Task with the edit applied, `If-Match` the version it started from."""
        try:
            yours = apply_task_edit(draft.base, draft.edit, self.author, self._now())
        except EditRefused as exc:
            return SaveFailed(draft, exc.user_message)
        if draft.edit.empty:
            return SaveFailed(draft, "Nothing was changed.")
        return await self._update(draft, yours, task_changes)

    async def save_note(self, draft: NoteDraft) -> SaveResult:
        """Create a new note, or PUT the amendment `If-Match` the version it started from."""
        try:
            if draft.base is None:
                resource = new_nursing_note(draft.patient_id, draft.text, self.author,
                                            self._now())
            else:
                resource = amend_nursing_note(draft.base, draft.text, self._now())
        except EditRefused as exc:
            return SaveFailed(draft, exc.user_message)
        if draft.base is not None:
            return await self._update(draft, resource, note_changes)
        try:
            stored = await self.workstation.fhir.create(resource)
        except FhirError as exc:
            return self._failed(draft, exc)
        return self._saved(stored, note_changes(None, stored))

    async def _update(self, draft: Draft, yours: dict[str, Any], diff: Any) -> SaveResult:
        base = draft.base
        assert base is not None
        version = version_of(base)
        if version is None:
            # Never write without a version to match: that could overwrite a newer one.
            return SaveFailed(draft, "The record's version is not known; reopen it and try "
                              "again.")
        try:
            stored = await self.workstation.fhir.update(yours, if_match_version=version)
        except Conflict:
            self.conflicts += 1
            return await self._conflict(draft, base, yours, diff)
        except FhirError as exc:
            return self._failed(draft, exc)
        return self._saved(stored, diff(base, stored))

    async def _conflict(self, draft: Draft, base: Mapping[str, Any], yours: dict[str, Any],
                        diff: Any) -> SaveResult:
        rtype, rid = str(base.get("resourceType")), str(base.get("id"))
        try:
            theirs = await self.workstation.fhir.read(rtype, rid)
        except FhirError as exc:
            return SaveFailed(draft, "Someone else saved a newer version, which could not be "
                              f"loaded ({exc.user_message}). Your changes are kept.",
                              retryable=True)
        self.workstation.store.apply([theirs])
        log.info("save conflict on %s: version %s is newer than %s", rtype,
                 version_of(theirs), version_of(base))
        return SaveConflict(draft, theirs, yours, tuple(diff(base, theirs)),
                            tuple(diff(base, yours)))

    def _failed(self, draft: Draft, exc: FhirError) -> SaveFailed:
        log.warning("save failed: %s", type(exc).__name__)
        message = exc.user_message
        if isinstance(exc, InvalidResource) and exc.issues:
            message = f"{message}: {exc.issues[0].diagnostics[:200]}"
        return SaveFailed(draft, f"Not saved: {message}. Your changes are kept.",
                          retryable=isinstance(exc, Unreachable) or (exc.status or 0) >= 500)

    def _saved(self, resource: dict[str, Any], changes: Iterable[FieldChange]) -> Saved:
        """Put the server's new version in the shared store and report what changed."""
        self.saves += 1
        self.workstation.store.apply([resource])
        return Saved(resource, tuple(changes))

    # ------------------------------------------------------------------ after a conflict
    @staticmethod
    def rebase(conflict: SaveConflict) -> Draft:
        """The same changes on top of their version (to keep editing, or to save over it
        after the user saw what they changed)."""
        draft = conflict.draft
        return replace(draft, base=conflict.theirs)
