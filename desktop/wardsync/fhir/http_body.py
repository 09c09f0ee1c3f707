"""Reading a response's JSON body at the FHIR boundary, where a body that is not JSON (a
proxy's HTML error page, an empty reply) is an answer to report, not a crash."""

from __future__ import annotations

from typing import Any

import httpx


def json_or_none(response: httpx.Response) -> Any:
    """The parsed JSON body, or None when it is empty, not JSON or not valid text."""
    try:
        return response.json()
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
