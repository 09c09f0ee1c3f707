"""A lab report's status history from FHIR version history (R4 http.html#history).

`read_history` fetches every stored version of one resource (`GET [type]/[id]/_history`)
through the workstation's FhirClient; `status_history` turns the versions of a report and of
its results into lines a clinician reads, newest first: when the report was released, each
status change (preliminary -> final -> corrected), and each result whose value or flag
changed ("Potassium: 6.9 mmol/L HH -> 4.1 mmol/L"). Pure apart from `read_history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import tzinfo
from typing import Any, Protocol

from wardsync.fhir.client import SearchResult
from wardsync.viewmodels.clinical_text import NO_VALUE, ref_of, version_of, when
from wardsync.viewmodels.lab_rows import (
    REPORT_STATUS_WORDS,
    interpretation_flags,
    result_refs,
    short_test_name,
    value_text,
)
from wardsync.viewmodels.table_rows import Level, Row

Resource = Mapping[str, Any]
HISTORY_COLUMNS = ("When", "Version", "Change")


class HistorySource(Protocol):
    """What `read_history` needs of the FHIR client (FhirClient.search follows paging)."""

    async def search(self, resource_type: str, params: Any = None) -> SearchResult: ...


async def read_history(fhir: HistorySource, ref: str) -> list[dict]:
    """Every stored version of `ref` ("DiagnosticReport/x"), oldest first.

    The instance history is a Bundle like a search's (R4 http.html#history), so the client's
    search reads it with the same validation and `next`-link paging. Deleted versions carry
    no resource and are left out.
    """
    rtype, _, rid = ref.partition("/")
    if not rtype or not rid or "/" in rid:
        raise ValueError(f"not a resource reference: {ref!r}")
    result = await fhir.search(f"{rtype}/{rid}/_history", {})
    return sorted(result.matches, key=_version_number)


def _version_number(resource: Resource) -> int:
    version = version_of(resource)
    return int(version) if version.isdigit() else 0


def _stamp(resource: Resource, tz: tzinfo | None) -> tuple[float, str]:
    # `issued` is when this version was made available to clinicians (R4
    # diagnosticreport.html, observation.html); the server's lastUpdated is a fallback.
    meta = resource.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    moment = when(resource.get("issued")) or when(meta.get("lastUpdated"))
    if moment is None:
        return 0.0, NO_VALUE
    return moment.timestamp(), moment.astimezone(tz).strftime("%d-%b %H:%M:%S")


def _status_words(resource: Resource) -> str:
    status = str(resource.get("status") or "unknown")
    return REPORT_STATUS_WORDS.get(status, status)


def _result_line(obs: Resource) -> str:
    flags = " ".join(f for f in interpretation_flags(obs) if f != "N")
    return f"{value_text(obs)} {flags}".strip()


def status_history(report_versions: Iterable[Resource],
                   result_versions: Mapping[str, Iterable[Resource]],
                   tz: tzinfo | None = None) -> list[Row]:
    """History lines, newest first: report releases and status changes, result changes."""
    lines: list[tuple[float, int, Row]] = []
    previous: Resource | None = None
    for report in sorted(report_versions, key=_version_number):
        t, shown = _stamp(report, tz)
        version = version_of(report)
        if previous is None:
            text = f"Report released: {_status_words(report)}"
        elif previous.get("status") != report.get("status"):
            text = (f"Report status changed: {_status_words(previous)} → "
                    f"{_status_words(report)}")
        else:
            text = f"Report updated (still {_status_words(report)})"
        added = len(result_refs(report)) - (len(result_refs(previous)) if previous else 0)
        if previous is not None and added > 0:
            text += f"; {added} result(s) added"
        level: Level = "abnormal" if report.get("status") in ("amended", "corrected") else ""
        lines.append((t, 0, Row(f"{ref_of(report)}@{version}",
                                (shown, f"report v{version}", text), version, level)))
        previous = report
    for ref, versions in result_versions.items():
        before: Resource | None = None
        for obs in sorted(versions, key=_version_number):
            if before is not None and (_result_line(before) != _result_line(obs)
                                       or before.get("status") != obs.get("status")):
                t, shown = _stamp(obs, tz)
                status = str(obs.get("status") or "")
                verb = "corrected" if status in ("corrected", "amended") else "changed"
                text = (f"{short_test_name(obs)} {verb}: {_result_line(before)} → "
                        f"{_result_line(obs)}")
                lines.append((t, 1, Row(f"{ref}@{version_of(obs)}",
                                        (shown, f"result v{version_of(obs)}", text),
                                        version_of(obs), "abnormal")))
            before = obs
    lines.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [row for _, _, row in lines]
