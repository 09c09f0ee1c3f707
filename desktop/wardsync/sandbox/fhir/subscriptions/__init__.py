"""FHIR Subscriptions for the sandbox FHIR server (docs/subscriptions.md).

Topic-based subscriptions per the Subscriptions R5 Backport IG (STU 1.1) for R4, on rest-hook
and websocket channels, and classic R4 criteria subscriptions on rest-hook. `service.py`
assembles the parts: `ledger.py` (durable cursor, event numbers and deliveries), the matcher
loop, `delivery.py` (rest-hook), `websocket.py` and `operations.py` ($status, $events,
$get-ws-binding-token).
"""
