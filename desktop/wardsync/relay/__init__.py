"""The WardSync relay: the hospital-side service beside the FHIR server (docs/relay.md).

Changes in (a reconciliation poll over the FHIR REST API; FHIR Subscriptions later), one
PHI-free poke per resource version out to Ably REST on `ward:<id>` with deterministic message
ids and a contiguous per-ward `seq`, and the realtime token exchange for workstations.
Headless: never imports ui/, Qt or the sandbox (docs/architecture.md §1).
"""
