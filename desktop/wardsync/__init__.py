"""WardSync: a clinical workstation client for live ward, patient and lab views over FHIR R4."""

from wardsync._version import __version__

__all__ = ["__version__"]
