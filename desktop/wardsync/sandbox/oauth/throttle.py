"""Sign-in throttling for the sandbox's login form: failed passwords per account and per
client address, in a sliding window.

Guessing a password needs many tries; a person mistyping needs a few. After
`MAX_FAILURES_PER_ACCOUNT` failures for one user name, or `MAX_FAILURES_PER_ADDRESS` from one
address (which covers guessing across many names), within `WINDOW_S`, further attempts for
that account or from that address are refused, even with the right password (else the lock
would still answer the guesses), until the oldest failure leaves the window (NIST SP 800-63B
§5.2.2 "Rate Limiting (Throttling)": at most 100 consecutive failures per account; a much
tighter limit suits accounts that guard clinical data). A successful sign-in clears the
account's failures. Counters are in memory: a restart forgets them, as it forgets the pending
authorization codes.

The limit per account lets anyone lock a user out for up to `WINDOW_S` by failing on purpose;
the sandbox accepts that (its accounts are synthetic). A hospital's identity provider owns this
trade-off for real accounts (docs/security/local-and-sandbox.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

WINDOW_S = 900.0
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
MAX_TRACKED_KEYS = 10_000  # bounded memory under a spray of made-up names or addresses


class SignInThrottle:
    """Failed sign-ins per account and per address; `retry_after_s` says when to try again."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        window_s: float = WINDOW_S,
        per_account: int = MAX_FAILURES_PER_ACCOUNT,
        per_address: int = MAX_FAILURES_PER_ADDRESS,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self._limits = {"account": per_account, "address": per_address}
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after_s(self, username: str, address: str) -> tuple[str, int] | None:
        """(`"account"` or `"address"`, whole seconds to wait) if attempts are refused now."""
        now = self._clock()
        for kind, key in (("account", username), ("address", address)):
            failures = self._recent((kind, key), now)
            if len(failures) >= self._limits[kind]:
                wait = failures[len(failures) - self._limits[kind]] + self._window_s - now
                return kind, max(1, math.ceil(wait))
        return None

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        for key in (("account", username), ("address", address)):
            if key not in self._failures and len(self._failures) >= MAX_TRACKED_KEYS:
                self._forget_quiet(now)
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("account", username), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] + self._window_s <= now:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def _forget_quiet(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= MAX_TRACKED_KEYS:  # all recent: drop the oldest key
            del self._failures[next(iter(self._failures))]
