"""Configuring the relay's PostgreSQL (shared state and leader lease): a libpq URL that names
no password; the password from a file or the environment, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardsync.cli import main
from wardsync.relay.config import load

BASE = {"WARDSYNC_RELAY_FHIR_BASE": "https://fhir.example.org/fhir",
        "WARDSYNC_RELAY_ABLY_ENDPOINT": "rest.ably.io",
        "WARDSYNC_RELAY_FHIR_CLIENT_SECRET": "client-secret",
        "WARDSYNC_RELAY_ABLY_KEY": "app.key:xyz"}


def test_database_url_and_password_file(tmp_path: Path):
    password = tmp_path / "db-password"
    password.write_text("pg-s3cret\n")
    config_file = tmp_path / "relay.toml"
    config_file.write_text(f'[relay]\ndatabase_url = "postgresql://relay@db.example.org/relay"\n'
                           f'database_password_file = "{password}"\n')
    config = load(config_file=config_file, env=BASE)
    assert config.uses_postgres
    assert config.database_password(BASE) == "pg-s3cret"
    assert config.validate(BASE) == []


def test_the_password_may_come_from_the_environment_and_is_optional():
    env = {**BASE, "WARDSYNC_RELAY_RELAY_DATABASE_URL": "postgres://relay@db:5433/relay"}
    config = load(config_file=None, env=env)
    assert config.database_password(env) is None  # libpq's own means (.pgpass, certificates)
    with_password = {**env, "WARDSYNC_RELAY_DATABASE_PASSWORD": "from-env"}
    config = load(config_file=None, env=with_password)  # not mistaken for a setting
    assert config.database_password(with_password) == "from-env"
    assert config.validate(with_password) == []


@pytest.mark.parametrize(("url", "problem"), [
    ("postgresql://relay:hunter2@db/relay", "must not contain a password"),
    ("postgresql://relay@db/relay?password=hunter2", "must not contain a password"),
    ("mysql://relay@db/relay", "must be a postgresql:// URL"),
    ("postgresql://relay@db:99999999/relay", "not a valid URL"),
])
def test_bad_database_urls_are_refused_without_echoing_them(url: str, problem: str):
    env = {**BASE, "WARDSYNC_RELAY_RELAY_DATABASE_URL": url}
    problems = load(config_file=None, env=env).validate(env)
    assert len(problems) == 1 and problem in problems[0]
    assert "hunter2" not in problems[0]


def test_a_password_key_in_the_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config_file = tmp_path / "relay.toml"
    config_file.write_text('[relay]\ndatabase_password = "hunter2"\n')
    assert main(["relay", "check", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "relay.database_password" in err and "secrets go in a file" in err
    assert "hunter2" not in err


def test_an_unreadable_password_file_is_a_problem(tmp_path: Path):
    env = {**BASE, "WARDSYNC_RELAY_RELAY_DATABASE_URL": "postgresql://relay@db/relay",
           "WARDSYNC_RELAY_RELAY_DATABASE_PASSWORD_FILE": str(tmp_path / "missing")}
    problems = load(config_file=None, env=env).validate(env)
    assert problems == [f"relay.database_password_file: cannot read {tmp_path / 'missing'} "
                        "(No such file or directory)"]
