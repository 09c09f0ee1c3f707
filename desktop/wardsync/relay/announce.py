"""From a changed resource version to one numbered poke on its ward (docs/relay.md).

Whatever told the relay about a change (the reconciliation poll, FHIR Subscriptions) ends
here: skip versions already announced, find the patient's ward, classify with the shared
rules (`core.poke_rules`, the site's critical limits) and hand the poke to the publisher,
which numbers it durably. A delete is a version too (R4 http.html#delete): announced once,
as `RESOURCE_DELETED` with the delete's version id, on the ward of the patient its last
version named (read from the resource's history, relay/history.py). Nothing here logs more
than a reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit
from wardsync.core.fhirtime import parse_instant
from wardsync.core.poke_rules import (
    classify_change,
    is_released_report,
    patient_id_of,
    report_result_refs,
)
from wardsync.core.pokes import (
    CRITICAL_LAB_RESULT,
    POKE_RESOURCE_TYPES,
    RESOURCE_DELETED,
    ROUTINE,
    Poke,
)
from wardsync.fhir.errors import InvalidResource, NotFound
from wardsync.fhir.validation import validate_resource
from wardsync.relay.fhir_access import RelayFhir
from wardsync.relay.history import HistoryVersion, modified_at, versions_of
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.publisher import PokePublisher
from wardsync.relay.state import RelayStore, StoredPoke
from wardsync.relay.wards import WardResolver

log = logging.getLogger(__name__)

# Told of each critical report version announced: (report, its results by reference, ward).
CriticalWatcher = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]], str], object]


def version_of(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """("Type/id", versionId) of a resource as the server stored it, or None."""
    meta = resource.get("meta") or {}
    rtype, rid, vid = resource.get("resourceType"), resource.get("id"), meta.get("versionId")
    if isinstance(rtype, str) and isinstance(rid, str) and isinstance(vid, str):
        return f"{rtype}/{rid}", vid
    return None


class Announcer:
    """Turns resource versions into pokes; each version at most once."""

    def __init__(
        self,
        *,
        fhir: RelayFhir,
        wards: WardResolver,
        state: RelayStore,
        publisher: PokePublisher,
        metrics: RelayMetrics,
        default_ward: str | None = None,
        limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS,
        on_critical: CriticalWatcher | None = None,
    ) -> None:
        self._fhir = fhir
        self._wards = wards
        self._state = state
        self._publisher = publisher
        self._metrics = metrics
        self._default_ward = default_ward
        self._limits = limits
        self._on_critical = on_critical

    async def on_change(self, ref: str, version_id: str | None, *,
                        source: str) -> StoredPoke | None:
        """A notification named `ref` (and maybe its version): read it and announce it."""
        rtype, _, rid = ref.partition("/")
        if rtype not in POKE_RESOURCE_TYPES or not rid:
            return None
        if version_id is not None and self._state.has_version(ref, version_id):
            self._metrics.duplicates.labels(source).inc()
            return None
        try:
            resource = await self._fhir.read(rtype, rid)
        except NotFound:
            # 410 Gone (or 404): the change was a delete, or it never was readable.
            return await self.announce_deleted(ref, source=source)
        # The server may already hold a newer version: announcing the newest covers both.
        return await self.announce(resource, source=source)

    async def announce_deleted(self, ref: str, *, source: str,
                               version_id: str | None = None) -> StoredPoke | None:
        """`ref` was deleted (a read answers 410, or the history poll saw a DELETE entry,
        `version_id`): announce its newest delete unless it already was. The patient and ward
        are those of the version before the delete (`GET [type]/[id]/_history`)."""
        if ref.partition("/")[0] not in POKE_RESOURCE_TYPES:
            return None
        if version_id is not None and self._state.has_version(ref, version_id):
            self._metrics.duplicates.labels(source).inc()
            return None
        try:
            versions = versions_of((await self._fhir.history(ref)).entries, ref)
        except NotFound:
            log.info("%s: no such resource (never readable); nothing to announce", ref)
            return None
        if not versions or not versions[0].deleted:
            # Created again since (its own notification or the poll announces that version).
            log.info("%s is not deleted (any more); nothing to announce", ref)
            return None
        gone = versions[0]
        if gone.version_id is None or not gone.version_id.isdigit():
            log.warning("%s: the server's history does not say the delete's version; "
                        "not announced", ref)
            return None
        if self._state.has_version(ref, gone.version_id):
            self._metrics.duplicates.labels(source).inc()
            return None
        self._metrics.changes.labels(source).inc()
        last = self._last_version(ref, versions[1:])
        rtype, _, rid = ref.partition("/")
        patient_id = patient_id_of(last) if last is not None else None
        draft = Poke(type=RESOURCE_DELETED, resource_type=rtype, id=rid,
                     version_id=gone.version_id, patient_id=patient_id, seq=1,
                     priority=ROUTINE)
        return await self._route(draft, is_encounter=rtype == "Encounter",
                                 changed_at=modified_at(gone))

    @staticmethod
    def _last_version(ref: str, older: list[HistoryVersion]) -> dict[str, Any] | None:
        """The newest readable version before the delete (validated: its patient reference
        decides where the delete is announced)."""
        for version in older:
            if version.resource is None:
                continue
            try:
                return validate_resource(version.resource)
            except InvalidResource:
                log.warning("%s/_history/%s fails R4 validation; looking further back", ref,
                            version.version_id)
        return None

    async def announce(self, resource: Mapping[str, Any], *, source: str) -> StoredPoke | None:
        """Announce this stored version of `resource` unless it already was."""
        version = version_of(resource)
        if version is None or resource["resourceType"] not in POKE_RESOURCE_TYPES:
            return None
        ref, version_id = version
        if self._state.has_version(ref, version_id):
            self._metrics.duplicates.labels(source).inc()
            return None
        self._metrics.changes.labels(source).inc()
        results = await self._results_of(resource)
        ptype, priority = classify_change(resource, results, self._limits)
        draft = Poke(type=ptype, resource_type=resource["resourceType"], id=resource["id"],
                     version_id=version_id, patient_id=patient_id_of(resource), seq=1,
                     priority=priority)
        stored = await self._route(draft, is_encounter=resource["resourceType"] == "Encounter",
                                   changed_at=self._changed_at(resource))
        ward = stored.ward if stored is not None else None
        if (self._on_critical is not None and ptype == CRITICAL_LAB_RESULT and ward is not None
                and resource["resourceType"] == "DiagnosticReport"):
            # Server-side escalation watches its acknowledgement (relay/escalation.py).
            self._on_critical(resource, results, ward)
        return stored

    async def _route(self, draft: Poke, *, is_encounter: bool,
                     changed_at: float | None) -> StoredPoke | None:
        """Number `draft` on its patient's ward (and, for an Encounter, the ward the patient
        was known to be on); the poke of the current ward is returned."""
        previous_ward = self._wards.forget(draft.patient_id) if is_encounter else None
        ward = await self._ward_for(draft.patient_id)
        if ward is None and previous_ward is None:
            self._metrics.unrouted.labels("no_ward").inc()
            log.info("%s/_history/%s: no ward to announce it on", draft.ref, draft.version_id)
            return None
        stored: StoredPoke | None = None
        # A patient who left a ward (transfer, discharge) is news there too: the Encounter
        # version is announced on the ward they were on (when known) as well as the new one.
        for target in dict.fromkeys(w for w in (ward, previous_ward) if w is not None):
            poke = self._publisher.submit(target, draft, changed_at=changed_at)
            stored = stored or poke
        return stored

    async def _ward_for(self, patient_id: str | None) -> str | None:
        """The patient's ward; `relay.default_ward` for a resource without a patient, and for
        a patient with no active stay on any ward (a transfer in progress, an admission not
        yet recorded: a critical result for them must reach someone)."""
        if patient_id is not None:
            ward = await self._wards.ward_of(patient_id)
            if ward is not None:
                return ward
        return self._default_ward

    async def _results_of(self, resource: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        if not is_released_report(resource):
            return results
        for ref in report_result_refs(resource):
            try:
                results[ref] = await self._fhir.read("Observation", ref.split("/", 1)[1])
            except NotFound:
                log.info("result %s of a report is not readable; assessed without it", ref)
        return results

    @staticmethod
    def _changed_at(resource: Mapping[str, Any]) -> float | None:
        instant = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
        return instant.timestamp() if instant is not None else None
