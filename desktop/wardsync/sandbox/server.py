"""The assembled sandbox: FHIR + OAuth server, realtime hub, the WardSync relay, ward simulator.

Three listening ports on loopback: one HTTP server for FHIR (`/fhir`, with FHIR
Subscriptions), sign-in (`/oauth`, `.well-known`), a realtime token exchange of its own
(`/realtime/token`, for setups without the sandbox's relay) and the sandbox's control
endpoints (`/_sandbox`, admin token only); the realtime hub on its own port so it can be
stopped and restarted while the FHIR side keeps running (the fault tests do exactly that);
and, unless `relay=False` (`--no-relay`), the relay (`relay_component.py`): it consumes the
sandbox's own Subscriptions and publishes the pokes, as a hospital's relay does.

Secrets (token signing key, hub key, laboratory, device and relay client secrets, admin token) are
created once per data directory and kept in `secrets.json` there, so a restarted sandbox keeps
accepting the tokens it issued. A sandbox without a data directory uses a temporary one that is
deleted on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from wardsync._version import __version__
from wardsync.infra.private_file import ensure_private_data_dir, write_private_atomically
from wardsync.relay.service import Relay
from wardsync.relay.token_exchange import (
    MIN_REALTIME_TOKEN_TTL_S,
    capability_for,
    permits_realtime,
)
from wardsync.sandbox.fhir.api import FhirApi, VerifyBearer
from wardsync.sandbox.fhir.faults import FhirFaults
from wardsync.sandbox.fhir.store import FhirStore
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionLedger
from wardsync.sandbox.fhir.subscriptions.service import WEBSOCKET_PATH, SubscriptionService
from wardsync.sandbox.hub import Hub, HubConfig
from wardsync.sandbox.oauth import OAuthServer, default_clients, default_demo_users
from wardsync.sandbox.oauth.accounts import DEVICES_CLIENT_ID, LAB_CLIENT_ID, RELAY_CLIENT_ID
from wardsync.sandbox.relay_component import sandbox_relay_config, start_relay
from wardsync.sandbox.ward.devices import WardDevices
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.sandbox.ward.planner import SimulatorConfig
from wardsync.sandbox.ward.seed import WARD_ID, build_ward
from wardsync.sandbox.ward.simulator import WardSimulator

log = logging.getLogger(__name__)

HUB_KEY_NAME = "sandbox.root"
ACCESS_TOKEN_TTL_S = 900.0
REALTIME_TOKEN_TTL_S = 3600.0


@dataclass
class SandboxConfig:
    """How to run the sandbox (the `wardsync sandbox` flags map onto this)."""

    host: str = "127.0.0.1"
    port: int = 0
    hub_port: int = 0
    data_dir: Path | None = None
    seed: int = 1
    patients: int = 24
    simulator: bool = True
    simulator_config: SimulatorConfig | None = None
    access_token_ttl_s: float = ACCESS_TOKEN_TTL_S
    realtime_token_ttl_s: float = REALTIME_TOKEN_TTL_S
    hub_config: HubConfig = field(default_factory=HubConfig)
    now: datetime | None = None  # seed clock (tests pin it)
    # Trust an external authorization server's JWTs (sandbox/fhir/external_issuer.py).
    auth_issuer: str | None = None
    auth_audience: str | None = None
    relay: bool = True  # run the WardSync relay (`--no-relay`: leave it out)
    # Its heartbeat on the ward channel (the relay's `ably.heartbeat_s`; 0: none).
    relay_heartbeat_s: float = 15.0


class _Secrets:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        fresh = {
            "signing_key": secrets.token_hex(32),
            "hub_secret": secrets.token_urlsafe(24),
            "admin_token": secrets.token_urlsafe(24),
            LAB_CLIENT_ID: secrets.token_urlsafe(24),
            DEVICES_CLIENT_ID: secrets.token_urlsafe(24),
            RELAY_CLIENT_ID: secrets.token_urlsafe(24),
        }
        changed = any(k not in data for k in fresh)
        self.data = {**fresh, **data}
        if changed:
            # Written to a file created 0600, then renamed into place: never readable by
            # anyone else, not even for a moment (infra/private_file.py).
            write_private_atomically(path, json.dumps(self.data, indent=1))

    def __getitem__(self, key: str) -> str:
        return self.data[key]


class Sandbox:
    """`async with Sandbox(config) as sb: sb.ready_info()` — the whole embedded backend."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._tmp: Path | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.ward = WARD_ID
        self.faults = FhirFaults()
        self.store: FhirStore | None = None
        self.oauth: OAuthServer | None = None
        self.hub: Hub | None = None
        self.relay: Relay | None = None
        self.subscriptions: SubscriptionService | None = None
        self._ledger: SubscriptionLedger | None = None
        self.simulator: WardSimulator | None = None
        self._http: httpx.AsyncClient | None = None
        self._lab: LabSystem | None = None
        self._devices: WardDevices | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def hub_key(self) -> str:
        return f"{HUB_KEY_NAME}:{self._secrets['hub_secret']}"

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        cfg = self.config
        if cfg.data_dir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="wardsync-sandbox-"))
            data_dir = self._tmp
        else:
            data_dir = ensure_private_data_dir(Path(cfg.data_dir))
        self.data_dir = data_dir
        self._secrets = _Secrets(data_dir / "secrets.json")

        self.store = FhirStore(data_dir / "fhir.sqlite3")
        if self.store.is_empty():
            now = cfg.now or datetime.now(UTC)
            n = self.store.load(build_ward(cfg.seed, now=now, patients=cfg.patients))
            log.info("seeded the synthetic ward with %d resources", n)

        self.oauth = OAuthServer(
            issuer=lambda: self.base_url,
            fhir_base=lambda: self.fhir_base,
            signing_key=bytes.fromhex(self._secrets["signing_key"]),
            users=default_demo_users(),
            clients=default_clients(self._secrets.data),
            ward=self.ward,
            access_token_ttl_s=cfg.access_token_ttl_s,
            db_path=data_dir / "oauth.sqlite3",
        )
        self._ledger = SubscriptionLedger(data_dir / "subscriptions.sqlite3")
        self.subscriptions = SubscriptionService(
            self.store, self._ledger, fhir_base=lambda: self.fhir_base,
            websocket_url=lambda: f"ws://{cfg.host}:{self.port}{WEBSOCKET_PATH}",
        )
        app = web.Application()
        self._verify_bearer: VerifyBearer = self.oauth.verify_bearer
        if cfg.auth_issuer:
            # Imported here: PyJWT (the relay extra) is needed only with an external issuer.
            from wardsync.sandbox.fhir.external_issuer import ExternalIssuer

            external = await ExternalIssuer.discover(cfg.auth_issuer, cfg.auth_audience)
            self._verify_bearer = external.verify_bearer_or(self.oauth.verify_bearer)
            app.middlewares.append(external.smart_configuration_middleware)
        self.oauth.install(app)
        FhirApi(self.store, self._verify_bearer, faults=self.faults,
                subscriptions=self.subscriptions,
                fault_exempt_clients=frozenset({RELAY_CLIENT_ID}) if cfg.relay else frozenset(),
                ).install(app, "/fhir")
        self.subscriptions.install_websocket(app)
        app.router.add_post("/realtime/token", self._realtime_token)
        app.router.add_post("/_sandbox/faults", self._admin_faults)
        app.router.add_post("/_sandbox/hub/{action}", self._admin_hub)
        app.router.add_get("/_sandbox/stats", self._admin_stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the bound port, when cfg.port is 0
        await self.subscriptions.start()

        self.hub = Hub({HUB_KEY_NAME: self._secrets["hub_secret"]}, cfg.hub_config)
        await self.hub.start(cfg.host, cfg.hub_port)

        if cfg.relay:
            self.relay = await start_relay(sandbox_relay_config(
                data_dir=data_dir, host=cfg.host, fhir_base=self.fhir_base,
                token_url=self.token_url, client_id=RELAY_CLIENT_ID,
                client_secret=self._secrets[RELAY_CLIENT_ID],
                hub_endpoint=self.hub.endpoint, hub_key=self.hub_key, ward=self.ward,
                realtime_token_ttl_s=cfg.realtime_token_ttl_s,
                auth_issuer=cfg.auth_issuer, auth_audience=cfg.auth_audience,
                heartbeat_s=cfg.relay_heartbeat_s,
            ))

        self._http = httpx.AsyncClient(timeout=10.0)
        self._lab = LabSystem(
            fhir_base=self.fhir_base, token_url=self.token_url, client_id=LAB_CLIENT_ID,
            client_secret=self._secrets[LAB_CLIENT_ID], http=self._http,
        )
        self._devices = WardDevices(
            fhir_base=self.fhir_base, token_url=self.token_url, client_id=DEVICES_CLIENT_ID,
            client_secret=self._secrets[DEVICES_CLIENT_ID], http=self._http,
        )
        if cfg.simulator:
            self.start_simulator(cfg.simulator_config or SimulatorConfig(seed=cfg.seed))

    def start_simulator(self, config: SimulatorConfig) -> WardSimulator:
        assert self.store is not None and self._lab is not None and self._devices is not None
        encounters: dict[str, str] = {}
        page = self.store.search(
            "Encounter", [("location", f"Location/{self.ward}"), ("_count", "500")]
        )
        for enc in page.matches:
            subject = (enc.get("subject") or {}).get("reference", "")
            if subject.startswith("Patient/") and enc.get("status") == "in-progress":
                encounters[subject.split("/", 1)[1]] = enc["id"]
        self.simulator = WardSimulator(
            lab=self._lab, devices=self._devices, patients=sorted(encounters),
            encounters=encounters, config=config,
        )
        self.simulator.start()
        return self.simulator

    @property
    def lab(self) -> LabSystem:
        assert self._lab is not None
        return self._lab

    @property
    def devices(self) -> WardDevices:
        assert self._devices is not None
        return self._devices

    async def stop(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()
        if self.relay is not None:
            with contextlib.suppress(TimeoutError):
                await self.drain_pokes(2.0)
            await self.relay.stop(drain_s=2.0)
        if self._http is not None:
            await self._http.aclose()
        if self.subscriptions is not None:
            await self.subscriptions.stop()
        if self._ledger is not None:
            self._ledger.close()
        if self.hub is not None:
            await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            self.store.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ pokes
    def pokes_pending(self) -> int:
        """Changes not yet published as pokes by the relay: committed but not yet matched,
        matched for the relay's Subscriptions but not yet delivered, or numbered by the
        relay but not yet acknowledged by the hub. 0 without a relay."""
        if self.relay is None or self.relay.publisher is None:
            return 0
        assert self.store is not None and self.subscriptions is not None
        assert self._ledger is not None and self.relay.subscriptions is not None
        pending = max(0, self.store.last_seq() - self.subscriptions.matched_through)
        for live in self.relay.subscriptions.subscriptions:
            if live.sub_id is not None:
                counters = self._ledger.counters(live.sub_id)
                pending += max(0, counters.events - counters.delivered)
        return pending + self.relay.publisher.pending

    async def drain_pokes(self, timeout_s: float = 10.0) -> None:
        """Wait until the relay has published the pokes of every write so far (tests and
        orderly shutdown); raises TimeoutError."""
        async with asyncio.timeout(timeout_s):
            while self.pokes_pending():  # noqa: ASYNC110 - counters of three parts, no event
                await asyncio.sleep(0.005)

    @property
    def last_seq(self) -> int:
        """The last seq the relay gave out on the sandbox's ward channel."""
        if self.relay is None or self.relay.state is None:
            return 0
        return self.relay.state.last_seq(self.ward)

    # ------------------------------------------------------------------ contract
    def ready_info(self) -> dict[str, Any]:
        """The `wardsync sandbox` ready line (docs/architecture.md §3.1)."""
        assert self.hub is not None
        relay = self.relay.ready_info() if self.relay is not None else None
        info: dict[str, Any] = {
            "fhir_base": self.fhir_base,
            "ably_endpoint": self.hub.endpoint,
            "smart_config": f"{self.fhir_base}/.well-known/smart-configuration",
            "token_url": self.token_url,
            # With the relay, the desktop's token exchange goes through it, as in a hospital.
            "ably_token_url": (relay["token_url"] if relay is not None
                               else f"{self.base_url}/realtime/token"),
            "ably_key": self.hub_key,
            "lab_client": {"client_id": LAB_CLIENT_ID,
                           "client_secret": self._secrets[LAB_CLIENT_ID]},
            "devices_client": {"client_id": DEVICES_CLIENT_ID,
                               "client_secret": self._secrets[DEVICES_CLIENT_ID]},
            "ward": self.ward,
            "demo_users": [
                {"username": u.username, "password": u.password, "display_name": u.display_name,
                 "role": u.role}
                for u in default_demo_users()
            ],
            "admin_url": f"{self.base_url}/_sandbox",
            "admin_token": self._secrets["admin_token"],
            "data_dir": str(self.data_dir),
            "version": __version__,
            "pid": os.getpid(),
        }
        if relay is not None:
            info["relay"] = relay
        else:
            # For a relay run beside the sandbox (`--no-relay`): its client, with the scopes
            # a relay needs (system reads, Subscription management).
            info["relay_client"] = {"client_id": RELAY_CLIENT_ID,
                                    "client_secret": self._secrets[RELAY_CLIENT_ID]}
        return info

    # ------------------------------------------------------------------ realtime tokens
    async def _realtime_token(self, request: web.Request) -> web.Response:
        """Exchange a clinician's FHIR access token for a short-lived Ably token, with the
        relay's rules (`relay/token_exchange.py`, docs/relay.md).

        Least privilege: subscribe on the user's ward channel, presence on record channels;
        publishing pokes or attaching another ward is refused by the hub. Only a token with a
        user-level read scope qualifies (`openid` alone does not), and the Ably token never
        outlives the access token, so signing out (or its expiry) ends realtime access too.
        """
        assert self.oauth is not None and self.hub is not None
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        grant = self._verify_bearer(token)
        headers = {"Cache-Control": "no-store"}
        remaining_s = grant.expires_at - time.time() if grant is not None else 0.0
        if grant is None or remaining_s < MIN_REALTIME_TOKEN_TTL_S:
            return web.json_response(
                {"error": "invalid_token"}, status=401, headers={
                    **headers, "WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not grant.subject.startswith("Practitioner/") or not permits_realtime(grant.scopes):
            return web.json_response({"error": "insufficient_scope"}, status=403,
                                     headers=headers)
        ward = grant.ward or self.ward
        details = self.hub.mint_token(
            key_name=HUB_KEY_NAME,
            client_id=grant.subject.split("/", 1)[1],
            capability=capability_for(ward),
            ttl_s=min(self.config.realtime_token_ttl_s, remaining_s),
        )
        return web.json_response(details, headers=headers)

    # ------------------------------------------------------------------ control endpoints
    def _admin_ok(self, request: web.Request) -> bool:
        expected = f"Bearer {self._secrets['admin_token']}"
        return secrets.compare_digest(request.headers.get("Authorization", ""), expected)

    async def _admin_faults(self, request: web.Request) -> web.Response:
        if not self._admin_ok(request):
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            body = await request.json()
            mode = body.get("mode")
            if mode == "fail":
                self.faults.fail(int(body.get("status", 503)), float(body.get("for_s", 30)))
            elif mode == "slow":
                self.faults.slow(float(body.get("delay_s", 2)), float(body.get("for_s", 30)))
            elif mode == "hang":
                self.faults.hang(float(body.get("for_s", 30)))
            elif mode == "clear":
                self.faults.clear()
            else:
                raise ValueError("mode")
        except (ValueError, TypeError, AttributeError, json.JSONDecodeError):
            return web.json_response({"error": "bad fault request"}, status=400)
        return web.json_response({"ok": True})

    async def _admin_hub(self, request: web.Request) -> web.Response:
        if not self._admin_ok(request):
            return web.json_response({"error": "forbidden"}, status=403)
        assert self.hub is not None
        action = request.match_info["action"]
        if action == "stop":
            await self.hub.stop()
        elif action == "start":
            await self.hub.start(self.config.host, self.hub.port)
        elif action == "drop":
            await self.hub.drop_connections()
        else:
            return web.json_response({"error": "unknown action"}, status=404)
        return web.json_response({"ok": True})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        if not self._admin_ok(request):
            return web.json_response({"error": "forbidden"}, status=403)
        assert self.hub is not None
        pokes = None
        if self.relay is not None and self.relay.publisher is not None:
            pokes = {"published": self.relay.publisher.published,
                     "pending": self.pokes_pending(), "last_seq": self.last_seq,
                     "metrics_url": self.relay.ready_info()["metrics_url"]}
        return web.json_response({
            "hub": self.hub.stats(),
            "pokes": pokes,
            "simulator": dataclasses.asdict(self.simulator.stats) if self.simulator else None,
            "subscriptions": self.subscriptions.stats() if self.subscriptions else None,
        }, dumps=lambda o: json.dumps(o, default=str))


async def run_until_stopped(sandbox: Sandbox, stop: asyncio.Event) -> None:
    async with sandbox:
        await stop.wait()
