"""Read-back of patient identity before a critical result is acknowledged.

The clinician types the bed or the MRN shown (`read_back_match`), compared without case,
spaces or punctuation, bed numbers as numbers ("bed 4" matches "Bed 04"). The identity shown
and compared is `core.patient_identity`'s, the same the identity banner shows.
"""

from __future__ import annotations

from typing import Literal

from wardsync.core.patient_identity import PatientIdentity

ReadBackKind = Literal["bed", "mrn"]


def _squash(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _bed_number(text: str) -> str:
    squashed = _squash(text)
    for word in ("bed", "bd"):
        if squashed.startswith(word) and squashed[len(word):]:
            squashed = squashed[len(word):]
            break
    return str(int(squashed)) if squashed.isdigit() else squashed


def read_back_match(typed: str, patient: PatientIdentity) -> ReadBackKind | None:
    """Which identifier the clinician read back correctly ("mrn" or "bed"), or None."""
    if not isinstance(typed, str) or not _squash(typed):
        return None
    if patient.mrn and _squash(typed) == _squash(patient.mrn):
        return "mrn"
    if patient.bed and _bed_number(patient.bed) and _bed_number(typed) == _bed_number(patient.bed):
        return "bed"
    return None
