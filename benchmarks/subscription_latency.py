"""Benchmark: FHIR commit -> subscription notification at a plain HTTP listener.

The sandbox runs as its own process (`wardsync sandbox --no-simulator`). This driver starts a
plain aiohttp listener, signs in as the sandbox's relay client (client_credentials) and
creates two Subscriptions on the Observation topic / criteria, exactly as a hospital's relay
would: a topic-based `id-only` rest-hook (Subscriptions R5 Backport IG) and a classic R4
criteria rest-hook with payload (HAPI-style `PUT [endpoint]/Observation/[id]`). It then writes
Observations one at a time as the laboratory client, spaced `interval_s` apart, and records
when each version's notification reached the listener (wall clock; the server's
`meta.lastUpdated` is the commit time on the same host clock, as in the other benchmarks).

Beside them in the same run, for the very same writes: the whole realtime path, commit ->
Subscription notification -> `wardsync relay` (a child process, as a hospital runs it) ->
poke at a bare realtime subscriber (`PokeWatcher`). The sandbox runs with `--no-relay` so that
relay is the only one poking.

Run: `.venv/bin/python -m benchmarks.subscription_latency` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from benchmarks.common import (
    PokeWatcher,
    commit_wall,
    distribution,
    running_relay,
    running_sandbox,
    write_result,
)
from wardsync.sandbox.fhir.subscriptions.model import PAYLOAD_CONTENT_URL, SUBSCRIPTION_PROFILE
from wardsync.sandbox.fhir.subscriptions.topics import TOPIC_BASE

SETTLE_S = 3.0
OBSERVATION_TOPIC = f"{TOPIC_BASE}observation-changed"


@dataclass(frozen=True)
class Config:
    writes: int = 200
    interval_s: float = 0.05
    settle_s: float = SETTLE_S


class Listener:
    """A plain HTTP endpoint: records the arrival time of each notified version."""

    def __init__(self) -> None:
        self.topic: dict[str, float] = {}  # Observation id -> arrival (wall)
        self.classic: dict[tuple[str, str], float] = {}  # (id, versionId) -> arrival
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/topic", self._on_topic)
        app.router.add_put("/classic/Observation/{id}", self._on_classic)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_topic(self, request: web.Request) -> web.Response:
        now = time.time()
        bundle = json.loads(await request.read())
        for entry in bundle.get("entry", [])[1:]:
            ref = entry.get("fullUrl", "")
            if "/Observation/" in ref:
                self.topic.setdefault(ref.rsplit("/", 1)[1], now)
        return web.Response(status=200)

    async def _on_classic(self, request: web.Request) -> web.Response:
        now = time.time()
        resource = json.loads(await request.read())
        self.classic.setdefault((resource["id"], resource["meta"]["versionId"]), now)
        return web.Response(status=200)


async def _token(http: httpx.AsyncClient, info: dict[str, Any], client: str, scope: str
                 ) -> dict[str, str]:
    creds = info[client]
    r = await http.post(info["token_url"], data={"grant_type": "client_credentials",
                                                 "scope": scope},
                        auth=(creds["client_id"], creds["client_secret"]))
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _subscriptions(listener: Listener) -> list[dict[str, Any]]:
    topic = {
        "resourceType": "Subscription", "meta": {"profile": [SUBSCRIPTION_PROFILE]},
        "status": "requested", "reason": "benchmark: topic id-only",
        "criteria": OBSERVATION_TOPIC,
        "channel": {"type": "rest-hook", "endpoint": f"{listener.url}/topic",
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL,
                                                "valueCode": "id-only"}]}},
    }
    classic = {
        "resourceType": "Subscription", "status": "requested",
        "reason": "benchmark: classic criteria", "criteria": "Observation?status=final",
        "channel": {"type": "rest-hook", "endpoint": f"{listener.url}/classic",
                    "payload": "application/fhir+json"},
    }
    return [topic, classic]


async def _wait_active(http: httpx.AsyncClient, base: str, auth: dict[str, str],
                       sub_id: str) -> None:
    for _ in range(200):
        r = await http.get(f"{base}/Subscription/{sub_id}", headers=auth)
        if r.json().get("status") == "active":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"Subscription/{sub_id} did not become active")


async def run(cfg: Config) -> dict[str, Any]:
    listener = Listener()
    await listener.start()
    try:
        async with running_sandbox("--no-simulator", "--no-relay") as info, \
                running_relay(info, Path(tempfile.mkdtemp(prefix="relay-bench-"))), \
                httpx.AsyncClient(timeout=10.0) as http, PokeWatcher(info) as watcher:
            base = info["fhir_base"]
            relay = await _token(http, info, "relay_client",
                                 "system/Subscription.cruds system/Observation.rs")
            lab = await _token(http, info, "lab_client", "system/Observation.cru")
            for resource in _subscriptions(listener):
                r = await http.post(f"{base}/Subscription", json=resource, headers=relay)
                r.raise_for_status()
                await _wait_active(http, base, relay, r.json()["id"])
            written: list[tuple[str, str, float]] = []
            for i in range(cfg.writes):
                obs = {"resourceType": "Observation", "status": "final",
                       "category": [{"coding": [{
                           "system": "http://terminology.hl7.org/CodeSystem/"
                                     "observation-category", "code": "laboratory"}]}],
                       "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
                       # A patient on the ward: the relay announces it there.
                       "subject": {"reference": "Patient/pat-01"},
                       "valueQuantity": {"value": 4.0 + (i % 10) / 10, "unit": "mmol/L"}}
                r = await http.post(f"{base}/Observation", json=obs, headers=lab)
                r.raise_for_status()
                stored = r.json()
                written.append((stored["id"], stored["meta"]["versionId"], commit_wall(stored)))
                await asyncio.sleep(cfg.interval_s)
            await asyncio.sleep(cfg.settle_s)
            topic_ms, classic_ms, poke_ms = [], [], []
            missing = {"topic": 0, "classic": 0, "poke": 0}
            for obs_id, version, committed in written:
                for arrived, bucket, key in (
                        (listener.topic.get(obs_id), topic_ms, "topic"),
                        (listener.classic.get((obs_id, version)), classic_ms, "classic"),
                        (watcher.received.get((f"Observation/{obs_id}", version)), poke_ms,
                         "poke")):
                    if arrived is None:
                        missing[key] += 1
                    else:
                        bucket.append((arrived - committed) * 1000.0)
    finally:
        await listener.stop()
    return {
        "config": asdict(cfg),
        "writes": len(written),
        "missing": missing,
        "commit_to_topic_notification_ms": distribution(topic_ms),
        "commit_to_classic_put_ms": distribution(classic_ms),
        "commit_to_poke_through_relay_ms": distribution(poke_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=Config.writes)
    parser.add_argument("--interval", type=float, default=Config.interval_s)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="subscription_latency")
    args = parser.parse_args()
    result = asyncio.run(run(Config(writes=args.writes, interval_s=args.interval)))
    path = write_result(args.name, result, args.out)
    print(json.dumps({k: result[k] for k in result if k != "config"}, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
