"""Who a presence clientId is: the staff member's name, read from the FHIR server.

Presence shows people by the identity the realtime token binds to their connection, not by
what their presence data says (core/presence.py): the clientId is the logical id of the
signed-in user's `Practitioner` (the relay's and the sandbox's token exchanges derive it from
`fhirUser`). `StaffDirectory.lookup(client_id)` answers from memory and, the first time,
reads `Practitioner/<client_id>` in the background (the app's default scopes include
`user/Practitioner.rs`), then calls `on_change` so presence views repaint with the name.

Staff names are reference data, not patient data: they are kept in memory for the session
like terminology (at most `MAX_ENTRIES`, each for `TTL_S`), never written anywhere and never
logged. A clientId without a readable Practitioner stays unverified (views show the clientId
and "Unverified"); a failed read is retried after `RETRY_S`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from wardsync.core.presence import ClinicianIdentity, PresenceDataError, identity_from_practitioner
from wardsync.core.resources import FHIR_ID
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import Timer
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import FhirError, NotFound

log = logging.getLogger(__name__)

TTL_S = 8 * 3600.0  # a name change shows from the next shift
RETRY_S = 30.0
MAX_ENTRIES = 500  # more people than share any record's presence in a day


@dataclass(slots=True)
class _Entry:
    identity: ClinicianIdentity | None
    until: float  # monotonic time after which it is read again


class StaffDirectory:
    """Names for clientIds (see the module docstring)."""

    def __init__(self, fhir: FhirClient, timer: Timer, on_change: Callable[[], None], *,
                 ttl_s: float = TTL_S, retry_s: float = RETRY_S,
                 max_entries: int = MAX_ENTRIES) -> None:
        self._fhir = fhir
        self._timer = timer
        self._on_change = on_change
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._max = max_entries
        self._entries: dict[str, _Entry] = {}
        self._reading: set[str] = set()
        self._tasks = TaskOwner("staff directory", logger=log, timer=timer)
        self.reads = 0

    def lookup(self, client_id: str) -> ClinicianIdentity | None:
        """The verified identity of `client_id`, or None (not known yet, or not a
        practitioner this server knows); starts a read when there is nothing fresh."""
        entry = self._entries.get(client_id)
        fresh = entry is not None and self._timer.monotonic() < entry.until
        if not fresh and client_id not in self._reading and FHIR_ID.fullmatch(client_id) \
                and not self._tasks.closed:
            self._reading.add(client_id)
            self._tasks.spawn(self._read(client_id), name="staff name read")
        return entry.identity if entry is not None else None

    async def _read(self, client_id: str) -> None:
        identity: ClinicianIdentity | None = None
        keep_s = self._ttl_s
        try:
            self.reads += 1
            identity = identity_from_practitioner(await self._fhir.read("Practitioner",
                                                                         client_id))
            if identity.practitioner_id != client_id:
                identity = None
        except NotFound:
            pass  # not a practitioner here: unverified until the entry lapses
        except PresenceDataError as exc:
            log.info("staff name unreadable (%s)", exc)
        except FhirError as exc:
            log.info("staff name not read (%s): retrying later", type(exc).__name__)
            keep_s = self._retry_s
            previous = self._entries.get(client_id)
            identity = previous.identity if previous is not None else None
        finally:
            self._reading.discard(client_id)
        self._entries.pop(client_id, None)  # re-inserted last: the newest read
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest read
        self._entries[client_id] = _Entry(identity, self._timer.monotonic() + keep_s)
        self._on_change()

    async def aclose(self) -> None:
        await self._tasks.aclose()
        self._entries.clear()


__all__ = ["StaffDirectory"]
