"""Pure domain logic: events, bus, resource store, pokes, presence, locks, alert rules.

No I/O, no Qt, no network or keyring libraries (enforced by import-linter)."""
