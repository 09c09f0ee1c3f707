"""Built-in defaults shared by the settings schema (infra) and the sync stack (sync).

Each default lives here once: `infra.settings` declares it as a setting's default and
`sync.workstation` uses it when no setting is given, and neither layer may import the other
(docs/architecture.md §1), so both read it from core. Units are in the names.
"""

from __future__ import annotations

from typing import Final

# Realtime down this long before windows say "degraded" and the watchdog starts polling.
DEGRADED_AFTER_S: Final = 10.0
# Watchdog poll interval while realtime is down (degraded: polling).
POLLING_INTERVAL_S: Final = 15.0
# Wait for a missing poke sequence number before a catch-up pull.
SEQ_GAP_GRACE_S: Final = 2.0
# Pokes for the same query within this window coalesce into one pull; short enough to stay
# out of the latency budget.
PULL_DEBOUNCE_MS: Final = 10
PULL_DEBOUNCE_S: Final = PULL_DEBOUNCE_MS / 1000.0
# Longest wait between retries of a failing pull (exponential backoff).
BACKOFF_CAP_S: Final = 30.0
# A FHIR request is abandoned (and retried with backoff) after this long.
FHIR_TIMEOUT_S: Final = 10.0
