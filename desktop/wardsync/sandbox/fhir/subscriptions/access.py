"""Who may manage Subscriptions: only clients granted an explicit system Subscription scope.

A Subscription makes the server push data to an endpoint of the creator's choosing, so it
is an administrative act, not a clinical one: `system/Subscription.c` (create),
`.r`/`.s` (read, search, `$status`, `$events`, `$get-ws-binding-token`), `.u`, `.d`. A
wildcard (`user/*.cruds`, `system/*.cruds`) does not cover it, so the desktop's public
client, whose users hold `user/*.cruds`, can never create or read one
(docs/subscriptions.md "Security").
"""

from __future__ import annotations

from wardsync.sandbox.grants import Grant, parse_resource_scope

SUBSCRIPTION = "Subscription"


def permits_subscription(grant: Grant, interaction: str) -> bool:
    """True if a `system/Subscription.<letters>` scope of `grant` allows `interaction`."""
    for scope in grant.scopes:
        parsed = parse_resource_scope(scope)
        if parsed is None:
            continue
        context, rtype, perms = parsed
        if context == "system" and rtype == SUBSCRIPTION and interaction in perms:
            return True
    return False
