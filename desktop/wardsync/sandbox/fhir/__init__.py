"""The sandbox FHIR R4 server: SQLite-backed store (`store`) and aiohttp REST API (`api`).

Synthetic data only. See `search_params` for the one table of served types and parameters.
"""

from wardsync.sandbox.fhir.api import FhirApi
from wardsync.sandbox.fhir.errors import (
    FhirStoreError,
    InvalidRequest,
    InvalidResource,
    InvalidSearch,
    ResourceNotFound,
    UnknownResourceType,
    VersionConflict,
)
from wardsync.sandbox.fhir.faults import FhirFaults
from wardsync.sandbox.fhir.store import FhirStore, ResourceChange, SearchPage

__all__ = [
    "FhirApi",
    "FhirFaults",
    "FhirStore",
    "FhirStoreError",
    "InvalidRequest",
    "InvalidResource",
    "InvalidSearch",
    "ResourceChange",
    "ResourceNotFound",
    "SearchPage",
    "UnknownResourceType",
    "VersionConflict",
]
