"""Embedded sandbox backend: FHIR server, Ably-compatible hub, OAuth server, ward simulator.

Runs with no Qt; never imported by the app layers (ui, sync, fhir, auth)."""
