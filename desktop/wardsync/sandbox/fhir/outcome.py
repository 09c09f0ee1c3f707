"""OperationOutcome resources for error responses (R4 operationoutcome.html)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wardsync.sandbox.fhir.errors import Issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome with one issue per Issue."""
    out = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = [issue.expression]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def outcome_for(code: str, message: str, expression: str = "") -> dict[str, Any]:
    """An OperationOutcome with a single error issue."""
    return operation_outcome([Issue(code, message, expression)])
