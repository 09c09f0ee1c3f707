"""Proof Key for Code Exchange (RFC 7636), S256 only.

`plain` is refused: RFC 7636 §4.2 allows it only when S256 is impossible, and SMART App Launch
2.0 requires S256 and forbids plain ("code_challenge_method ... SHALL be S256").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

SUPPORTED_METHODS = ("S256",)
# RFC 7636 §4.1: code_verifier = 43*128 unreserved characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# RFC 7636 §4.2: an S256 challenge is BASE64URL(SHA256(verifier)): 43 chars, no padding.
_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def is_valid_verifier(verifier: str) -> bool:
    """True if `verifier` has the form RFC 7636 §4.1 requires."""
    return bool(_VERIFIER.match(verifier))


def is_valid_s256_challenge(challenge: str) -> bool:
    """True if `challenge` looks like a base64url SHA-256 digest (RFC 7636 §4.2)."""
    return bool(_S256_CHALLENGE.match(challenge))


def s256_challenge(verifier: str) -> str:
    """BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6: recompute the challenge from the verifier and compare."""
    if not is_valid_verifier(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
