"""Relay configuration: TOML < WARDSYNC_RELAY_* < flags; secrets only from files or the
environment; `wardsync relay check FILE`; secret-looking flags refused without echo."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardsync.cli import main
from wardsync.relay.config import ConfigError, load, refuse_secret_flags

GOOD = """
[relay]
listen = "127.0.0.1:8470"
default_ward = "ward-a"

[fhir]
base = "https://fhir.example.org/fhir"
client_id = "wardsync-relay"
client_secret_file = "{secret}"

[ably]
endpoint = "rest.ably.io"
key_file = "{key}"

[reconcile]
interval_s = 10
types = ["Observation", "DiagnosticReport"]
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t-value\n")
    key = tmp_path / "ably-key"
    key.write_text("app.key:abc\n")
    config = tmp_path / "relay.toml"
    config.write_text(GOOD.format(secret=secret, key=key))
    return {"secret": secret, "key": key, "config": config}


def test_layers_file_then_environment_then_flags(files: dict[str, Path]):
    env = {"WARDSYNC_RELAY_RECONCILE_INTERVAL_S": "3", "WARDSYNC_RELAY_RELAY_LISTEN": "0.0.0.0:1"}
    config = load(config_file=files["config"], env=env, flags={"listen": "127.0.0.1:9"})
    assert config.reconcile.interval_s == 3.0  # environment beats the file
    assert config.relay.listen == "127.0.0.1:9"  # flags beat the environment
    assert config.reconcile.types == ["Observation", "DiagnosticReport"]
    assert config.relay.default_ward == "ward-a"
    assert config.client_secret({}) == "s3cr3t-value"
    assert config.ably_key({}) == "app.key:abc"
    assert config.validate({}) == []


def test_secrets_may_come_from_the_environment():
    env = {"WARDSYNC_RELAY_FHIR_BASE": "https://fhir.example.org/fhir",
           "WARDSYNC_RELAY_ABLY_ENDPOINT": "rest.ably.io",
           "WARDSYNC_RELAY_FHIR_CLIENT_SECRET": "from-env",
           "WARDSYNC_RELAY_ABLY_KEY": "app.key:xyz"}
    config = load(config_file=None, env=env)
    assert config.client_secret(env) == "from-env"
    assert config.validate(env) == []


@pytest.mark.parametrize(("toml", "error"), [
    ("[fhir]\nclient_secret = 'x'", "unknown key fhir.client_secret (secrets go in a file"),
    ("[nope]\nx = 1", "unknown section [nope]"),
    ("[reconcile]\ninterval_s = 'soon'", "reconcile.interval_s must be a number"),
    ("not toml [", "not valid TOML"),
])
def test_bad_files_are_refused_with_the_key_named(tmp_path: Path, toml: str, error: str):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("(", r"\(")):
        load(config_file=path, env={})


def test_validation_names_every_problem(tmp_path: Path):
    path = tmp_path / "r.toml"
    path.write_text("[fhir]\nbase = 'http://fhir.example.org/fhir'\nca_bundle = '/nonexistent'\n"
                    "[ably]\nmax_pokes_per_s = 80\n[reconcile]\ntypes = ['Secret']\n")
    problems = "\n".join(load(config_file=path, env={}).validate({}))
    assert "must be reached over https" in problems
    assert "ably.endpoint is required" in problems
    assert "fhir.client_secret_file is required (or set WARDSYNC_RELAY_FHIR_CLIENT_SECRET)" \
        in problems
    assert "max_pokes_per_s" in problems and "['Secret']" in problems
    assert "fhir.ca_bundle: /nonexistent is not a readable file" in problems
    path.write_text("[ably]\nendpoint = 'https://rest.ably.io/'\n")
    problems = "\n".join(load(config_file=path, env={}).validate({}))
    assert "ably.endpoint must be HOST[:PORT], got 'https://rest.ably.io/'" in problems


@pytest.mark.parametrize(("value", "ok"), [
    (None, True), ("0", True), ("1", True), ("30.5", True), ("3600", True),
    ("0.5", False), ("-15", False), ("3601", False)])
def test_the_heartbeat_period_is_off_or_within_what_workstations_accept(
        tmp_path: Path, value: str | None, ok: bool) -> None:
    path = tmp_path / "r.toml"
    path.write_text("" if value is None else f"[ably]\nheartbeat_s = {value}\n")
    config = load(config_file=path, env={})
    if value is None:
        assert config.ably.heartbeat_s == 15.0
    problems = [p for p in config.validate({}) if "heartbeat_s" in p]
    assert problems == ([] if ok else [
        "ably.heartbeat_s must be 0 (no heartbeats) or in [1, 3600]"])


def test_the_token_url_defaults_to_discovery_and_must_be_safe(files: dict[str, Path]):
    assert load(config_file=files["config"], env={}).fhir.token_url is None
    env = {"WARDSYNC_RELAY_FHIR_TOKEN_URL": "http://idp.example.org/token"}
    problems = load(config_file=files["config"], env=env).validate({})
    assert problems == ["fhir.token_url: idp.example.org must be reached over https: clinical "
                        "data is never sent unencrypted over a network"]
    env = {"WARDSYNC_RELAY_FHIR_TOKEN_URL": "https://idp.example.org/token"}
    config = load(config_file=files["config"], env=env)
    assert config.fhir.token_url == "https://idp.example.org/token" and config.validate({}) == []


def test_relay_check_command(files: dict[str, Path], tmp_path: Path, capsys):
    assert main(["relay", "check", str(files["config"])]) == 0
    assert "ok" in capsys.readouterr().out
    files["secret"].unlink()
    assert main(["relay", "check", str(files["config"])]) == 2
    assert "client-secret" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["relay", "--client-secret", "hunter2-value"],
    ["relay", "--ably-key=app.key:hunter2-value"],
])
def test_secret_flags_are_refused_without_echoing_them(argv: list[str], capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "not accepted on the command line" in err
    assert "hunter2-value" not in err


def test_refuse_secret_flags_allows_file_options():
    refuse_secret_flags(["--client-secret-file", "/x", "--ably-key-file=/y"])
    with pytest.raises(ConfigError):
        refuse_secret_flags(["--token", "t"])


@pytest.mark.parametrize(("section", "problem"), [
    ("[subscriptions]\nchannel = 'websocket'\n", None),
    ("[subscriptions]\nchannel = 'websocket'\nmode = 'topic'\n", None),
    ("[subscriptions]\nchannel = 'websocket'\nmode = 'classic'\n",
     "subscriptions.channel websocket needs topic-based subscriptions"),
    ("[subscriptions]\nchannel = 'email'\n",
     "subscriptions.channel must be one of rest-hook, websocket"),
])
def test_the_subscription_channel_is_checked(files: dict[str, Path], section: str,
                                             problem: str | None, capsys):
    files["config"].write_text(files["config"].read_text() + section)
    code = main(["relay", "check", str(files["config"])])
    err = capsys.readouterr().err
    if problem is None:
        assert code == 0, err
        assert load(config_file=files["config"], env={}).subscriptions.channel == "websocket"
    else:
        assert code == 2 and problem in err
