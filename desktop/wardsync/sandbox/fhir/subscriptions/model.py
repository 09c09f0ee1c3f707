"""What a stored Subscription asks for, read from its JSON into a `SubscriptionSpec`.

Two kinds share the R4 Subscription resource:

- topic-based (Subscriptions R5 Backport IG STU 1.1, profile `backport-subscription`):
  `criteria` is a topic canonical (`topics.py`), narrowed by `backport-filter-criteria`
  extensions on `_criteria`; the channel carries `backport-heartbeat-period`,
  `backport-timeout` and `backport-max-count`, and `_payload` carries
  `backport-payload-content` (`empty`, `id-only`, `full-resource`);
- classic (R4 subscription.html): `criteria` is a search URL (`Observation?status=final`),
  notifications are HAPI-style PUT/POST/DELETE requests (`classic.py`).

`parse_subscription` raises `SubscriptionRefused` with one message per problem; the
FHIR validator turns them into a 422 OperationOutcome before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wardsync.sandbox.fhir.fhir_dates import parse_date_range
from wardsync.sandbox.fhir.search_params import SEARCH_PARAMETERS
from wardsync.sandbox.fhir.subscriptions.criteria import Criteria, InvalidCriteria, parse_criteria
from wardsync.sandbox.fhir.subscriptions.topics import Topic, topic_by_url

_IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
# Extension URLs, Backport IG STU 1.1 "Artifacts" (StructureDefinition-<name>.html).
FILTER_CRITERIA_URL = f"{_IG}backport-filter-criteria"
HEARTBEAT_PERIOD_URL = f"{_IG}backport-heartbeat-period"
TIMEOUT_URL = f"{_IG}backport-timeout"
MAX_COUNT_URL = f"{_IG}backport-max-count"
PAYLOAD_CONTENT_URL = f"{_IG}backport-payload-content"
SUBSCRIPTION_PROFILE = f"{_IG}backport-subscription"

CONTENT_CODES = ("empty", "id-only", "full-resource")  # backport-content-value-set
CHANNEL_TYPES = ("rest-hook", "websocket")
STATUSES = ("requested", "active", "error", "off")  # R4 valueset-subscription-status
CLIENT_STATUSES = ("requested", "off")  # what a client may ask for; the server does the rest

HEARTBEAT_MIN_S = 1
HEARTBEAT_MAX_S = 86_400
DEFAULT_TIMEOUT_S = 10
TIMEOUT_MAX_S = 60
DEFAULT_MAX_COUNT = 50  # events per notification Bundle
MAX_COUNT_LIMIT = 500
MAX_HEADERS = 20
_HEADER = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}):[ \t]*([\x20-\x7e]{0,4096})$")
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding",
                                "connection"})


class SubscriptionRefused(ValueError):
    """A Subscription this server cannot honour; `problems` are (element, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A Subscription as this server acts on it."""

    id: str
    version_id: str
    status: str
    topic: Topic | None  # None for a classic subscription
    criteria: tuple[Criteria, ...]  # topic filters (all must match) or the classic search
    channel_type: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    payload_mime: str | None
    content: str  # empty | id-only | full-resource
    heartbeat_s: int | None
    timeout_s: int
    max_count: int
    end_us: int | None = None  # `Subscription.end`, epoch microseconds

    def ended(self, at_us: int) -> bool:
        """True once `Subscription.end` has passed (R4: "the time for the server to turn the
        subscription off")."""
        return self.end_us is not None and at_us >= self.end_us

    @property
    def classic(self) -> bool:
        return self.topic is None

    @property
    def topic_url(self) -> str | None:
        return self.topic.url if self.topic else None

    def matches(self, resource: dict[str, Any]) -> bool:
        """True if a change to `resource` concerns this subscription."""
        if self.topic is not None:
            if resource.get("resourceType") != self.topic.resource_type:
                return False
            # Several filters narrow together, as R5's `filterBy` entries do.
            return all(c.matches(resource) for c in self.criteria)
        return self.criteria[0].matches(resource)


def _ext(node: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(node, dict) or not isinstance(node.get("extension"), list):
        return []
    return [e for e in node["extension"] if isinstance(e, dict) and e.get("url") == url]


def _int_ext(node: Any, url: str, lo: int, hi: int, where: str,
             problems: list[tuple[str, str]]) -> int | None:
    found = _ext(node, url)
    if not found:
        return None
    value = next((v for k, v in found[0].items() if k.startswith("value")), None)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.append((where, f"{url.rsplit('/', 1)[-1]} must be a whole number from {lo} "
                                f"to {hi}"))
        return None
    return value


def parse_subscription(resource: dict[str, Any]) -> SubscriptionSpec:
    """Read a Subscription's JSON; raises SubscriptionRefused listing every problem."""
    problems: list[tuple[str, str]] = []
    status = resource.get("status")
    if status not in STATUSES:
        problems.append(("Subscription.status", f"status must be one of {', '.join(STATUSES)}"))
    channel = resource.get("channel") if isinstance(resource.get("channel"), dict) else {}
    assert isinstance(channel, dict)
    channel_type = channel.get("type")
    if channel_type not in CHANNEL_TYPES:
        problems.append(("Subscription.channel.type",
                         f"channel type {channel_type!r} is not supported; use "
                         f"{' or '.join(CHANNEL_TYPES)}"))
    endpoint = channel.get("endpoint") if isinstance(channel.get("endpoint"), str) else ""
    assert isinstance(endpoint, str)
    if channel_type == "rest-hook":
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(("Subscription.channel.endpoint",
                             "a rest-hook channel needs an absolute http(s) endpoint URL"))
    headers: list[tuple[str, str]] = []
    raw_headers = channel.get("header", [])
    for i, text in enumerate(raw_headers if isinstance(raw_headers, list) else []):
        m = _HEADER.match(text) if isinstance(text, str) else None
        if m is None or m.group(1).lower() in _FORBIDDEN_HEADERS:
            problems.append((f"Subscription.channel.header[{i}]",
                             "each header must be 'Name: value' (RFC 9110 §5), printable "
                             "ASCII, and not one the server sets itself"))
        else:
            headers.append((m.group(1), m.group(2)))
    if len(headers) > MAX_HEADERS:
        problems.append(("Subscription.channel.header", f"at most {MAX_HEADERS} headers"))

    criteria_text = resource.get("criteria")
    topic: Topic | None = None
    criteria: list[Criteria] = []
    if not isinstance(criteria_text, str) or not criteria_text:
        problems.append(("Subscription.criteria", "criteria is required"))
    elif criteria_text.startswith(("http://", "https://", "urn:")):
        topic = topic_by_url(criteria_text)
        if topic is None:
            problems.append(("Subscription.criteria",
                             f"{criteria_text[:200]!r} is not a topic this server publishes "
                             "(see CapabilityStatement)"))
        else:
            for i, ext in enumerate(_ext(resource.get("_criteria"), FILTER_CRITERIA_URL)):
                try:
                    parsed = parse_criteria(str(ext.get("valueString", "")),
                                            supported_types=SEARCH_PARAMETERS)
                except InvalidCriteria as exc:
                    problems.append((f"Subscription._criteria.extension[{i}]", str(exc)))
                    continue
                if parsed.resource_type != topic.resource_type:
                    problems.append((f"Subscription._criteria.extension[{i}]",
                                     f"the topic reports {topic.resource_type}, not "
                                     f"{parsed.resource_type}"))
                criteria.append(parsed)
    else:
        if channel_type == "websocket":
            problems.append(("Subscription.channel.type",
                             "classic (search URL) subscriptions are offered on rest-hook only"))
        try:
            criteria.append(parse_criteria(criteria_text, supported_types=SEARCH_PARAMETERS))
        except InvalidCriteria as exc:
            problems.append(("Subscription.criteria", str(exc)))

    payload = channel.get("payload")
    payload_mime = payload if isinstance(payload, str) and payload else None
    content_ext = _ext(channel.get("_payload"), PAYLOAD_CONTENT_URL)
    content = "id-only" if payload_mime else "empty"
    if content_ext:
        content = str(content_ext[0].get("valueCode"))
        if content not in CONTENT_CODES:
            problems.append(("Subscription.channel._payload",
                             f"payload content must be one of {', '.join(CONTENT_CODES)}"))
    if payload_mime is not None and payload_mime.split(";")[0].strip() not in (
            "application/fhir+json", "application/json"):
        problems.append(("Subscription.channel.payload",
                         "this server sends application/fhir+json only"))
    heartbeat = _int_ext(channel, HEARTBEAT_PERIOD_URL, HEARTBEAT_MIN_S, HEARTBEAT_MAX_S,
                         "Subscription.channel.extension", problems)
    timeout = _int_ext(channel, TIMEOUT_URL, 1, TIMEOUT_MAX_S,
                       "Subscription.channel.extension", problems)
    max_count = _int_ext(channel, MAX_COUNT_URL, 1, MAX_COUNT_LIMIT,
                         "Subscription.channel.extension", problems)
    end_us: int | None = None
    if resource.get("end") is not None:
        end = parse_date_range(str(resource["end"]))
        if end is None:
            problems.append(("Subscription.end", "end must be a FHIR instant"))
        else:
            end_us = end.low
    if problems:
        raise SubscriptionRefused(problems)
    assert isinstance(channel_type, str) and isinstance(status, str)
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    return SubscriptionSpec(
        id=str(resource.get("id", "")),
        version_id=str(meta.get("versionId", "")),
        status=status,
        topic=topic,
        criteria=tuple(criteria),
        channel_type=channel_type,
        endpoint=endpoint,
        headers=tuple(headers),
        payload_mime=payload_mime,
        content=content if topic is not None else ("full-resource" if payload_mime else "empty"),
        heartbeat_s=heartbeat if topic is not None else None,
        timeout_s=timeout or DEFAULT_TIMEOUT_S,
        max_count=max_count or DEFAULT_MAX_COUNT,
        end_us=end_us,
    )
