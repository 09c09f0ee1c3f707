"""The relay the sandbox runs by default: `wardsync.relay.Relay`, as a separate component.

It runs in the sandbox's process and event loop (fast start, one process for the test suite
and the demo) but as its own aiohttp application on its own port with its own data directory
(`<sandbox data dir>/relay`), and talks to the sandbox only through the public contract a
hospital relay has: HTTP to the FHIR server and the authorization server (the
`wardsync-relay` confidential client, client_credentials), the FHIR Subscriptions it creates
there, and the hub's API key as its Ably key (docs/architecture.md §2, docs/relay.md).
Nothing of the sandbox's store or hub is shared with it in memory.

Its secrets are written to files in its data directory (mode 0600), as `wardsync relay`
reads them from files in a hospital.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from wardsync.infra.private_file import ensure_private_data_dir, write_private_atomically
from wardsync.relay.config import RelayConfig
from wardsync.relay.service import Relay

RELAY_DIR = "relay"
# The sandbox's relay polls less often than a hospital's would need to: its Subscriptions
# carry the changes, the poll is the safety net.
SANDBOX_POLL_INTERVAL_S = 5.0
SANDBOX_HEARTBEAT_S = 30.0
READY_TIMEOUT_S = 30.0
# What the sandbox's writers change and its relay client may read (its topics' types).
SANDBOX_POKED_TYPES = ("Communication", "DiagnosticReport", "Encounter", "Observation",
                       "Patient", "Task")
# A restarted hub gets pokes again within 2 s (the fault tests rely on it).
PUBLISH_RETRY_CAP_S = 2.0


def _secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    write_private_atomically(path, value)  # created 0600, renamed into place
    return path


def sandbox_relay_config(*, data_dir: Path, host: str, fhir_base: str, token_url: str,
                         client_id: str, client_secret: str, hub_endpoint: str, hub_key: str,
                         ward: str, realtime_token_ttl_s: float,
                         auth_issuer: str | None = None,
                         auth_audience: str | None = None,
                         heartbeat_s: float = 15.0) -> RelayConfig:
    """A relay configuration for the sandbox's own FHIR server and hub.

    The relay's client is the sandbox's own (`token_url`, its OAuth server), also when the
    FHIR server trusts an external issuer for people (`auth_issuer`, `auth_audience`): then
    the relay verifies the workstations' tokens as that issuer's JWTs by its JWKS, as a site's
    relay beside a training ward would."""
    relay_dir = data_dir / RELAY_DIR
    ensure_private_data_dir(relay_dir)
    config = RelayConfig()
    config.relay.listen = f"{host}:0"
    config.relay.data_dir = relay_dir
    config.relay.default_ward = ward
    config.fhir.base = fhir_base
    config.fhir.client_id = client_id
    config.fhir.token_url = token_url
    config.fhir.client_secret_file = _secret_file(relay_dir, "client-secret", client_secret)
    config.ably.endpoint = hub_endpoint
    config.ably.key_file = _secret_file(relay_dir, "ably-key", hub_key)
    config.ably.tls = False
    config.ably.max_pokes_per_s = 50.0  # Ably's per-channel limit, which the hub enforces
    config.ably.heartbeat_s = heartbeat_s
    config.reconcile.interval_s = SANDBOX_POLL_INTERVAL_S
    config.reconcile.types = list(SANDBOX_POKED_TYPES)
    # The seeded ward is history, not news: a first start announces nothing before it.
    config.reconcile.initial_lookback_s = 0.0
    config.tokens.max_ttl_s = realtime_token_ttl_s
    if auth_issuer is not None:
        config.tokens.jwt_issuer = auth_issuer
        config.tokens.jwt_audience = auth_audience
    config.subscriptions.mode = "topic"
    config.subscriptions.heartbeat_s = SANDBOX_HEARTBEAT_S
    return config


async def start_relay(config: RelayConfig) -> Relay:
    """Start the relay and wait until its Subscriptions exist (every change from then on is
    numbered for it by the FHIR server)."""
    relay = Relay(config, publish_retry_cap_s=PUBLISH_RETRY_CAP_S)
    try:
        await relay.start()
        assert relay.subscriptions is not None
        try:
            await asyncio.wait_for(relay.subscriptions.ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"the relay could not set up its FHIR Subscriptions within {READY_TIMEOUT_S:.0f}"
                " s (its warnings above say why)") from None
    except BaseException:
        await relay.stop(drain_s=0)
        raise
    return relay
