"""The resource store: the freshest known version of every FHIR resource the app holds.

Pulls can finish out of order (a slow page, a retry, a catch-up overlapping a poke-driven
pull), so a resource is replaced only by a strictly newer version (`is_newer`); applying
the same results in any order ends in the same state. Each `apply` publishes at most one
`ResourcesChanged` listing exactly the references whose content changed, so panels repaint
once per batch and only when something is new.

Resources are the FHIR JSON as plain dicts, validated upstream; treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from wardsync.core.bus import EventBus
from wardsync.core.events import ResourcesChanged
from wardsync.core.fhirtime import parse_instant
from wardsync.core.resources import resource_ref, version_id

Resource = Mapping[str, Any]


def _version_number(meta: Mapping[str, Any] | None) -> int | None:
    if not isinstance(meta, Mapping):
        return None
    version = meta.get("versionId")
    if isinstance(version, str) and version.isascii() and version.isdigit():
        return int(version)
    return None


def _last_updated(meta: Mapping[str, Any] | None) -> datetime | None:
    if not isinstance(meta, Mapping):
        return None
    return parse_instant(meta.get("lastUpdated"))


def is_newer(candidate_meta: Mapping[str, Any] | None, held_meta: Mapping[str, Any] | None) -> bool:
    """True if a resource with `candidate_meta` should replace one with `held_meta`.

    FHIR R4 resource.html#Meta: `versionId` changes with every update; servers (ours, HAPI)
    number versions 1, 2, 3..., so they are compared as integers ("10" > "9"). When both
    versionIds are equal or either is missing, `lastUpdated` decides, compared as instants.
    With nothing to tell them apart the held version stays: replacing equals with equals
    would only cause a useless repaint.
    """
    cand_v, held_v = _version_number(candidate_meta), _version_number(held_meta)
    if cand_v is not None and held_v is not None and cand_v != held_v:
        return cand_v > held_v
    cand_t, held_t = _last_updated(candidate_meta), _last_updated(held_meta)
    if cand_t is not None and held_t is not None:
        return cand_t > held_t
    # Something known beats nothing known: a version with a timestamp replaces one without.
    return cand_t is not None and held_t is None and held_v is None


class ResourceStore:
    """Holds the newest version of each resource and announces changes on the bus."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._by_type: dict[str, dict[str, Resource]] = {}

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_type.values())

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.get(ref) is not None

    def apply(self, resources: Iterable[Resource], *, urgent: bool = False) -> tuple[str, ...]:
        """Keep each resource that is newer than what is held; return the changed refs.

        Publishes one `ResourcesChanged(refs, urgent)` if anything changed. The whole batch
        is checked first, so a resource without a type or id rejects the call (ValueError)
        before anything is stored.
        """
        batch = [(resource_ref(r), r) for r in resources]
        changed: dict[str, None] = {}  # insertion-ordered set
        for ref, resource in batch:
            rtype = ref.split("/", 1)[0]
            held_of_type = self._by_type.setdefault(rtype, {})
            held = held_of_type.get(ref)
            if held is None or is_newer(resource.get("meta"), held.get("meta")):
                held_of_type[ref] = resource
                changed[ref] = None
        refs = tuple(changed)
        if refs:
            self._bus.publish(ResourcesChanged(refs, urgent=urgent))
        return refs

    def get(self, ref: str) -> Resource | None:
        """The held resource for "Type/id", or None."""
        rtype = ref.split("/", 1)[0]
        return self._by_type.get(rtype, {}).get(ref)

    def version(self, ref: str) -> str | None:
        """The held `meta.versionId` of "Type/id" (None if not held or unversioned)."""
        return version_id(self.get(ref))

    def refs(self) -> tuple[str, ...]:
        """Every held reference."""
        return tuple(ref for held in self._by_type.values() for ref in held)

    def of_type(self, rtype: str) -> list[Resource]:
        """All held resources of one type (in the order they were first stored)."""
        return list(self._by_type.get(rtype, {}).values())

    def select(self, rtype: str, predicate: Callable[[Resource], bool]) -> list[Resource]:
        """Held resources of `rtype` for which `predicate` is true."""
        return [r for r in self._by_type.get(rtype, {}).values() if predicate(r)]

    def remove(self, refs: Iterable[str]) -> tuple[str, ...]:
        """Drop these resources (deleted on the server); one event for those actually held."""
        removed: dict[str, None] = {}
        for ref in refs:
            held = self._by_type.get(ref.split("/", 1)[0])
            if held is not None and held.pop(ref, None) is not None:
                removed[ref] = None
        out = tuple(removed)
        if out:
            self._bus.publish(ResourcesChanged(out))
        return out

    def clear(self) -> tuple[str, ...]:
        """Drop all clinical data (user switch, lock); one event listing every dropped ref."""
        dropped = self.refs()
        self._by_type = {}
        if dropped:
            self._bus.publish(ResourcesChanged(dropped))
        return dropped
