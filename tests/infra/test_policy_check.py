"""`check_policy_file` and the shipped machine-policy template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wardsync.infra.settings import SETTINGS, check_policy_file, load_settings

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "packaging" / "policy" / "config.toml.example"

GOOD_POLICY = """
[fhir]
base_url = "https://fhir.example-hospital.org/r4"
timeout_s = 8
[auth]
scopes = ["openid", "fhirUser", "user/Patient.rs"]
[alerts]
escalation_after_min = 10
sound_mutable = false
[alerts.critical_limits]
"2823-3" = { low = 2.8, high = 6.2, unit = "mmol/L" }
[realtime]
endpoint = "realtime.example-hospital.org:443"
ward = "ward-7b"
[locked]
keys = ["fhir.base_url", "alerts.escalation_after_min", "alerts.critical_limits"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_policy_has_no_problems_and_loads(tmp_path):
    path = _write(tmp_path, GOOD_POLICY)
    assert check_policy_file(path) == []
    settings = load_settings(environ={}, policy_path=path, user_path=tmp_path / "user.toml")
    assert settings["fhir.timeout_s"] == 8.0
    assert settings["alerts.critical_limits"]["2823-3"].high == 6.2
    assert settings.locked == {
        "fhir.base_url", "alerts.escalation_after_min", "alerts.critical_limits"
    }


def test_dotted_keys_at_the_top_level_are_the_same_as_tables(tmp_path):
    path = _write(tmp_path, 'fhir.timeout_s = 3\n"ui.theme" = "high-contrast"\n')
    assert check_policy_file(path) == []
    settings = load_settings(environ={}, policy_path=path, user_path=tmp_path / "u.toml")
    assert (settings["fhir.timeout_s"], settings["ui.theme"]) == (3.0, "high-contrast")


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("[fhir]\nbaseurl = 'https://x.example.org'",
         "fhir.baseurl", "not a setting (did you mean 'fhir.base_url'?)"),
        ("[network]\nproxy = 'http://proxy'", "network", "not a setting"),
        ("[fhir]\ntimeout_s = 'ten'", "fhir.timeout_s", "expected a number, got string 'ten'"),
        ("[alerts]\nescalation_after_min = 120", "alerts.escalation_after_min", "at most 60"),
        ("[ui]\ntheme = 'dark'", "ui.theme", "expected one of light, high-contrast"),
        ("[fhir]\nbase_url = 'http://fhir.example-hospital.org/r4'",
         "fhir.base_url", "refused while security.require_tls is true"),
        ("[locked]\nkeys = ['fhir.base_url', 'alerts.escalation_min']",
         "alerts.escalation_min", "listed in [locked] keys but is not a setting"),
        ("[locked]\nkeys = 'fhir.base_url'", "locked.keys", "must be an array of key names"),
        ("[locked]\nkey = ['fhir.base_url']", "locked.key", "unknown entry (only 'keys')"),
        ("locked = ['fhir.base_url']", "locked", "must be a table"),
        ("[alerts.critical_limits]\n'2823-4' = {low = 2.8, unit = 'mmol/L'}",
         "alerts.critical_limits", "wrong check digit"),
    ],
)
def test_each_problem_names_its_key(tmp_path, toml, key, message):
    problems = check_policy_file(_write(tmp_path, toml + "\n"))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: ")
    assert message in problems[0]


def test_all_problems_are_reported_at_once(tmp_path):
    problems = check_policy_file(
        _write(
            tmp_path,
            "[fhir]\ntimeout_s = -1\nbaseurl = 'x'\n[sync]\npull_debounce_ms = 'x'\n"
            "[locked]\nkeys = ['nope.nope']\n",
        )
    )
    keys = sorted(p.split(":", 1)[0] for p in problems)
    assert keys == ["fhir.baseurl", "fhir.timeout_s", "nope.nope", "sync.pull_debounce_ms"]


def test_plain_http_is_allowed_when_the_policy_says_so(tmp_path):
    path = _write(
        tmp_path,
        "[fhir]\nbase_url = 'http://fhir.test-lab.example.org/r4'\n"
        "[security]\nrequire_tls = false\n",
    )
    assert check_policy_file(path) == []


def test_unreadable_and_invalid_toml_files(tmp_path):
    missing = tmp_path / "missing.toml"
    (problem,) = check_policy_file(missing)
    assert problem.startswith(f"{missing}: cannot read")
    (problem,) = check_policy_file(_write(tmp_path, "[fhir\n"))
    assert "not valid TOML" in problem


def test_an_empty_policy_is_valid(tmp_path):
    assert check_policy_file(_write(tmp_path, "")) == []


# -------------------------------------------------------------------- shipped template


def test_the_shipped_template_is_a_valid_policy():
    assert check_policy_file(TEMPLATE) == []


def test_the_template_documents_every_key_and_all_its_examples_are_valid(tmp_path):
    """Uncomment every example line: the result must be a valid policy setting every key."""
    ca_bundle = tmp_path / "hospital-ca.pem"
    ca_bundle.write_text("-----BEGIN CERTIFICATE-----\n")  # existence is what is checked
    example_line = re.compile(r"^# ((?:\"[^\"]+\"|[a-z_]+) = .*)$")
    uncommented = []
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        match = example_line.match(line)
        uncommented.append(match.group(1) if match else line)
    text = "\n".join(uncommented).replace("/etc/wardsync/hospital-ca.pem", str(ca_bundle))
    path = _write(tmp_path, text)
    assert check_policy_file(path) == []
    settings = load_settings(environ={}, policy_path=path, user_path=tmp_path / "u.toml")
    from_policy = {k for k in settings if settings.source_of(k).startswith("policy:")}
    assert from_policy == {s.name for s in SETTINGS}
    assert settings.locked == {
        "fhir.base_url", "security.require_tls", "alerts.escalation_after_min"
    }
    # The example shows the documented defaults, except where it shows a site's own values.
    for setting in SETTINGS:
        if isinstance(setting.default, bool | int | float) and setting.name not in (
            "alerts.critical_limits",
        ):
            assert settings[setting.name] == setting.default, setting.name
