"""`wardsync sandbox` as a child process: the ready-line contract and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ably import AblyRest

from tests.sandbox_absent import env_without_sandbox
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME
from wardsync.infra.sandbox_process import (
    SANDBOX_NOT_INSTALLED_EXIT,
    SANDBOX_NOT_INSTALLED_MESSAGE,
)

REQUIRED = {"fhir_base", "ably_endpoint", "smart_config", "token_url", "ably_token_url",
            "ably_key", "lab_client", "ward"}


def start(*args: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wardsync", "sandbox", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


async def test_ready_line_names_working_endpoints(tmp_path: Path) -> None:
    proc, info = start("--port", "0", "--data-dir", str(tmp_path / "d"), "--seed", "3",
                       "--no-simulator")
    try:
        assert info.keys() >= REQUIRED
        assert info["fhir_base"].startswith("http://127.0.0.1:") and info["fhir_base"].endswith(
            "/fhir")
        assert info["ward"] == "ward-7a"
        async with httpx.AsyncClient(timeout=10) as http:
            meta = await http.get(f"{info['fhir_base']}/metadata")
            assert meta.json()["resourceType"] == "CapabilityStatement"
            smart = (await http.get(info["smart_config"])).json()
            assert smart["token_endpoint"] == info["token_url"]
            lab = info["lab_client"]
            token = await http.post(info["token_url"], data={"grant_type": "client_credentials"},
                                    auth=(lab["client_id"], lab["client_secret"]))
            bearer = token.json()["access_token"]
            patients = await http.get(f"{info['fhir_base']}/Patient",
                                      headers={"Authorization": f"Bearer {bearer}"})
            assert patients.json()["total"] == 24
            # A lab system is not a clinician: no realtime token for it.
            refused = await http.post(info["ably_token_url"],
                                      headers={"Authorization": f"Bearer {bearer}"})
            assert refused.status_code == 403
        host, port = info["ably_endpoint"].rsplit(":", 1)
        rest = AblyRest(key=info["ably_key"], use_token_auth=True, endpoint=host,
                        port=int(port), tls=False)
        history = await rest.channels.get(f"ward:{info['ward']}").history()
        # Nothing written yet: no pokes (the relay's heartbeats only).
        assert [m.name for m in history.items if m.name != HEARTBEAT_MESSAGE_NAME] == []
        await rest.close()
        # The relay runs as its own component and does the token exchange; its client's
        # secret is not handed out.
        assert "relay_client" not in info
        assert info["ably_token_url"] == info["relay"]["token_url"]
        assert not info["ably_token_url"].startswith(info["fhir_base"].removesuffix("/fhir"))
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(info["relay"]["health_url"])).status_code == 200
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "d" / "fhir.sqlite3").exists()  # data kept where asked
    assert (tmp_path / "d" / "relay" / "relay.sqlite3").exists()  # the relay's own state


async def test_no_relay_leaves_the_relay_out_and_hands_out_its_client(tmp_path: Path) -> None:
    proc, info = start("--data-dir", str(tmp_path / "d"), "--no-simulator", "--no-relay")
    try:
        assert info.keys() >= REQUIRED and "relay" not in info
        relay = info["relay_client"]
        async with httpx.AsyncClient(timeout=10) as http:
            token = await http.post(info["token_url"], data={"grant_type": "client_credentials"},
                                    auth=(relay["client_id"], relay["client_secret"]))
            assert token.status_code == 200
            scopes = set(token.json()["scope"].split())
            # What a relay needs: read what it announces, manage its own Subscriptions.
            assert {"system/Subscription.cruds", "system/Observation.rs",
                    "system/DiagnosticReport.rs", "system/Encounter.rs",
                    "system/Location.rs"} <= scopes
            bearer = token.json()["access_token"]
            subs = await http.get(f"{info['fhir_base']}/Subscription",
                                  headers={"Authorization": f"Bearer {bearer}"})
            assert subs.json()["total"] == 0  # no relay made any
    finally:
        assert stop(proc) == 0
    assert not (tmp_path / "d" / "relay").exists()


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_removes_the_temporary_data() -> None:
    proc, info = start("--no-simulator")
    data_dir = Path(info["data_dir"])
    assert data_dir.exists()
    t0 = time.monotonic()
    assert stop(proc) == 0
    assert time.monotonic() - t0 < 10
    assert not data_dir.exists()
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.slow
def test_simulator_writes_pokes_by_default(tmp_path: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wardsync", "sandbox", "--results-per-min", "120",
         "--vitals-per-min", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    info = json.loads(proc.stdout.readline())
    try:
        deadline = time.monotonic() + 15
        while True:
            stats = httpx.get(f"{info['admin_url']}/stats",
                              headers={"Authorization": f"Bearer {info['admin_token']}"}).json()
            if stats["pokes"]["published"] >= 5:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
    finally:
        assert stop(proc) == 0


def test_without_the_sandbox_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wardsync", "sandbox", "--no-simulator"],
        capture_output=True, text=True, env=env_without_sandbox(tmp_path), timeout=60,
    )
    assert out.returncode == SANDBOX_NOT_INSTALLED_EXIT
    assert out.stdout == ""  # no ready line: a parent waiting for one learns from the exit
    assert out.stderr.strip() == (
        f"wardsync sandbox: {SANDBOX_NOT_INSTALLED_MESSAGE} (missing: aiohttp)")


def test_the_per_user_connection_cap_can_be_raised_for_load_tests() -> None:
    import argparse

    from wardsync.sandbox.cli import _config, add_arguments
    from wardsync.sandbox.hub.config import MAX_CONNECTIONS_PER_CLIENT

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert _config(parser.parse_args([])).hub_config.max_connections_per_client \
        == MAX_CONNECTIONS_PER_CLIENT
    raised = _config(parser.parse_args(["--hub-connections-per-user", "160"]))
    assert raised.hub_config.max_connections_per_client == 160
