"""Reading history Bundle entries (R4 http.html#history), the relay's view of deletes.

A search never returns a deleted resource and a read answers 410 Gone, so the relay learns
what a delete was from history: `GET [type]/[id]/_history` (the delete and the version
before it, whose patient the delete is announced for) and, in the reconciliation poll,
`GET [type]/_history?_since=` (every version of a type since the cursor, deletes included).
A delete is an entry with a `request` (method DELETE) and no `resource`; its version is in
`response.etag` (`W/"3"`, R4 http.html#versioning) or a `_history/3` URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wardsync.core.fhirtime import parse_instant

_TYPE_ID = re.compile(r"(?:.*/)?(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
                      r"(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?/?")
_ETAG = re.compile(r'(?:W/)?"(?P<vid>[A-Za-z0-9\-.]{1,64})"')
MAX_URL_CHARS = 2048


@dataclass(frozen=True, slots=True)
class HistoryVersion:
    """One entry of a history: which resource, which version, whether it is the delete."""

    ref: str  # "Type/id"
    version_id: str | None
    deleted: bool
    last_modified: str | None  # FHIR instant
    resource: Mapping[str, Any] | None  # as the server sent it (not validated); None: delete

    @property
    def number(self) -> int:
        """The version as a number, for ordering (-1 when it is not one)."""
        vid = self.version_id
        return int(vid) if vid is not None and vid.isdigit() and len(vid) <= 18 else -1


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _url_parts(value: Any) -> re.Match[str] | None:
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        return None
    return _TYPE_ID.fullmatch(value.split("?", 1)[0])


def read_entry(entry: Mapping[str, Any]) -> HistoryVersion | None:
    """The version an entry reports, or None when it names no resource version."""
    request, response = _mapping(entry.get("request")), _mapping(entry.get("response"))
    deleted = request.get("method") == "DELETE"
    resource = entry.get("resource")
    if deleted or not isinstance(resource, Mapping):
        resource = None
    ref = version = None
    modified = response.get("lastModified")
    if resource is not None:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        meta = _mapping(resource.get("meta"))
        if isinstance(rtype, str) and isinstance(rid, str):
            ref = f"{rtype}/{rid}"
        vid = meta.get("versionId")
        version = vid if isinstance(vid, str) else None
        modified = modified or meta.get("lastUpdated")
    for url in (request.get("url"), entry.get("fullUrl"), response.get("location")):
        match = _url_parts(url)
        if match is None:
            continue
        ref = ref or f"{match.group('type')}/{match.group('id')}"
        version = version or match.group("vid")
    etag = response.get("etag")
    if version is None and isinstance(etag, str):
        match_etag = _ETAG.fullmatch(etag.strip())
        version = match_etag.group("vid") if match_etag else None
    if ref is None or (resource is None and not deleted):
        return None
    return HistoryVersion(ref, version, deleted,
                          modified if isinstance(modified, str) else None, resource)


def versions_of(entries: list[dict[str, Any]], ref: str) -> list[HistoryVersion]:
    """The versions of `ref` among `entries`, newest first (whatever order the server used)."""
    found = [v for v in map(read_entry, entries) if v is not None and v.ref == ref]
    return sorted(found, key=lambda v: v.number, reverse=True)


def modified_at(version: HistoryVersion) -> float | None:
    """When the version was written (epoch seconds), when the server said."""
    instant = parse_instant(version.last_modified)
    return instant.timestamp() if instant is not None else None
