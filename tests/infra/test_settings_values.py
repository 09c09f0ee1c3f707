"""Types, parsing and validation of setting values; the table's own invariants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit, CriticalLimits
from wardsync.core.loinc import loinc_check_digit
from wardsync.infra.settings import (
    DEFAULT_SCOPES,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    InvalidValue,
)

# ------------------------------------------------------------------------------ the table


def test_env_var_names_are_derived_and_unique():
    names = [s.env_var for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.env_var == "WARDSYNC_" + setting.name.upper().replace(".", "_")
        assert re.fullmatch(r"WARDSYNC_[A-Z0-9_]+", setting.env_var)
    # The metrics-log variable is a documented contract (docs/architecture.md §3.4).
    assert SETTINGS_BY_NAME["metrics.log"].env_var == "WARDSYNC_METRICS_LOG"


def test_every_key_is_documented_and_its_default_is_valid():
    assert len(SETTINGS_BY_NAME) == len(SETTINGS)
    for setting in SETTINGS:
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", setting.name), setting.name
        assert len(setting.description) > 20, setting.name
        if setting.default is not None and setting.validate is not None:
            setting.validate(setting.default)


def test_required_keys_and_defaults():
    expected = {
        "fhir.base_url": None,
        "fhir.timeout_s": 10.0,
        "fhir.ca_bundle": None,
        "auth.client_id": "wardsync-desktop",
        "realtime.token_url": None,
        "realtime.endpoint": None,
        "realtime.ward": None,
        "sync.polling_interval_s": 15.0,
        "sync.degraded_after_s": 10.0,
        "sync.pull_debounce_ms": 10,
        "sync.gap_grace_s": 2.0,
        "sync.backoff_cap_s": 30.0,
        "alerts.escalation_after_min": 15.0,
        "alerts.sound": True,
        "alerts.sound_mutable": False,
        "security.idle_lock_min": 10.0,
        "security.require_tls": True,
        "ui.theme": "light",
        "metrics.log": None,
    }
    for key, default in expected.items():
        assert SETTINGS_BY_NAME[key].default == default, key
    assert dict(SETTINGS_BY_NAME["alerts.critical_limits"].default) == {}
    scopes = SETTINGS_BY_NAME["auth.scopes"].default
    assert scopes == DEFAULT_SCOPES
    assert {"openid", "fhirUser", "offline_access", "user/Task.u", "user/AuditEvent.c"} <= set(
        scopes
    )
    assert not any("*" in s for s in scopes)


# ------------------------------------------------------------------------ text parsing


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("fhir.timeout_s", " 2.5 ", 2.5),
        ("fhir.timeout_s", "3", 3.0),
        ("sync.pull_debounce_ms", "0", 0),
        ("alerts.sound", "no", False),
        ("alerts.sound", "ON", True),
        ("alerts.sound", "1", True),
        ("alerts.sound_mutable", "true", True),
        ("ui.theme", "High-Contrast", "high-contrast"),
        ("logging.level", "debug", "DEBUG"),
        ("fhir.base_url", "", None),
        ("fhir.base_url", "http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir"),
        ("realtime.endpoint", "127.0.0.1:4567", "127.0.0.1:4567"),
        ("realtime.ward", "ward-7b", "ward-7b"),
        ("metrics.log", "/tmp/wardsync-metrics.jsonl", Path("/tmp/wardsync-metrics.jsonl")),
        ("metrics.log", "", None),
        ("auth.scopes", "openid fhirUser  user/Patient.rs", ("openid", "fhirUser",
                                                           "user/Patient.rs")),
        ("auth.scopes", "openid,user/Task.u", ("openid", "user/Task.u")),
        ("auth.scopes", '["openid", "user/Task.rs"]', ("openid", "user/Task.rs")),
    ],
)
def test_text_values_are_parsed_by_type(load, key, text, expected):
    settings = load(cli={key: text})
    assert settings[key] == expected
    assert type(settings[key]) is type(expected)


def test_paths_expand_the_home_directory():
    parsed = SETTINGS_BY_NAME["metrics.log"].parse_text("~/metrics.jsonl")
    assert parsed == Path.home() / "metrics.jsonl"


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("fhir.timeout_s", "ten", "expected a number, got 'ten'"),
        ("fhir.timeout_s", "nan", "expected a finite number"),
        ("fhir.timeout_s", "0", "must be greater than 0"),
        ("sync.pull_debounce_ms", "-1", "must not be negative"),
        ("sync.polling_interval_s", "0.2", "must be at least 1"),
        ("alerts.escalation_after_min", "90", "at most 60"),
        ("security.idle_lock_min", "0", "more than 0"),
        ("alerts.sound", "maybe", "expected true or false"),
        ("ui.theme", "dark", "expected one of light, high-contrast; got 'dark'"),
        ("fhir.base_url", "ftp://fhir.example.org", "is not an http(s) URL"),
        ("fhir.base_url", "https://fhir.example.org/r4?x=1", "must not have a query"),
        ("realtime.endpoint", "https://hub.example.org", "is not host[:port] or a ws(s)://"),
        ("realtime.endpoint", "127.0.0.1:99999", "out of range"),
        ("realtime.ward", "ward 7", "is not a FHIR logical id"),
        ("auth.client_id", " ", "must not be empty"),
        ("auth.scopes", "", "at least one scope"),
        ("auth.scopes", "[1, 2]", "expected an array of strings"),
        ("fhir.ca_bundle", "/nonexistent/ca.pem", "is not an existing file"),
    ],
)
def test_bad_text_values_give_clear_errors_naming_the_key(load, key, text, message):
    with pytest.raises(ConfigError) as caught:
        load(cli={key: text})
    assert key in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[fhir]\ntimeout_s = '10'", "expected a number, got string '10'"),
        ("[fhir]\ntimeout_s = true", "expected a number, got boolean True"),
        ("[sync]\npull_debounce_ms = 50.5", "expected a whole number, got number 50.5"),
        ("[alerts]\nsound = 'yes'", "expected true or false, got string 'yes'"),
        ("[auth]\nscopes = 'openid'", "expected an array of strings, got string 'openid'"),
        ("[auth]\nclient_id = 7", "expected a string, got integer 7"),
    ],
)
def test_toml_values_keep_their_types(tmp_path, toml, message):
    # TOML files are typed: a string is not silently turned into a number.
    from wardsync.infra.settings import check_policy_file

    path = tmp_path / "policy.toml"
    path.write_text(toml + "\n")
    problems = check_policy_file(path)
    assert len(problems) == 1
    assert message in problems[0]


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
def test_any_positive_float_round_trips_through_text(value):
    assert SETTINGS_BY_NAME["fhir.timeout_s"].parse_text(repr(value)) == value


# ---------------------------------------------------------------------- critical limits


def test_critical_limits_from_a_file(load):
    settings = load(
        user='[alerts.critical_limits]\n"2823-3" = { low = 3.0, high = 6.0, unit = "mmol/L" }\n'
        '"718-7" = { low = 0, unit = "g/L", name = "Hb" }\n'
    )
    limits = settings["alerts.critical_limits"]
    # The value is the alert rules' own type, ready to merge over the built-in table.
    assert isinstance(limits, CriticalLimits)
    assert limits["2823-3"] == CriticalLimit("2823-3", low=3.0, high=6.0, unit="mmol/L")
    assert limits["718-7"] == CriticalLimit("718-7", low=0.0, high=None, unit="g/L", name="Hb")
    merged = DEFAULT_CRITICAL_LIMITS.merged(limits)
    assert merged["2823-3"].high == 6.0
    assert merged["2951-2"] == DEFAULT_CRITICAL_LIMITS["2951-2"]
    with pytest.raises(TypeError):
        limits["2345-7"] = CriticalLimit("2345-7", 2.5, 25, "mmol/L")  # type: ignore[index]


def test_critical_limits_from_the_environment_as_a_toml_inline_table(load):
    settings = load(
        env={
            "WARDSYNC_ALERTS_CRITICAL_LIMITS":
                '{"2524-7" = {high = 4, unit = "mmol/L"}}'
        }
    )
    assert dict(settings["alerts.critical_limits"]) == {
        "2524-7": CriticalLimit("2524-7", low=None, high=4.0, unit="mmol/L")
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('{"2823-4" = {low = 2.8, unit = "mmol/L"}}', "'2823-4' has a wrong check digit "
                                                     "(expected 2823-3)"),
        ('{"potassium" = {low = 2.8, unit = "mmol/L"}}', "'potassium' is not a LOINC code"),
        ('{"2823-3" = {low = 6.2, high = 2.8, unit = "mmol/L"}}', "low must be below high"),
        ('{"2823-3" = {low = 2.8}}', "critical_limits['2823-3'].unit: must be a UCUM unit"),
        ('{"2823-3" = {unit = "mmol/L"}}', "needs a low or a high"),
        ('{"2823-3" = {low = "2.8", unit = "mmol/L"}}', "['2823-3'].low: must be a number"),
        ('{"2823-3" = {low = 2.8, unit = "mmol/L", hi = 6}}', "unknown field(s) hi"),
        ('{"2823-3" = 2.8}', "must be a table with low/high/unit"),
        ('["2823-3"]', "must be a table keyed by LOINC code"),
        ("{bad", "not a valid TOML value"),
    ],
)
def test_bad_critical_limits_are_rejected(table, message):
    with pytest.raises(InvalidValue) as caught:
        SETTINGS_BY_NAME["alerts.critical_limits"].parse_text(table)
    assert message in str(caught.value)


def test_loinc_check_digit_matches_every_code_the_product_uses():
    all_codes = [*codes.LAB_TESTS_BY_CODE, *codes.PANELS_BY_CODE, *(c.code for c in
                                                                  codes.VITAL_SIGNS)]
    for code in all_codes:
        number, check = code.split("-")
        assert loinc_check_digit(number) == int(check), code
    # The worked example of the LOINC Users' Guide 12 C.
    assert loinc_check_digit("12345") == 5


def test_loinc_codes_with_known_wrong_check_digits_are_accepted():
    # LOINC Users' Guide 12 C lists deprecated codes whose check digit does not compute.
    assert loinc_check_digit("6580") != 7
    parsed = SETTINGS_BY_NAME["alerts.critical_limits"].parse_text(
        '{"6580-7" = {high = 1, unit = "1"}}'
    )
    assert "6580-7" in parsed


# ------------------------------------------------------------------ require_tls and URLs


def test_plain_http_to_a_remote_host_is_refused_while_tls_is_required(load):
    with pytest.raises(ConfigError, match=r"fhir\.base_url.*use https://"):
        load(cli={"fhir.base_url": "http://fhir.example-hospital.org/r4"})
    with pytest.raises(ConfigError, match=r"realtime\.endpoint.*use wss://"):
        load(cli={"realtime.endpoint": "ws://hub.example-hospital.org"})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/fhir", "http://localhost/fhir", "http://[::1]:9/fhir"]
)
def test_plain_http_to_loopback_is_allowed(load, url):
    assert load(cli={"fhir.base_url": url})["fhir.base_url"] == url


def test_turning_tls_off_in_a_later_layer_allows_plain_http(load):
    settings = load(
        user='[fhir]\nbase_url = "http://fhir.test-lab.example.org/r4"\n',
        env={"WARDSYNC_SECURITY_REQUIRE_TLS": "false"},
    )
    assert settings["fhir.base_url"] == "http://fhir.test-lab.example.org/r4"
    assert settings.warnings == ()


def test_insecure_user_url_is_skipped_with_a_warning(load):
    settings = load(user='[realtime]\ntoken_url = "http://tokens.example.org/t"\n')
    assert settings["realtime.token_url"] is None
    assert any("realtime.token_url" in w and "use https://" in w for w in settings.warnings)


def test_policy_url_rejected_when_a_later_layer_requires_tls(load, policy_file):
    # The policy allowed plain http for itself; a user who turns TLS back on gets the safe
    # outcome (the insecure URL is not used) and a warning explaining why.
    settings = load(
        policy='[fhir]\nbase_url = "http://fhir.test-lab.example.org/r4"\n'
        "[security]\nrequire_tls = false\n",
        cli={"security.require_tls": "true"},
    )
    assert settings["security.require_tls"] is True
    assert settings["fhir.base_url"] is None
    assert any(
        f"fhir.base_url: the value from policy:{policy_file} was ignored" in w
        for w in settings.warnings
    )


def test_ca_bundle_must_name_an_existing_file(load, tmp_path):
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load(env={"WARDSYNC_FHIR_CA_BUNDLE": str(bundle)})
    assert settings["fhir.ca_bundle"] == bundle
    missing = load(env={"WARDSYNC_FHIR_CA_BUNDLE": str(tmp_path / "gone.pem")})
    assert missing["fhir.ca_bundle"] is None
    assert any("gone.pem" in w and "not an existing file" in w for w in missing.warnings)
