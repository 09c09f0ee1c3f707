"""FHIR R4 REST client: one httpx.AsyncClient, typed errors, R4B parsing, paging."""
