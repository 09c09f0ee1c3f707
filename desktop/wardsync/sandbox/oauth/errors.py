"""OAuth 2.0 error responses (RFC 6749 §5.2, RFC 7009 §2.2.1)."""

from __future__ import annotations

INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNAUTHORIZED_CLIENT = "unauthorized_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_SCOPE = "invalid_scope"
ACCESS_DENIED = "access_denied"
UNSUPPORTED_RESPONSE_TYPE = "unsupported_response_type"


class OAuthError(Exception):
    """An error the client is told about as `{"error": ..., "error_description": ...}`.

    `status` is 400 except for `invalid_client`, which is 401 (RFC 6749 §5.2).
    The description is for the developer and never contains a token, code or secret.
    """

    def __init__(self, error: str, description: str, *, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status if status is not None else (401 if error == INVALID_CLIENT else 400)

    def to_json(self) -> dict[str, str]:
        """The RFC 6749 §5.2 response body."""
        return {"error": self.error, "error_description": self.description}
