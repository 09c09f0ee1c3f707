"""Errors shared across layers that cannot import each other."""

from __future__ import annotations


class SignInError(Exception):
    """Signing in or renewing the session failed; the user must sign in (again).

    `oauth_error` is the RFC 6749 §5.2 error code when the server gave one
    (e.g. "invalid_grant" for a revoked or rotated refresh token).
    """

    user_message = "your sign-in has expired — please sign in again"

    def __init__(self, message: str, *, oauth_error: str = "") -> None:
        super().__init__(message)
        self.oauth_error = oauth_error
