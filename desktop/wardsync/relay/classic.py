"""Classic R4 criteria rest-hook deliveries, in the shapes HAPI FHIR sends.

R4 subscription.html#rest-hook: with a payload the server sends the resource "as a PUT to
`[endpoint]/[type]/[id]`"; without one, "an empty POST to the endpoint". HAPI FHIR also sends
`DELETE [endpoint]/[type]/[id]` for a deleted resource, which carries no version: the relay's
read answers 410 and the delete version comes from the resource's history
(`Announcer.announce_deleted`). There are no event numbers: duplicate
and out-of-order deliveries are harmless because the relay announces a version at most once
and reads the current version before announcing (`Announcer.on_change`); dropped ones (HAPI
gives up after about a minute of retries) are found by the reconciliation poll, and a bare
POST makes the relay run a reconciliation round at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R4 datatypes.html#id


class MalformedDelivery(ValueError):
    """Not a classic delivery this relay can read; the message is a reason code."""


@dataclass(frozen=True, slots=True)
class ClassicChange:
    """What a classic PUT or DELETE reports."""

    ref: str
    version_id: str | None
    deleted: bool


def parse_path(tail: str) -> tuple[str, str]:
    """`Type/id` from the path after the notify endpoint."""
    rtype, _, rid = tail.strip("/").partition("/")
    if not _TYPE.fullmatch(rtype) or not _ID.fullmatch(rid):
        raise MalformedDelivery("bad_path")
    return rtype, rid


def parse_put(tail: str, body: bytes) -> ClassicChange:
    """`PUT [endpoint]/[type]/[id]` with the resource version as JSON."""
    rtype, rid = parse_path(tail)
    try:
        resource = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedDelivery("not_json") from None
    if not isinstance(resource, dict):
        raise MalformedDelivery("not_a_resource")
    if resource.get("resourceType") != rtype or resource.get("id") != rid:
        raise MalformedDelivery("path_mismatch")
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    if version is not None and (not isinstance(version, str) or not _ID.fullmatch(version)):
        raise MalformedDelivery("bad_version")
    return ClassicChange(f"{rtype}/{rid}", version, deleted=False)


def parse_delete(tail: str) -> ClassicChange:
    rtype, rid = parse_path(tail)
    return ClassicChange(f"{rtype}/{rid}", None, deleted=True)
