"""The sandbox's OAuth 2.0 / SMART on FHIR authorization server.

It issues the bearer tokens the sandbox FHIR server and the realtime token exchange accept:
`OAuthServer.verify_bearer(token)` turns one into a `wardsync.sandbox.grants.Grant`.
"""

from wardsync.sandbox.oauth.accounts import (
    DemoUser,
    OAuthClient,
    SecretSource,
    default_clients,
    default_demo_users,
)
from wardsync.sandbox.oauth.server import OAuthServer

__all__ = [
    "DemoUser",
    "OAuthClient",
    "OAuthServer",
    "SecretSource",
    "default_clients",
    "default_demo_users",
]
