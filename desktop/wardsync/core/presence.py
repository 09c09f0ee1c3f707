"""Presence on record channels, as plain data: who is viewing or editing which record.

Channel names follow docs/architecture.md §3.3: `record:<ResourceType>:<id>` carries presence
for one record. Each workstation is ONE member of a record's channel however many of its
windows show the record; the member's data says who is signed in there and what they are doing:

    {"v": 1, "practitioner": "demo-nurse", "name": "Nurse Demo Nightingale", "role": "Nurse",
     "state": "editing", "since": 1767225600000, "conn": "<connectionId>",
     "claims": [{"component": "task", "claimedAt": 1767225630000,
                 "expiresAt": 1767225750000}]}

`conn` is the realtime connection the data was written for. Claims count only on that
connection: after a failed resume (RTN15c) the SDK re-enters its members on the new
connection with the data it last had (RTP17i), which may still hold a claim its workstation
has since ended; such a stale claim must not take a lock back from whoever holds it now. The
workstation then re-sends its current data for the new connection.

Identity comes from the member's clientId, never from its data: the realtime token binds the
clientId to the signed-in user's `fhirUser` logical id (relay/token_exchange.py
`client_id_for`, the sandbox's exchange alike), and a member's `name`/`role` are only what
that member claims about itself. A member whose `practitioner` differs from its clientId is
unreadable; the name and role shown for any other member are the `person` the workstation read
from `Practitioner/<clientId>` (sync/staff.py), else the clientId itself, marked unverified.
Claims are ordered by the hub's timestamps, not by `claimedAt` (core/locks.py).

No patient data travels: the record is named only by its logical id (in the channel name, as a
poke would name it), the people named are staff, components are fixed words of the app, and
times are epoch milliseconds. Data arriving from other workstations is parsed strictly (as
pokes are, core/pokes.py): unknown keys, over-long text or malformed claims make the member
"unreadable" — still counted as present, never trusted for a lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from wardsync.core.events import Event
from wardsync.core.locks import (
    MAX_CLAIM_LEAD_MS,
    LockClaim,
    LockView,
    lock_view,
    next_expiry_ms,
)
from wardsync.core.resources import FHIR_ID, RESOURCE_TYPE

RECORD_CHANNEL_PREFIX: Final = "record"
PRESENCE_SCHEMA: Final = 1
VIEWING: Final = "viewing"
EDITING: Final = "editing"
MAX_NAME_CHARS: Final = 80
MAX_ROLE_CHARS: Final = 40
MAX_CLAIMS: Final = 8
MAX_EPOCH_MS: Final = 2**53 - 1  # exact in every JSON implementation (RFC 8259 §6)
UNKNOWN_NAME: Final = "Unknown user"
UNVERIFIED_ROLE: Final = "Unverified"

PresenceState = Literal["viewing", "editing"]

_COMPONENT = re.compile(r"[a-z][a-z0-9-]{0,31}")
_WIRE_KEYS = frozenset({"v", "practitioner", "name", "role", "state", "since", "conn",
                        "claims"})
_CONNECTION_ID = re.compile(r"[A-Za-z0-9\-_.:!~]{1,100}")
_CLAIM_KEYS = frozenset({"component", "claimedAt", "expiresAt"})
# Titles a ward puts before a name; not initials, and the first two say the role.
_TITLES = {"dr": "Doctor", "doctor": "Doctor", "nurse": "Nurse", "sister": "Nurse",
           "charge": "", "prof": "Doctor", "professor": "Doctor", "mr": "", "mrs": "",
           "ms": "", "miss": "", "mx": ""}
DEFAULT_ROLE: Final = "Clinician"


class PresenceDataError(ValueError):
    """Presence data that does not follow the schema (the reason is safe to log)."""


# ---------------------------------------------------------------- channel names


def record_channel(resource_type: str, id: str) -> str:
    """`record:<ResourceType>:<id>` for one record (ValueError on a malformed type or id)."""
    if not RESOURCE_TYPE.fullmatch(resource_type) or not FHIR_ID.fullmatch(id):
        raise ValueError("a record channel needs a FHIR resource type and logical id")
    return f"{RECORD_CHANNEL_PREFIX}:{resource_type}:{id}"


def record_channel_of_ref(ref: str) -> str:
    """The record channel of a relative reference "Task/123"."""
    rtype, _, rid = ref.partition("/")
    return record_channel(rtype, rid)


def record_of_channel(channel: str) -> tuple[str, str]:
    """(resource type, id) of a record channel name (ValueError otherwise)."""
    prefix, _, rest = channel.partition(":")
    rtype, _, rid = rest.partition(":")
    if prefix != RECORD_CHANNEL_PREFIX or not RESOURCE_TYPE.fullmatch(rtype) \
            or not FHIR_ID.fullmatch(rid):
        raise ValueError("not a record channel")
    return rtype, rid


# ---------------------------------------------------------------- who


def name_words(display_name: str) -> list[str]:
    """The words of a name without the titles in front of it ("Dr", "Nurse")."""
    words = display_name.replace(".", " ").split()
    while len(words) > 1 and words[0].lower() in _TITLES:
        words = words[1:]
    return words


def initials(display_name: str) -> str:
    """Two letters for an avatar: first and last name, titles skipped ("Dr Ann Lee" -> "AL")."""
    words = [w for w in name_words(display_name) if w[:1].isalpha()]
    if not words:
        return "?"
    if len(words) == 1:
        return words[0][:2].upper()
    return (words[0][0] + words[-1][0]).upper()


def role_from_title(display_name: str) -> str:
    """The role a ward reads from a name's title ("Dr ..." -> "Doctor"), else "Clinician"."""
    words = display_name.replace(".", " ").split()
    if words and _TITLES.get(words[0].lower()):
        return _TITLES[words[0].lower()]
    return DEFAULT_ROLE


