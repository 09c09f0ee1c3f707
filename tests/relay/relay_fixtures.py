"""A real sandbox (FHIR + OAuth + hub) without its own relay (`--no-relay`), so every
poke on the ward channel comes from the relay under test; relays in-process or as a
`wardsync relay` subprocess; a real ably realtime subscriber with a relay-minted token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ably import AblyRealtime
from prometheus_client.parser import text_string_to_metric_families

from tests.sandbox_fixtures import demo_sign_in
from wardsync.auth.session import Session
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME
from wardsync.relay.config import RelayConfig, load
from wardsync.relay.service import Relay
from wardsync.sandbox.server import Sandbox
from wardsync.sync.realtime_token import RealtimeTokenExchange

REPO = Path(__file__).resolve().parents[2]
FAST_SDK = {"realtime_request_timeout": 3000, "disconnected_retry_timeout": 300,
            "suspended_retry_timeout": 1000, "channel_retry_timeout": 500}


async def scrape(http: httpx.AsyncClient, url: str, name: str, **labels: str) -> float:
    """The value of one sample on the relay's /metrics (0 when absent)."""
    text = (await http.get(url)).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def write_secret(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value)
    path.chmod(0o600)
    return path


def relay_flags(sandbox: Sandbox, tmp: Path, data_dir: Path) -> dict[str, object]:
    info = sandbox.ready_info()
    return {
        "fhir_base": info["fhir_base"],
        "client_id": info["relay_client"]["client_id"],
        "client_secret_file": write_secret(tmp, "relay-client-secret",
                                           info["relay_client"]["client_secret"]),
        "ably_key_file": write_secret(tmp, "ably-key", info["ably_key"]),
        "ably_endpoint": info["ably_endpoint"],
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
    }


def relay_config(sandbox: Sandbox, tmp: Path, data_dir: Path, **reconcile: Any) -> RelayConfig:
    config = load(config_file=None, env={}, flags=relay_flags(sandbox, tmp, data_dir))
    config.reconcile.interval_s = reconcile.get("interval_s", 0.2)
    config.reconcile.overlap_s = reconcile.get("overlap_s", 1.0)
    config.reconcile.initial_lookback_s = 0.0
    config.reconcile.types = reconcile.get(
        "types", ["DiagnosticReport", "Observation", "Encounter", "Task"])
    # Poll only unless a test asks for Subscriptions: these tests are about the poll.
    config.subscriptions.mode = reconcile.get("subscriptions", "none")
    return config


@contextlib.asynccontextmanager
async def running_relay(config: RelayConfig) -> AsyncIterator[Relay]:
    relay = Relay(config)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


@dataclass
class PokeWatcher:
    """A workstation's view of the ward channel: a real ably realtime client whose token
    comes from the relay's token exchange (the desktop's own exchange class)."""

    client: AblyRealtime
    pokes: list[dict[str, Any]] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)

    def on_message(self, message: Any) -> None:
        if message.name == HEARTBEAT_MESSAGE_NAME:  # the relay's liveness, not a poke
            self.heartbeats.append(message.data)
            return
        self.pokes.append(message.data)
        self.message_ids.append(message.id)

    def per_version(self) -> Counter[tuple[str, str]]:
        return Counter((f"{p['resourceType']}/{p['id']}", p["versionId"]) for p in self.pokes)

    def seqs(self) -> list[int]:
        return [p["seq"] for p in self.pokes]


@contextlib.asynccontextmanager
async def poke_watcher(sandbox: Sandbox, session: Session, http: httpx.AsyncClient,
                       token_url: str) -> AsyncIterator[PokeWatcher]:
    exchange = RealtimeTokenExchange(http, token_url, session)

    async def auth_callback(_params: dict[str, Any]) -> dict[str, Any]:
        return await exchange()

    info = sandbox.ready_info()
    client = AblyRealtime(endpoint=f"{info['ably_endpoint']}/", tls=False,
                          auth_callback=auth_callback, **FAST_SDK)
    watcher = PokeWatcher(client)
    try:
        await client.channels.get(f"ward:{info['ward']}").subscribe(watcher.on_message)
        yield watcher
    finally:
        await client.close()


async def clinician_session(sandbox: Sandbox, http: httpx.AsyncClient) -> Session:
    return await demo_sign_in(sandbox, http)


class RelayProcess:
    """`wardsync relay` as a subprocess (SIGKILL and restart tests); its JSON logs go to
    `log_file`."""

    def __init__(self, flags: dict[str, object], config_file: Path, log_file: Path) -> None:
        self.flags = flags
        self.config_file = config_file
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, str] = {}

    def argv(self) -> list[str]:
        args = ["-m", "wardsync", "relay", "--config", str(self.config_file)]
        for name, value in self.flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        return args

    async def start(self, timeout_s: float = 30.0) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO / "desktop")}
        with open(self.log_file, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.argv(), stdout=asyncio.subprocess.PIPE, stderr=log,
                env=env)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise AssertionError(f"relay exited before ready: {self.log_tail()}")
        self.ready = json.loads(line)
        return self.ready

    def log_tail(self) -> str:
        return self.log_file.read_text()[-3000:] if self.log_file.exists() else ""

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
