"""The relay's systemd unit, system user and configuration template as the packages ship
them: the unit verified by the real systemd-analyze, its hardening asserted key by key, the
template loaded by the relay's own configuration loader."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from wardsync_build import linux_layout

from tests.packaging.conftest import REPO, require_tool, run
from wardsync.relay.config import load

LINUX = REPO / "packaging" / "linux"
UNIT = LINUX / "wardsync-relay.service"
STATE_DIR = "/var/lib/wardsync-relay"
MAX_EXPOSURE = 4.0  # systemd-analyze security: below 4 is rated "OK"


def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} (systemd.syntax(7): keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture
def service() -> dict[str, list[str]]:
    return unit_entries(UNIT.read_text())["Service"]


def test_runs_the_bundle_as_its_own_user_with_the_config_file(service):
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith(
        "/opt/wardsync/wardsync relay --config /etc/wardsync/relay.toml ")
    assert service["User"] == ["wardsync-relay"] and service["Group"] == ["wardsync-relay"]
    # Secrets as files systemd copies into the credentials directory; only paths in argv.
    assert service["LoadCredential"] == [
        "fhir-client-secret:/etc/wardsync/relay-client-secret",
        "ably-key:/etc/wardsync/relay-ably-key"]
    assert "--client-secret-file %d/fhir-client-secret" in exec_start
    assert "--ably-key-file %d/ably-key" in exec_start
    assert not re.search(r"--(client-secret|ably-key|password|token)(\s|=)", exec_start)


def test_hardening_and_lifetime(service):
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "StateDirectory": "wardsync-relay", "StateDirectoryMode": "0700",
        "ReadWritePaths": STATE_DIR, "Restart": "on-failure", "KillSignal": "SIGTERM",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "UMask": "0077",
    }
    assert {k: service.get(k) for k in expected} == {k: [v] for k, v in expected.items()}
    # Longer than the relay's drain (5 s) so SIGTERM is never cut short by SIGKILL.
    assert float(service["TimeoutStopSec"][0]) >= 10
    assert service["Environment"] == [f"WARDSYNC_RELAY_RELAY_DATA_DIR={STATE_DIR}"]


def test_systemd_analyze_verifies_the_unit_and_rates_it_ok(tmp_path: Path):
    analyze = require_tool("systemd-analyze")
    # A root with the unit, a stand-in executable and systemd's own targets, since the
    # bundle is not installed on this machine.
    root = tmp_path / "root"
    units = root / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy(target, units)
    shutil.copy(UNIT, units)
    exe = root / "opt" / "wardsync" / "wardsync"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc" / "wardsync").mkdir(parents=True)
    (root / "etc" / "wardsync" / "relay.toml").write_text("")
    verified = run(analyze, "verify", f"--root={root}", str(linux_layout.RELAY_UNIT))
    assert verified.stderr.strip() == "" and verified.stdout.strip() == "", verified.stderr
    rating = run(analyze, "security", "--offline=yes", f"--root={root}",
                 "--no-pager", "wardsync-relay.service").stdout
    match = re.search(r"Overall exposure level for wardsync-relay\.service: ([0-9.]+)", rating)
    assert match, rating[-500:]
    assert float(match.group(1)) < MAX_EXPOSURE, rating


def test_the_system_user_is_declared_for_sysusers():
    line = (LINUX / "wardsync-relay.sysusers").read_text().splitlines()[-1]
    assert line == f'u wardsync-relay - "WardSync relay" {STATE_DIR} /usr/sbin/nologin'


def test_the_configuration_template_is_what_the_relay_loads(tmp_path: Path):
    template = LINUX / "relay.toml.example"
    config = load(config_file=template, env={})
    assert config.fhir.base.startswith("https://")
    assert config.relay.database_url is None  # HA is opt-in
    # With the two secrets the unit passes as files, it validates.
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    key = tmp_path / "key"
    key.write_text("app.key:secret\n")
    config.fhir.client_secret_file = secret
    config.ably.key_file = key
    assert config.validate({}) == []
    # Every commented key is a real one: uncommented, the file still loads.
    uncommented = re.sub(r"^# ([a-z_]+ = )", r"\1", template.read_text(), flags=re.M)
    (tmp_path / "all.toml").write_text(uncommented)
    full = load(config_file=tmp_path / "all.toml", env={})
    assert full.relay.database_url and full.relay.database_password_file
