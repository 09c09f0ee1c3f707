"""Ably-compatible realtime hub for the sandbox (websockets + REST on one port).

Speaks what the real `ably==3.1.4` SDK needs: JSON and msgpack, key and token auth with
capabilities, attach/detach, publish with ACK/NACK, presence with SYNC, resume, token renewal
and the REST endpoints for time, tokens, publish, history and presence. Caps and behaviour:
docs/hub.md. Section numbers (§n) in this package refer to docs/realtime-protocol.md.
"""

from wardsync.sandbox.hub.capability import Capability
from wardsync.sandbox.hub.config import HubConfig
from wardsync.sandbox.hub.server import Hub
from wardsync.sandbox.hub.tokens import mint_token, verify_token
from wardsync.sandbox.hub.wire import HubError

__all__ = ["Capability", "Hub", "HubConfig", "HubError", "mint_token", "verify_token"]