def _text(value: object, limit: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or not value.isprintable():
        raise PresenceDataError(f"bad_{what}")
    return value.strip()


def _epoch_ms(value: object, what: str) -> int:
    # bool is an int in Python: refuse it explicitly.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_EPOCH_MS:
        raise PresenceDataError(f"bad_{what}")
    return value


@dataclass(frozen=True, slots=True)
class ClinicianIdentity:
    """The signed-in user as other workstations see them: ids and names of staff only."""

    practitioner_id: str
    display_name: str
    role: str = DEFAULT_ROLE

    def __post_init__(self) -> None:
        if not FHIR_ID.fullmatch(self.practitioner_id):
            raise PresenceDataError("bad_practitioner")
        _text(self.display_name, MAX_NAME_CHARS, "name")
        _text(self.role, MAX_ROLE_CHARS, "role")

    @classmethod
    def for_user(cls, practitioner_id: str | None, display_name: str,
                 role: str | None = None) -> ClinicianIdentity:
        """From the sign-in token's `fhirUser` id and name; the role is given or read from
        the name's title (the SMART token response carries no role claim)."""
        if not practitioner_id:
            raise PresenceDataError("bad_practitioner")
        name = display_name.strip() or practitioner_id
        return cls(practitioner_id, name[:MAX_NAME_CHARS],
                   (role or role_from_title(name))[:MAX_ROLE_CHARS])

    @property
    def initials(self) -> str:
        return initials(self.display_name)


def identity_from_practitioner(resource: Mapping[str, Any]) -> ClinicianIdentity:
    """The identity a `Practitioner` resource gives its logical id: the first name's `text`,
    else prefix, given and family names; the role is read from the name's title
    (PresenceDataError if the resource has no usable id or name)."""
    pid = resource.get("id")
    if resource.get("resourceType") != "Practitioner" or not isinstance(pid, str):
        raise PresenceDataError("bad_practitioner")
    for name in resource.get("name") or ():
        if not isinstance(name, Mapping):
            continue
        text = name.get("text")
        if not isinstance(text, str) or not text.strip():
            parts = [*(name.get("prefix") or ()), *(name.get("given") or ()),
                     name.get("family") or ""]
            text = " ".join(p for p in parts if isinstance(p, str) and p).strip()
        if text:
            return ClinicianIdentity.for_user(pid, _text(text, 10 * MAX_NAME_CHARS, "name"))
    raise PresenceDataError("bad_name")


# ---------------------------------------------------------------- what they are doing


@dataclass(frozen=True, slots=True)
class Claim:
    """This member edits `component` since `claimed_at_ms`, until `expires_at_ms`."""

    component: str
    claimed_at_ms: int
    expires_at_ms: int

    def __post_init__(self) -> None:
        if not _COMPONENT.fullmatch(self.component):
            raise PresenceDataError("bad_component")
        _epoch_ms(self.claimed_at_ms, "claim_time")
        _epoch_ms(self.expires_at_ms, "claim_expiry")


@dataclass(frozen=True, slots=True)
class PresenceData:
    """One member's presence data (the schema in the module docstring)."""

    clinician: ClinicianIdentity
    since_ms: int
    claims: tuple[Claim, ...] = ()
    connection_id: str = ""  # the connection this data was written for ("" unknown)

    @property
    def state(self) -> PresenceState:
        return EDITING if self.claims else VIEWING

    def claim(self, component: str) -> Claim | None:
        return next((c for c in self.claims if c.component == component), None)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": PRESENCE_SCHEMA,
            "practitioner": self.clinician.practitioner_id,
            "name": self.clinician.display_name,
            "role": self.clinician.role,
            "state": self.state,
            "since": self.since_ms,
            "conn": self.connection_id,
            "claims": [{"component": c.component, "claimedAt": c.claimed_at_ms,
                        "expiresAt": c.expires_at_ms} for c in self.claims],
        }

    @classmethod
    def from_wire(cls, data: object) -> PresenceData:
        """Parse strictly; PresenceDataError (with a loggable reason) on anything else."""
        if not isinstance(data, Mapping):
            raise PresenceDataError("not_an_object")
        if set(data) - _WIRE_KEYS:
            raise PresenceDataError("unknown_field")
        if data.get("v") != PRESENCE_SCHEMA:
            raise PresenceDataError("bad_version")
        practitioner = data.get("practitioner")
        if not isinstance(practitioner, str) or not FHIR_ID.fullmatch(practitioner):
            raise PresenceDataError("bad_practitioner")
        clinician = ClinicianIdentity(
            practitioner, _text(data.get("name"), MAX_NAME_CHARS, "name"),
            _text(data.get("role"), MAX_ROLE_CHARS, "role"))
        raw_claims = data.get("claims", [])
        if not isinstance(raw_claims, list) or len(raw_claims) > MAX_CLAIMS:
            raise PresenceDataError("bad_claims")
        claims: list[Claim] = []
        for raw in raw_claims:
            if not isinstance(raw, Mapping) or set(raw) != _CLAIM_KEYS:
                raise PresenceDataError("bad_claim")
            component = raw["component"]
            if not isinstance(component, str):
                raise PresenceDataError("bad_component")
            claims.append(Claim(component, _epoch_ms(raw["claimedAt"], "claim_time"),
                                _epoch_ms(raw["expiresAt"], "claim_expiry")))
        if len({c.component for c in claims}) != len(claims):
            raise PresenceDataError("duplicate_claim")
        state = data.get("state")
        if state != (EDITING if claims else VIEWING):
            raise PresenceDataError("bad_state")
        conn = data.get("conn", "")
        if not isinstance(conn, str) or (conn and not _CONNECTION_ID.fullmatch(conn)):
            raise PresenceDataError("bad_connection")
        return cls(clinician, _epoch_ms(data.get("since"), "since"), tuple(claims), conn)


