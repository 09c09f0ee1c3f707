"""The refresh token in the OS keyring (the only module importing `keyring`).

Secret Service on Linux, Credential Manager on Windows, Keychain on macOS. Windows rejects a
secret over 2560 bytes (stored as UTF-16, so about 1280 characters), so a secret is split into
shards of `SHARD_CHARS` stored under `<account>#<i>` with the shard count under `<account>#n`.
When no keyring backend exists the app runs session-only: it never falls back to a file.
"""

from __future__ import annotations

import logging

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

log = logging.getLogger(__name__)

SERVICE = "WardSync"
SHARD_CHARS = 1000
MAX_SHARDS = 32


class KeyringUnavailable(RuntimeError):
    """No secure OS keyring: tokens are kept for this session only."""

    user_message = (
        "No secure credential store is available on this workstation, so you will need to "
        "sign in again next time WardSync starts."
    )


def _usable_backend() -> KeyringBackend:
    backend = keyring.get_keyring()
    # The fail/null backends have priority <= 0 and exist only to say "there is none".
    if getattr(backend, "priority", 0) <= 0 or "fail" in type(backend).__module__:
        raise KeyringUnavailable(f"no keyring backend ({type(backend).__name__})")
    return backend


class RefreshTokenStore:
    """Save, load and delete one account's refresh token, sharded."""

    def __init__(self, account: str, *, service: str = SERVICE) -> None:
        self.account = account
        self.service = service
        self.backend = _usable_backend()

    def _key(self, suffix: str) -> str:
        return f"{self.account}#{suffix}"

    def save(self, secret: str) -> None:
        shards = [secret[i:i + SHARD_CHARS] for i in range(0, len(secret), SHARD_CHARS)] or [""]
        if len(shards) > MAX_SHARDS:
            raise ValueError("secret too large for the keyring")
        try:
            old = self._count()
            for i, shard in enumerate(shards):
                self.backend.set_password(self.service, self._key(str(i)), shard)
            self.backend.set_password(self.service, self._key("n"), str(len(shards)))
            for i in range(len(shards), old):
                self._delete_quietly(self._key(str(i)))
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(f"keyring refused the secret: {type(exc).__name__}") from exc

    def load(self) -> str | None:
        try:
            n = self._count()
            if n == 0:
                return None
            parts = [self.backend.get_password(self.service, self._key(str(i))) for i in range(n)]
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(f"keyring read failed: {type(exc).__name__}") from exc
        held = [p for p in parts if p is not None]
        if len(held) != len(parts):
            log.warning("stored session is incomplete; a new sign-in is needed")
            return None
        return "".join(held)

    def delete(self) -> None:
        n = self._count()
        for i in range(n):
            self._delete_quietly(self._key(str(i)))
        self._delete_quietly(self._key("n"))

    def _count(self) -> int:
        raw = self.backend.get_password(self.service, self._key("n"))
        try:
            return max(0, min(int(raw or 0), MAX_SHARDS))
        except ValueError:
            return 0

    def _delete_quietly(self, key: str) -> None:
        try:
            self.backend.delete_password(self.service, key)
        except keyring.errors.PasswordDeleteError:
            return  # already gone: deleting is idempotent
