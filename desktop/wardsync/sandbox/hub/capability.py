"""Ably capabilities: which operations a key or token may perform on which channels.

A capability maps resource specifiers to operation lists (Ably docs "Capabilities",
TokenRequest `capability`). Wildcards replace whole `:`-separated segments: `*` alone matches
every channel, `ward:*` matches `ward:3` and `ward:3:beds` but not `ward`, and `a:*:c`
matches `a:b:c`. The operation `*` grants every operation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from wardsync.sandbox.hub.wire import Flag

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
PRESENCE = "presence"
HISTORY = "history"
ANY = "*"

# Ably's operation names; the hub enforces the first four, the others are accepted so that
# capabilities written for real Ably still parse.
KNOWN_OPERATIONS = frozenset({
    PUBLISH, SUBSCRIBE, PRESENCE, HISTORY, ANY, "channel-metadata", "stats", "push-subscribe",
    "push-admin", "object-subscribe", "object-publish", "annotation-publish",
    "annotation-subscribe",
})
ALL_OPERATIONS = frozenset(KNOWN_OPERATIONS - {ANY})


def resource_matches(resource: str, channel: str) -> bool:
    """True if the resource specifier `resource` covers `channel` (segment wildcards)."""
    if resource == ANY:
        return True
    wanted = resource.split(":")
    actual = channel.split(":")
    for index, segment in enumerate(wanted):
        if segment == ANY and index == len(wanted) - 1:
            # A trailing wildcard stands for one or more remaining segments.
            return len(actual) > index
        if index >= len(actual):
            return False
        if segment not in (ANY, actual[index]):
            return False
    return len(actual) == len(wanted)


class Capability:
    """An immutable, validated capability."""

    __slots__ = ("_grants",)

    def __init__(self, grants: Mapping[str, frozenset[str]]) -> None:
        self._grants = dict(grants)

    @classmethod
    def parse(cls, value: str | Mapping[str, Sequence[str]] | None) -> Capability:
        """Build from a dict or its JSON text; None means everything (a root key's default).

        Raises ValueError for anything that is not a map of resource -> known operations.
        """
        if value is None:
            return FULL
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError("capability is not valid JSON") from exc
        if not isinstance(value, Mapping) or not value:
            raise ValueError("capability must be a non-empty map of resource to operations")
        grants: dict[str, frozenset[str]] = {}
        for resource, operations in value.items():
            if not isinstance(resource, str) or not resource:
                raise ValueError("capability resources must be non-empty strings")
            if isinstance(operations, str):
                operations = [operations]
            if not isinstance(operations, Sequence) or not operations:
                raise ValueError(f"capability for {resource!r} must list operations")
            for op in operations:
                if not isinstance(op, str) or op not in KNOWN_OPERATIONS:
                    raise ValueError(f"unknown capability operation {op!r}")
            grants[resource] = frozenset(operations)
        return cls(grants)

    def operations(self, channel: str) -> frozenset[str]:
        """Every operation granted on `channel` (`*` expanded)."""
        ops: set[str] = set()
        for resource, granted in self._grants.items():
            if resource_matches(resource, channel):
                ops |= granted
        if ANY in ops:
            return ALL_OPERATIONS
        return frozenset(ops)

    def allows(self, channel: str, operation: str) -> bool:
        return operation in self.operations(channel)

    def to_dict(self) -> dict[str, list[str]]:
        return {resource: sorted(ops) for resource, ops in sorted(self._grants.items())}

    def to_json(self) -> str:
        """Canonical JSON text, as the SDK's `Capability.c14n` writes it."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Capability) and self._grants == other._grants

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Capability({self.to_json()})"


FULL = Capability({ANY: frozenset({ANY})})


def modes_for(operations: frozenset[str]) -> Flag:
    """Channel modes (TR3) a connection may have given its operations on that channel."""
    modes = Flag(0)
    if PUBLISH in operations:
        modes |= Flag.PUBLISH
    if SUBSCRIBE in operations:
        modes |= Flag.SUBSCRIBE | Flag.PRESENCE_SUBSCRIBE
    if PRESENCE in operations:
        modes |= Flag.PRESENCE
    return modes
