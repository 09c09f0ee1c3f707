"""Precedence across the five layers and machine-policy locks (docs/architecture.md §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardsync.infra.settings import (
    SETTINGS,
    ConfigError,
    default_settings,
    load_settings,
)

KEY = "sync.polling_interval_s"
ENV = "WARDSYNC_SYNC_POLLING_INTERVAL_S"


def test_each_layer_overrides_the_one_before(load, policy_file, user_file):
    policy = "[sync]\npolling_interval_s = 20\n"
    user = "[sync]\npolling_interval_s = 25.5\n"
    env = {ENV: "30"}
    cli = {KEY: "35"}

    assert load()[KEY] == 15.0
    assert load().source_of(KEY) == "default"

    only_policy = load(policy=policy)
    assert (only_policy[KEY], only_policy.source_of(KEY)) == (20.0, f"policy:{policy_file}")

    with_user = load(policy=policy, user=user)
    assert (with_user[KEY], with_user.source_of(KEY)) == (25.5, f"user:{user_file}")

    with_env = load(policy=policy, user=user, env=env)
    assert (with_env[KEY], with_env.source_of(KEY)) == (30.0, f"env:{ENV}")

    with_cli = load(policy=policy, user=user, env=env, cli=cli)
    assert (with_cli[KEY], with_cli.source_of(KEY)) == (35.0, "cli")
    assert with_cli.warnings == ()


def test_layers_mix_per_key(load, policy_file, user_file):
    settings = load(
        policy='[fhir]\nbase_url = "https://fhir.example-hospital.org/r4"\n'
        "[alerts]\nescalation_after_min = 10\n",
        user='[ui]\ntheme = "high-contrast"\n[alerts]\nescalation_after_min = 12\n',
        env={"WARDSYNC_FHIR_TIMEOUT_S": "4.5"},
        cli={"realtime.ward": "ward-7b"},
    )
    assert settings["fhir.base_url"] == "https://fhir.example-hospital.org/r4"
    assert settings.source_of("fhir.base_url") == f"policy:{policy_file}"
    assert settings["alerts.escalation_after_min"] == 12.0
    assert settings.source_of("alerts.escalation_after_min") == f"user:{user_file}"
    assert settings["ui.theme"] == "high-contrast"
    assert settings["fhir.timeout_s"] == 4.5
    assert settings.source_of("fhir.timeout_s") == "env:WARDSYNC_FHIR_TIMEOUT_S"
    assert settings["realtime.ward"] == "ward-7b"
    assert settings.source_of("realtime.ward") == "cli"
    assert settings.source_of("sync.backoff_cap_s") == "default"


def test_missing_files_mean_defaults(tmp_path):
    settings = load_settings(
        environ={}, policy_path=tmp_path / "none.toml", user_path=tmp_path / "none2.toml"
    )
    assert dict(settings.values) == dict(default_settings().values)
    assert {settings.source_of(k) for k in settings} == {"default"}
    assert settings.warnings == ()


def test_defaults_when_paths_come_from_the_environment(tmp_path):
    # With no explicit user path, the user file is found through XDG_CONFIG_HOME.
    config_home = tmp_path / "xdg"
    (config_home / "wardsync").mkdir(parents=True)
    (config_home / "wardsync" / "config.toml").write_text('[ui]\ntheme = "high-contrast"\n')
    settings = load_settings(
        environ={"XDG_CONFIG_HOME": str(config_home), "HOME": str(tmp_path)},
        policy_path=tmp_path / "no-policy.toml",
    )
    assert settings["ui.theme"] == "high-contrast"
    assert settings.source_of("ui.theme") == f"user:{config_home / 'wardsync' / 'config.toml'}"


def test_every_key_is_present_in_table_order(load):
    settings = load()
    assert settings.keys() == tuple(s.name for s in SETTINGS)
    assert list(settings) == [s.name for s in SETTINGS]


def test_unknown_key_raises_instead_of_returning_none(load):
    settings = load()
    with pytest.raises(KeyError, match=r"fhir\.base_url"):
        settings["fhir.baseurl"]
    with pytest.raises(KeyError):
        settings.get("fhir.baseurl")
    with pytest.raises(KeyError):
        settings.source_of("nope")
    assert settings.get("fhir.base_url") is None
    assert settings.get("fhir.base_url", "sandbox") == "sandbox"
    assert settings.get("fhir.timeout_s", 99.0) == 10.0


def test_settings_are_immutable(load):
    settings = load()
    with pytest.raises(TypeError):
        settings.values["fhir.timeout_s"] = 1.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.warnings = ("x",)  # type: ignore[misc]


# ------------------------------------------------------------------------------- locking

LOCKING_POLICY = """
[fhir]
base_url = "https://fhir.example-hospital.org/r4"
[alerts]
escalation_after_min = 10
[locked]
keys = ["fhir.base_url", "alerts.escalation_after_min", "security.require_tls"]
"""


def test_locked_keys_ignore_user_env_and_cli_and_report_each_attempt(
    load, policy_file, user_file
):
    settings = load(
        policy=LOCKING_POLICY,
        user='[fhir]\nbase_url = "https://evil.example.org/fhir"\n'
        "[alerts]\nescalation_after_min = 55\n",
        env={
            "WARDSYNC_FHIR_BASE_URL": "https://other.example.org/fhir",
            "WARDSYNC_SECURITY_REQUIRE_TLS": "false",
        },
        cli={"alerts.escalation_after_min": "45", "fhir.base_url": ""},
    )
    assert settings["fhir.base_url"] == "https://fhir.example-hospital.org/r4"
    assert settings.source_of("fhir.base_url") == f"policy:{policy_file}"
    assert settings["alerts.escalation_after_min"] == 10.0
    assert settings.source_of("alerts.escalation_after_min") == f"policy:{policy_file}"
    # Locked without a value in the policy: the built-in default is what is locked.
    assert settings["security.require_tls"] is True
    assert settings.source_of("security.require_tls") == "default"
    assert settings.is_locked("fhir.base_url")
    assert not settings.is_locked("ui.theme")

    locked_warnings = [w for w in settings.warnings if "locked by the machine policy" in w]
    attempts = {
        ("fhir.base_url", f"user:{user_file}"),
        ("fhir.base_url", "env:WARDSYNC_FHIR_BASE_URL"),
        ("fhir.base_url", "cli"),
        ("alerts.escalation_after_min", f"user:{user_file}"),
        ("alerts.escalation_after_min", "cli"),
        ("security.require_tls", "env:WARDSYNC_SECURITY_REQUIRE_TLS"),
    }
    assert len(locked_warnings) == len(attempts)
    for key, layer in attempts:
        assert any(w.startswith(f"{key}:") and f"from {layer} " in w for w in locked_warnings), (
            key, layer, locked_warnings)


def test_a_locked_key_with_a_bad_override_is_reported_as_locked_not_as_a_crash(load):
    settings = load(policy=LOCKING_POLICY, cli={"alerts.escalation_after_min": "soon"})
    assert settings["alerts.escalation_after_min"] == 10.0
    assert any("locked" in w and "from cli" in w for w in settings.warnings)


def test_unlocked_policy_values_can_still_be_overridden(load, user_file):
    settings = load(
        policy='[ui]\ntheme = "high-contrast"\n[locked]\nkeys = ["fhir.base_url"]\n',
        user='[ui]\ntheme = "light"\n',
    )
    assert settings["ui.theme"] == "light"
    assert settings.source_of("ui.theme") == f"user:{user_file}"
    assert settings.warnings == ()


def test_only_the_policy_can_lock(load, user_file):
    settings = load(
        user='[locked]\nkeys = ["ui.theme"]\n',
        env={"WARDSYNC_UI_THEME": "high-contrast"},
    )
    assert settings["ui.theme"] == "high-contrast"
    assert not settings.is_locked("ui.theme")
    assert any(w.startswith(f"user:{user_file}: [locked]") for w in settings.warnings)


# --------------------------------------------------------------- bad layers, by severity


def test_bad_user_file_values_are_skipped_with_warnings_and_the_app_still_starts(
    load, user_file
):
    settings = load(
        policy="[sync]\npolling_interval_s = 20\n",
        user='[sync]\npolling_interval_s = "fast"\nbackoff_cap_s = 12\n'
        "[fhir]\nbaseurl = 'https://x.example.org'\n[colour]\nscheme = 1\n",
    )
    # The bad user value is skipped: the policy's value stays.
    assert settings["sync.polling_interval_s"] == 20.0
    assert settings["sync.backoff_cap_s"] == 12.0  # the good value in the same file applies
    warnings = "\n".join(settings.warnings)
    assert f"sync.polling_interval_s: the value from user:{user_file} was ignored" in warnings
    assert "expected a number, got string 'fast'" in warnings
    assert "unknown key 'fhir.baseurl' ignored (did you mean 'fhir.base_url'?)" in warnings
    assert "unknown key 'colour'" in warnings


def test_user_file_that_is_not_toml_is_ignored_with_a_warning(load, user_file):
    settings = load(user="[sync\npolling_interval_s = 3\n")
    assert settings["sync.polling_interval_s"] == 15.0
    assert len(settings.warnings) == 1
    assert settings.warnings[0].startswith(f"user:{user_file}: not valid TOML")


def test_bad_and_unknown_environment_variables_are_warnings(load):
    settings = load(
        env={
            "WARDSYNC_SYNC_PULL_DEBOUNCE_MS": "fifty",
            "WARDSYNC_SYNC_POLING_INTERVAL_S": "5",
            "WARDSYNC_TEST_ARTIFACTS": "/tmp/a",  # used by the test suite, not a setting
            "PATH": "/usr/bin",
        }
    )
    assert settings["sync.pull_debounce_ms"] == 10
    warnings = "\n".join(settings.warnings)
    assert "env:WARDSYNC_SYNC_PULL_DEBOUNCE_MS was ignored: expected a whole number" in warnings
    assert "env:WARDSYNC_SYNC_POLING_INTERVAL_S: not a WardSync setting" in warnings
    assert "did you mean 'WARDSYNC_SYNC_POLLING_INTERVAL_S'" in warnings
    assert "TEST_ARTIFACTS" not in warnings
    assert len(settings.warnings) == 2


def test_bad_command_line_value_is_an_error_naming_key_and_layer(load):
    with pytest.raises(ConfigError) as caught:
        load(cli={"sync.pull_debounce_ms": "1.5"})
    assert caught.value.key == "sync.pull_debounce_ms"
    assert caught.value.layer == "cli"
    assert "sync.pull_debounce_ms" in str(caught.value)
    assert "cli" in str(caught.value)
    assert "expected a whole number, got '1.5'" in str(caught.value)


def test_unknown_command_line_key_is_an_error_with_a_suggestion(load):
    with pytest.raises(ConfigError, match=r"did you mean 'ui\.theme'") as caught:
        load(cli={"ui.them": "light"})
    assert caught.value.key == "ui.them"


def test_invalid_policy_stops_the_app_naming_key_and_layer(load, policy_file):
    with pytest.raises(ConfigError) as caught:
        load(policy="[fhir]\ntimeout_s = 'ten'\n", user='[ui]\ntheme = "light"\n')
    assert caught.value.key == "fhir.timeout_s"
    assert caught.value.layer == f"policy:{policy_file}"
    assert "fhir.timeout_s: expected a number, got string 'ten'" in str(caught.value)


def test_policy_that_is_not_toml_stops_the_app(load, policy_file):
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load(policy="[fhir\n")
    assert caught.value.layer == f"policy:{policy_file}"


def test_unreadable_policy_stops_the_app(tmp_path):
    # A directory where the file should be: reading fails with an OSError other than
    # "not found", which must not silently drop the policy (and its locks).
    policy_dir = tmp_path / "config.toml"
    policy_dir.mkdir()
    with pytest.raises(ConfigError, match="cannot read the machine policy"):
        load_settings(environ={}, policy_path=policy_dir, user_path=tmp_path / "u.toml")


def test_default_settings_match_the_table():
    settings = default_settings()
    for setting in SETTINGS:
        assert settings[setting.name] == setting.default
        assert settings.source_of(setting.name) == "default"


def test_reading_the_real_process_environment_when_environ_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDSYNC_UI_THEME", "high-contrast")
    settings = load_settings(policy_path=tmp_path / "p.toml", user_path=tmp_path / "u.toml")
    assert settings["ui.theme"] == "high-contrast"
    assert settings.source_of("ui.theme") == "env:WARDSYNC_UI_THEME"


def test_policy_path_is_read_not_created(tmp_path):
    load_settings(environ={}, policy_path=tmp_path / "p.toml", user_path=tmp_path / "u.toml")
    assert not Path(tmp_path / "p.toml").exists()
    assert not Path(tmp_path / "u.toml").exists()