# ---------------------------------------------------------------- members of one record


ClaimKey = tuple[str, str, int]  # (clientId, component, claimedAt): one claim of one user


@dataclass(frozen=True, slots=True)
class Member:
    """One presence member: a user at one workstation (Ably member key connectionId:clientId).

    `data` is None when the member's data could not be read (`problem` says why).
    `timestamp_ms` is the hub's timestamp of the member's latest presence message (0: unknown);
    `person` the identity this workstation verified for the clientId (see the module
    docstring); `name` and `role` are what views show, and never come from `data`.
    """

    client_id: str
    connection_id: str
    data: PresenceData | None
    problem: str = ""
    timestamp_ms: int = 0
    person: ClinicianIdentity | None = None

    @property
    def key(self) -> str:
        return f"{self.connection_id}:{self.client_id}"

    @property
    def name(self) -> str:
        if self.person is not None:
            return self.person.display_name
        return self.client_id if FHIR_ID.fullmatch(self.client_id) else UNKNOWN_NAME

    @property
    def role(self) -> str:
        return self.person.role if self.person is not None else UNVERIFIED_ROLE

    @property
    def verified(self) -> bool:
        return self.person is not None

    @property
    def initials(self) -> str:
        return initials(self.name)

    @property
    def state(self) -> PresenceState:
        return self.data.state if self.data else VIEWING

    @classmethod
    def from_wire(cls, client_id: str, connection_id: str, data: object,
                  timestamp_ms: int = 0) -> Member:
        try:
            parsed = PresenceData.from_wire(data)
        except PresenceDataError as exc:
            return cls(client_id, connection_id, None, str(exc), timestamp_ms)
        if parsed.clinician.practitioner_id != client_id:
            # Someone else's name in one's own data: a spoof, or a misconfigured exchange.
            return cls(client_id, connection_id, None, "practitioner_mismatch", timestamp_ms)
        return cls(client_id, connection_id, parsed, "", timestamp_ms)

    def claim_keys(self) -> list[ClaimKey]:
        """The keys of the claims that count (see `lock_claims`)."""
        if self.data is None or self.data.connection_id != self.connection_id:
            return []
        return [(self.client_id, c.component, c.claimed_at_ms) for c in self.data.claims]

    def lock_claims(self, ranks: Mapping[ClaimKey, int] | None = None) -> list[LockClaim]:
        """The member's claims, if its data was written for its own connection (see the
        module docstring: a re-entered stale claim does not count), each in the order given
        by `ranks` (the hub's timestamp when this workstation first saw it; the member's
        latest message's timestamp if not recorded) and lapsing no later than
        MAX_CLAIM_LEAD_MS after the member's latest message (core/locks.py)."""
        if self.data is None or self.data.connection_id != self.connection_id:
            return []
        ranks = ranks or {}
        cap = self.timestamp_ms + MAX_CLAIM_LEAD_MS if self.timestamp_ms else None
        return [LockClaim(c.component, self.client_id, self.connection_id,
                          ranks.get((self.client_id, c.component, c.claimed_at_ms),
                                    self.timestamp_ms),
                          c.expires_at_ms if cap is None else min(c.expires_at_ms, cap))
                for c in self.data.claims]


