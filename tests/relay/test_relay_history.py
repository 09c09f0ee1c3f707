"""Reading history Bundle entries (relay/history.py) and the CapabilityStatement's type
history (relay/reconcile.py), in the shapes the sandbox and HAPI FHIR send."""

from __future__ import annotations

from wardsync.relay.history import modified_at, read_entry, versions_of
from wardsync.relay.reconcile import history_types

BASE = "https://fhir.example.org/fhir"


def version(vid: str, *, patient: str = "p1") -> dict:
    return {"resource": {"resourceType": "Observation", "id": "o1",
                         "meta": {"versionId": vid, "lastUpdated": "2026-01-01T00:00:01Z"},
                         "subject": {"reference": f"Patient/{patient}"}},
            "request": {"method": "PUT", "url": "Observation/o1"}}


def test_a_delete_entry_gives_its_version_from_the_etag_or_the_url():
    sandbox = {"fullUrl": f"{BASE}/Observation/o1",
               "request": {"method": "DELETE", "url": "Observation/o1"},
               "response": {"status": "204 No Content", "etag": 'W/"3"',
                            "lastModified": "2026-01-01T00:00:02Z"}}
    hapi = {"fullUrl": f"{BASE}/Observation/o1/_history/3",
            "request": {"method": "DELETE", "url": "Observation/o1"},
            "response": {"status": "204 No Content"}}
    for entry in (sandbox, hapi):
        got = read_entry(entry)
        assert got is not None
        assert (got.ref, got.version_id, got.deleted, got.resource) == (
            "Observation/o1", "3", True, None)
    got = read_entry(sandbox)
    assert got is not None and modified_at(got) == 1767225602.0


def test_versions_are_ordered_newest_first_and_unusable_entries_left_out():
    gone = {"request": {"method": "DELETE", "url": "Observation/o1"},
            "response": {"etag": 'W/"10"'}}
    entries = [version("2"), gone, version("9"), {"request": {"method": "GET"}},
               {"resource": "not a resource"}, {"request": {"method": "DELETE", "url": "x"}},
               {"request": {"method": "DELETE", "url": "Observation/other"},
                "response": {"etag": 'W/"1"'}}]
    got = versions_of(entries, "Observation/o1")
    assert [(v.version_id, v.deleted) for v in got] == [("10", True), ("9", False),
                                                        ("2", False)]
    assert got[1].resource is not None and got[1].resource["id"] == "o1"


def test_type_history_is_read_from_the_capability_statement():
    capabilities = {"rest": [{"resource": [
        {"type": "Observation", "interaction": [{"code": "read"}, {"code": "history-type"}]},
        {"type": "Task", "interaction": [{"code": "read"}, {"code": "history-instance"}]},
        {"type": 3}, "junk"]}, "junk"]}
    assert history_types(capabilities) == frozenset({"Observation"})
    assert history_types({}) == frozenset()
