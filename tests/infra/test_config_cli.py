"""`wardsync config show` / `config check` and the settings flags the launcher adds."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from wardsync.infra import config_cli
from wardsync.infra.settings import (
    SETTINGS,
    ConfigError,
    Setting,
    load_settings,
)
from wardsync.infra.settings_types import OPTIONAL_STR


def _row(text: str, key: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(key + " ")]
    return line


def test_show_lists_every_key_with_value_and_source(load, policy_file, user_file):
    settings = load(
        policy="[alerts]\nescalation_after_min = 10\n"
        "[locked]\nkeys = ['alerts.escalation_after_min']\n",
        user='[ui]\ntheme = "high-contrast"\n',
        env={"WARDSYNC_FHIR_TIMEOUT_S": "4", "WARDSYNC_ALERTS_ESCALATION_AFTER_MIN": "50"},
        cli={"realtime.ward": "ward-7b"},
    )
    text = config_cli.show(settings)
    for setting in SETTINGS:
        assert _row(text, setting.name)
    row = _row(text, "alerts.escalation_after_min")
    assert f"policy:{policy_file} [locked]" in row
    assert row.endswith("10.0")
    assert f"user:{user_file}" in _row(text, "ui.theme")
    assert _row(text, "ui.theme").endswith('"high-contrast"')
    assert "env:WARDSYNC_FHIR_TIMEOUT_S" in _row(text, "fhir.timeout_s")
    row = _row(text, "realtime.ward")
    assert " cli " in row
    assert row.endswith('"ward-7b"')
    assert _row(text, "fhir.base_url").endswith("(unset)")
    assert " default " in _row(text, "sync.backoff_cap_s")
    # The ignored attempt on the locked key is shown.
    assert "Warnings (1):" in text
    assert "env:WARDSYNC_ALERTS_ESCALATION_AFTER_MIN was ignored" in text


def test_show_prints_values_as_toml(load):
    settings = load(
        cli={
            "alerts.critical_limits": '{"2823-3" = {low = 2.8, high = 6.2, unit = "mmol/L"}, '
            '"718-7" = {low = 0, unit = "g/L", name = "Hb"}}',
            "auth.scopes": "openid user/Task.u",
            "alerts.sound": "off",
        }
    )
    text = config_cli.show(settings)
    assert _row(text, "alerts.critical_limits").endswith(
        '{"2823-3" = {low = 2.8, high = 6.2, unit = "mmol/L"}, '
        '"718-7" = {low = 0.0, unit = "g/L", name = "Hb"}}'
    )
    assert _row(text, "auth.scopes").endswith('["openid", "user/Task.u"]')
    assert _row(text, "alerts.sound").endswith("false")
    assert "Warnings: none" in text


def test_show_masks_secret_values(tmp_path):
    secret = Setting("auth.test_secret", OPTIONAL_STR, None, "A secret used by this test only.",
                     secret=True)
    settings = load_settings(
        argv_overrides={"auth.test_secret": "s3cr3t-value"},
        environ={},
        policy_path=tmp_path / "p.toml",
        user_path=tmp_path / "u.toml",
        definitions=(*SETTINGS, secret),
    )
    assert settings["auth.test_secret"] == "s3cr3t-value"
    text = config_cli.show(settings)
    assert "s3cr3t" not in text
    assert _row(text, "auth.test_secret").endswith(config_cli.SECRET_MASK)


def test_check_reports_ok_with_what_the_policy_sets_and_locks(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text("[ui]\ntheme = 'high-contrast'\n[locked]\nkeys = ['ui.theme']\n")
    ok, text = config_cli.check(path)
    assert ok
    assert "OK" in text
    assert 'ui.theme = "high-contrast"' in text
    assert "Locks 1 key(s): ui.theme" in text


def test_check_reports_every_problem(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text("[ui]\ntheme = 'dark'\n[locked]\nkeys = ['ui.colour']\n")
    ok, text = config_cli.check(path)
    assert not ok
    assert "INVALID" in text
    assert "  - ui.theme: expected one of" in text
    assert "  - ui.colour: listed in [locked] keys" in text


# ------------------------------------------------------------------ launcher integration


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardsync")
    config_cli.add_override_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    config_cli.add_arguments(sub.add_parser("config"))
    return parser


def test_set_and_dedicated_flags_become_the_command_line_layer():
    args = _parser().parse_args(
        ["--set", "ui.theme=high-contrast", "--set", "sync.gap_grace_s=1",
         "--set", "sync.gap_grace_s=3", "--fhir-url", "https://fhir.example.org/r4",
         "--ward", "ward-7b", "--metrics-log", "/tmp/m.jsonl", "--set", "fhir.ca_bundle=",
         "config", "show"]
    )
    assert config_cli.overrides_from_args(args) == {
        "ui.theme": "high-contrast",
        "sync.gap_grace_s": "3",  # repeated --set: the last wins
        "fhir.base_url": "https://fhir.example.org/r4",
        "realtime.ward": "ward-7b",
        "metrics.log": "/tmp/m.jsonl",
        "fhir.ca_bundle": "",
    }


def test_a_flag_and_a_set_that_disagree_are_an_error():
    args = _parser().parse_args(["--set", "realtime.ward=a", "--ward", "b"])
    with pytest.raises(ConfigError, match=r"realtime\.ward given twice") as caught:
        config_cli.overrides_from_args(args)
    assert caught.value.layer == "cli"


def test_malformed_set_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        _parser().parse_args(["--set", "ui.theme"])
    assert caught.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_every_dedicated_flag_names_a_real_key():
    names = {s.name for s in SETTINGS}
    for _dest, key, _help in config_cli.DEDICATED_FLAGS.values():
        assert key in names


def test_run_show_prints_effective_settings(tmp_path):
    args = _parser().parse_args(["--set", "ui.theme=high-contrast", "config", "show"])
    out, err = io.StringIO(), io.StringIO()
    code = config_cli.run(
        args, stdout=out, stderr=err, environ={"WARDSYNC_SYNC_GAP_GRACE_S": "5"},
        policy_path=tmp_path / "p.toml", user_path=tmp_path / "u.toml",
    )
    assert code == 0
    assert err.getvalue() == ""
    assert " cli " in _row(out.getvalue(), "ui.theme")
    assert "env:WARDSYNC_SYNC_GAP_GRACE_S" in _row(out.getvalue(), "sync.gap_grace_s")


def test_run_show_with_a_bad_policy_exits_2_with_the_reason(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text("[sync]\ngap_grace_s = 'soon'\n")
    out, err = io.StringIO(), io.StringIO()
    code = config_cli.run(
        _parser().parse_args(["config", "show"]), stdout=out, stderr=err, environ={},
        policy_path=policy, user_path=tmp_path / "u.toml",
    )
    assert code == config_cli.EXIT_CONFIG_ERROR
    assert out.getvalue() == ""
    assert f"policy:{policy}" in err.getvalue()
    assert "sync.gap_grace_s" in err.getvalue()


def test_run_check_exit_codes(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[sync]\ngap_grace_s = 1\n")
    bad.write_text("[sync]\ngap_grace_s = -1\n")
    for path, expected_code in ((good, 0), (bad, 1)):
        out, err = io.StringIO(), io.StringIO()
        args = _parser().parse_args(["config", "check", str(path)])
        assert args.file == Path(path)
        assert config_cli.run(args, stdout=out, stderr=err) == expected_code
        assert str(path) in (out.getvalue() if expected_code == 0 else err.getvalue())