@dataclass(frozen=True, slots=True)
class RecordPresence:
    """Everyone present on one record channel, as this workstation sees it.

    `own_connection_ids` are this workstation's connections, the current one and earlier
    ones: after a failed resume (RTN15c) the hub keeps the old connection's member until its
    grace period ends, and that ghost is still us. `synced` is False until the attach-time
    SYNC completed (RTP18), so a view can say "checking who is here" instead of "nobody else".
    """

    channel: str
    members: tuple[Member, ...] = ()
    own_connection_ids: frozenset[str] = frozenset()
    synced: bool = False
    claim_ranks: Mapping[ClaimKey, int] = field(default_factory=dict)

    def is_own(self, member: Member) -> bool:
        return member.connection_id in self.own_connection_ids

    def others(self) -> tuple[Member, ...]:
        """Members at other workstations, longest present first (the avatar stack)."""
        out = [m for m in self.members if not self.is_own(m)]
        out.sort(key=lambda m: (m.data.since_ms if m.data else 0, m.name, m.key))
        return tuple(out)

    def claims(self) -> list[LockClaim]:
        return [claim for m in self.members for claim in m.lock_claims(self.claim_ranks)]

    def lock(self, component: str, now_ms: int) -> LockView:
        return lock_view(self.claims(), component, now_ms)

    def member_of(self, claim: LockClaim | None) -> Member | None:
        if claim is None:
            return None
        key = f"{claim.connection_id}:{claim.client_id}"
        return next((m for m in self.members if m.key == key), None)

    def next_expiry_ms(self, now_ms: int) -> int | None:
        return next_expiry_ms(self.claims(), now_ms)


def members_from_wire(entries: Iterable[tuple[str | None, str | None, object, int]]
                      ) -> tuple[Member, ...]:
    """Members from (clientId, connectionId, data, hub timestamp ms) tuples; items lacking
    either id are ignored, as the SDK ignores them (RTP2)."""
    return tuple(Member.from_wire(cid, conn, data, ts) for cid, conn, data, ts in entries
                 if cid and conn)


# ---------------------------------------------------------------- bus events


@dataclass(frozen=True, slots=True)
class PresenceChanged(Event):
    """Who is present on `channel`, or what they are doing, changed (or a lock expired)."""

    channel: str


LockEndReason = Literal["idle", "disconnected", "taken", "left"]


@dataclass(frozen=True, slots=True)
class EditLockEnded(Event):
    """This workstation's claim on `component` of `channel` ended without the user asking.

    `reason`: "idle" (no input for the idle limit), "disconnected" (realtime down longer than
    other workstations keep our member), "taken" (another claim turned out earlier) or "left"
    (the record's presence was closed).
    """

    channel: str
    component: str
    reason: LockEndReason
