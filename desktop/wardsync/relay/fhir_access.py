"""The relay's reads from the FHIR server, on the shared `FhirClient` (one httpx client).

Searches send `Cache-Control: no-cache`: HAPI FHIR reuses identical search results for 60 s
unless told not to (docs/architecture.md §4), and a reconciliation poll must see the server as
it is now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wardsync.fhir.client import FhirClient, HistoryResult

NO_CACHE = {"Cache-Control": "no-cache"}


class RelayFhir:
    """`read`, `search_all` and `history` for the relay (`search_all` and `read`: the
    `wards.FhirReader` protocol)."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client

    async def read(self, resource_type: str, id: str) -> dict[str, Any]:
        return await self.client.read(resource_type, id)

    async def search_all(self, resource_type: str,
                         params: Mapping[str, str]) -> list[dict[str, Any]]:
        result = await self.client.search(resource_type, dict(params), headers=NO_CACHE)
        return result.matches

    async def history(self, path: str, params: Mapping[str, str] | None = None, *,
                      max_pages: int = 2) -> HistoryResult:
        """`GET [path]/_history`: `Type/id` (an instance: its first pages, newest first, hold
        the delete and the version before it) or `Type` (with `_since`)."""
        return await self.client.history(path, params, max_pages=max_pages, headers=NO_CACHE)
