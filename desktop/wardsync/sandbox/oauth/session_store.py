"""Login sessions that must survive a sandbox restart: refresh-token families and revocations.

A *family* is everything issued from one authorization code: its access tokens carry the
family id (`fam`), and its refresh tokens rotate within it. Revoking a family revokes all of
them at once, which is what both code reuse (RFC 6749 §4.1.2) and refresh-token reuse
(RFC 9700 §4.14.2) call for. Refresh tokens are stored only as SHA-256 hashes: they are
256-bit random strings, so a fast hash is enough and a copied database yields no usable token.

Calls are synchronous and short. The server runs them on the event loop thread without an
await in between, so a read-check-rotate sequence is atomic with respect to other requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wardsync.infra.sqlite_db import open_database

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS families (
    family_id  TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    username   TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS families_by_user ON families (username);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES families (family_id) ON DELETE CASCADE,
    issued_at  REAL NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('active', 'rotated'))
);
CREATE INDEX IF NOT EXISTS refresh_by_family ON refresh_tokens (family_id);
CREATE TABLE IF NOT EXISTS revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Family:
    """One login session (all tokens descended from one authorization code)."""

    family_id: str
    client_id: str
    username: str
    scope: str
    created_at: float
    expires_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A stored refresh token: its family and whether it is still the current one."""

    family: Family
    state: str  # "active" (current) or "rotated" (already exchanged once)


class SessionStore:
    """SQLite storage for token families, refresh tokens and revoked access-token ids."""

    def __init__(self, db_path: str | Path) -> None:
        self._conn = open_database(db_path, _SCHEMA, what="OAuth session database",
                                   schema_version=SCHEMA_VERSION, foreign_keys=True)
        self._closed = False

    def close(self) -> None:
        """Close the database; further calls fail. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    # ------------------------------------------------------------------ families

    def create_family(self, family: Family) -> None:
        """Record a new login session."""
        self._conn.execute(
            "INSERT INTO families VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                family.family_id,
                family.client_id,
                family.username,
                family.scope,
                family.created_at,
                family.expires_at,
                family.revoked_at,
            ),
        )

    def revoke_family(self, family_id: str, now: float) -> bool:
        """Mark a family revoked; True if it existed and was not revoked already."""
        cur = self._conn.execute(
            "UPDATE families SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
            (now, family_id),
        )
        return cur.rowcount > 0

    def revoke_user_families(self, username: str, now: float) -> list[str]:
        """Revoke every live family of a user; the ids revoked."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            rows = self._conn.execute(
                "SELECT family_id FROM families WHERE username = ? AND revoked_at IS NULL",
                (username,),
            ).fetchall()
            self._conn.execute(
                "UPDATE families SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
                (now, username),
            )
        return [r[0] for r in rows]

    def revoked_family_ids(self, still_relevant_after: float) -> list[str]:
        """Ids of revoked families whose tokens could still be unexpired."""
        rows = self._conn.execute(
            "SELECT family_id FROM families WHERE revoked_at IS NOT NULL AND expires_at > ?",
            (still_relevant_after,),
        ).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ refresh tokens

    def add_refresh_token(self, token_hash: str, family_id: str, now: float) -> None:
        """Store a new current refresh token for a family."""
        self._conn.execute(
            "INSERT INTO refresh_tokens VALUES (?, ?, ?, 'active')", (token_hash, family_id, now)
        )

    def find_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        """The stored refresh token with this hash and its family, or None."""
        row = self._conn.execute(
            "SELECT f.family_id, f.client_id, f.username, f.scope, f.created_at, f.expires_at,"
            " f.revoked_at, r.state FROM refresh_tokens r JOIN families f USING (family_id)"
            " WHERE r.token_hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None:
            return None
        return RefreshTokenRecord(family=Family(*row[:7]), state=row[7])

    def rotate_refresh_token(self, old_hash: str, new_hash: str, now: float) -> bool:
        """Replace the current refresh token with a new one (RFC 9700 §4.14.2 rotation).
        False, and nothing changed, if `old_hash` is not the family's current token."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute(
                "UPDATE refresh_tokens SET state = 'rotated' WHERE token_hash = ? AND"
                " state = 'active' RETURNING family_id",
                (old_hash,),
            ).fetchone()
            if row is None:
                return False
            self._conn.execute(
                "INSERT INTO refresh_tokens VALUES (?, ?, ?, 'active')", (new_hash, row[0], now)
            )
        return True

    # ------------------------------------------------------------------ access tokens

    def revoke_access_token(self, jti: str, expires_at: float) -> None:
        """Remember a revoked access token id until the token would have expired anyway."""
        self._conn.execute(
            "INSERT OR IGNORE INTO revoked_access_tokens VALUES (?, ?)", (jti, expires_at)
        )

    def revoked_access_tokens(self, now: float) -> dict[str, float]:
        """Revoked access-token ids that have not expired yet, with their expiry."""
        rows = self._conn.execute(
            "SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > ?", (now,)
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    # ------------------------------------------------------------------ housekeeping

    def prune(self, families_ended_before: float, now: float) -> None:
        """Forget families (and their refresh tokens) that ended before the cutoff, and
        revoked access-token ids that have expired."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "DELETE FROM families WHERE expires_at < ?", (families_ended_before,)
            )
            self._conn.execute("DELETE FROM revoked_access_tokens WHERE expires_at <= ?", (now,))
