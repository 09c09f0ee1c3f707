"""The subscription topics this server publishes, as canonical URLs.

R4 has no SubscriptionTopic resource; the Subscriptions R5 Backport IG (STU 1.1,
"Topics" page) lets an R4 server advertise the canonicals it supports with the
`capabilitystatement-subscriptiontopic-canonical` extension on
`CapabilityStatement.rest.resource` (Subscription), which is what `capability.py` does with
this table. Each topic fires on create, update and delete of one resource type; a
subscriber narrows it with filter criteria on that type's search parameters
(`criteria.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Canonical base of WardSync's topics (a reserved example domain: these are identifiers,
# never fetched).
TOPIC_BASE = "http://wardsync.example.org/fhir/SubscriptionTopic/"
TRIGGERS = ("create", "update", "delete")


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: which resource type it reports, under which canonical URL."""

    url: str
    resource_type: str
    title: str


def _topic(resource_type: str, slug: str, title: str) -> Topic:
    return Topic(f"{TOPIC_BASE}{slug}", resource_type, title)


TOPICS: tuple[Topic, ...] = (
    _topic("Observation", "observation-changed", "Observation created, updated or deleted"),
    _topic("DiagnosticReport", "diagnosticreport-changed",
           "DiagnosticReport created, updated or deleted"),
    _topic("Task", "task-changed", "Task created, updated or deleted"),
    _topic("Communication", "communication-changed",
           "Communication created, updated or deleted"),
    _topic("Encounter", "encounter-changed", "Encounter created, updated or deleted"),
    _topic("Patient", "patient-changed", "Patient created, updated or deleted"),
)

_BY_URL = {t.url: t for t in TOPICS}


def topic_by_url(url: str) -> Topic | None:
    """The topic with canonical `url` (a `|version` suffix is ignored), or None."""
    return _BY_URL.get(url.split("|", 1)[0])
