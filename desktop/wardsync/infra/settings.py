"""Layered configuration (docs/architecture.md §7).

Layers, last wins::

    built-in defaults < machine policy file < user file < WARDSYNC_* environment < command line

Every key is declared once in `SETTINGS` (dotted name, type, default, description,
validator); the environment variable is derived from the name (`WARDSYNC_` + name
upper-cased with `.` -> `_`). A key the machine policy lists under `[locked] keys` keeps the
policy's value (or the default, if the policy only locks it): later attempts are ignored and
reported in `Settings.warnings`, never silently applied.

How each layer treats problems:

- machine policy: an administrator's file, so any problem (unreadable, not TOML, unknown key,
  wrong type, bad value, unknown locked key) is a `ConfigError` and the app does not start
  with a half-applied policy. `check_policy_file` reports the same problems without raising.
- user file and environment: the app must start even if they are wrong, so an unknown key or
  a bad value becomes a warning and that layer's value is skipped.
- command line: typed by the person starting the app just now, so a bad value or unknown key
  is a `ConfigError` (like any bad command-line option).

Values in TOML files keep their TOML types (a float key rejects `"10"`). Values from the
environment and the command line are strings and are parsed by the key's type. Optional keys
are cleared with an empty string (TOML has no null).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from wardsync.core.alerts import DEFAULT_ESCALATION_AFTER_S
from wardsync.core.critical import CriticalLimits, CriticalLimitsError
from wardsync.core.net import is_loopback_host
from wardsync.infra import paths

ENV_PREFIX = "WARDSYNC_"
LOCKED_TABLE = "locked"
LOCKED_KEYS_ENTRY = "keys"
DEFAULT_SOURCE = "default"
CLI_SOURCE = "cli"
# WARDSYNC_* variables that are not settings, so they are not reported as unknown.
NON_SETTING_ENV_VARS = frozenset({"WARDSYNC_TEST_ARTIFACTS"})
# docs/architecture.md §5: critical results must reach a clinician in under an hour at most.
MAX_ESCALATION_AFTER_MIN = 60.0
# A shared workstation must lock; an hour is the longest idle time a site may choose.
MAX_IDLE_LOCK_MIN = 60.0
# Vital-sign window: more than 6 minutes (a demo of memory staying level) up to four weeks.
MIN_VITALS_HOURS, MAX_VITALS_HOURS = 0.1, 672.0
# Polling more often than this loads the FHIR server for no clinical gain.
MIN_POLLING_INTERVAL_S = 1.0
# How alike (difflib ratio) a misspelt key must be to a real one to be suggested.
SUGGESTION_CUTOFF = 0.8

# The narrow SMART App Launch v2 scopes the desktop needs (read/search what it shows, update
# Task status, create Communication and AuditEvent for acknowledgements). Never user/*.*.
DEFAULT_SCOPES: tuple[str, ...] = (
    "openid",
    "fhirUser",
    "offline_access",
    "user/Patient.rs",
    "user/AllergyIntolerance.rs",
    "user/Observation.rs",
    "user/Observation.c",  # nursing notes
    "user/Observation.u",
    "user/DiagnosticReport.rs",
    "user/Encounter.rs",
    "user/Location.rs",
    "user/Condition.rs",
    "user/Immunization.rs",
    "user/MedicationRequest.rs",
    "user/Task.rs",
    "user/Task.c",  # escalation of unacknowledged critical results
    "user/Task.u",
    "user/Communication.rs",
    "user/Communication.c",
    "user/Practitioner.rs",
    "user/AuditEvent.c",
)


class ConfigError(Exception):
    """A configuration problem that stops the app: names the key and the layer."""

    def __init__(self, message: str, *, key: str | None = None, layer: str | None = None):
        super().__init__(message)
        self.key = key
        self.layer = layer


class InvalidValue(ValueError):
    """Raised by a type parser or validator; the message says what is wrong with the value."""


# ---------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class ValueType:
    """How to read one kind of value from TOML (typed) and from text (env / command line)."""

    name: str
    from_toml: Callable[[object], Any]
    from_text: Callable[[str], Any]


def _describe(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if kind not in ("array", "table") else kind


def _toml_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise InvalidValue(f"expected a finite number, got {value!r}")
    return float(value)


def _text_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidValue(f"expected a number, got {text!r}") from None
    return _toml_float(value)


def _toml_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"expected a whole number, got {_describe(value)}")
    return value


def _text_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidValue(f"expected a whole number, got {text!r}") from None


def _toml_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(f"expected true or false, got {_describe(value)}")
    return value


_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def _text_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise InvalidValue(f"expected true or false (or yes/no, on/off, 1/0), got {text!r}")


def _toml_str(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"expected a string, got {_describe(value)}")
    return value


def _toml_opt_str(value: object) -> str | None:
    return _toml_str(value).strip() or None


def _text_opt_str(text: str) -> str | None:
    return text.strip() or None


def _toml_opt_path(value: object) -> Path | None:
    text = _toml_opt_str(value)
    return Path(text).expanduser() if text is not None else None


def _text_opt_path(text: str) -> Path | None:
    return _toml_opt_path(text)


def _toml_str_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue(f"expected an array of strings, got {_describe(value)}")
    return tuple(value)


def _parse_toml_value(text: str) -> object:
    # Lists and tables on the command line are TOML inline values, parsed by the same parser
    # as the files so there is one syntax to learn.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValue(f"not a valid TOML value ({exc}): {text!r}") from None


def _text_str_list(text: str) -> tuple[str, ...]:
    if text.lstrip().startswith("["):
        return _toml_str_list(_parse_toml_value(text))
    # OAuth scope strings are space-separated (RFC 6749 §3.3); commas are accepted too.
    return tuple(part for part in re.split(r"[\s,]+", text) if part)


_LOINC_CODE = re.compile(r"^(\d{1,7})-(\d)$")
# LOINC Users' Guide 12 C lists these deprecated codes whose check digit is known to be wrong.
_LOINC_BAD_CHECK_DIGIT = frozenset({
    "11491-6", "11501-6", "5895-7", "5896-5", "5897-3", "5928-1", "6028-3", "6415-5",
    "6580-7", "6645-7", "6646-5", "6647-3", "6648-1", "6649-9",
})


def loinc_check_digit(number: str) -> int:
    """The LOINC Mod 10 check digit of `number` (LOINC Users' Guide 12 C, steps 1-8)."""
    reversed_digits = number[::-1]
    odd = reversed_digits[0::2]  # 1st, 3rd, ... from the right, kept in that order
    even = reversed_digits[1::2]
    combined = even + str(int(odd) * 2)
    total = sum(int(d) for d in combined)
    return (10 - total % 10) % 10


def _check_loinc(code: str) -> None:
    match = _LOINC_CODE.match(code)
    if match is None:
        raise InvalidValue(f"{code!r} is not a LOINC code (digits, '-', check digit)")
    number, check = match.groups()
    if code not in _LOINC_BAD_CHECK_DIGIT and loinc_check_digit(number) != int(check):
        raise InvalidValue(
            f"{code!r} has a wrong check digit (expected {number}-{loinc_check_digit(number)})"
        )


def _toml_critical_limits(value: object) -> CriticalLimits:
    # The table's shape and bounds are the alert rules' own (core.critical); the LOINC check
    # digit is checked here too, because a mistyped code would silently never match a result.
    if isinstance(value, Mapping):
        for code in value:
            _check_loinc(str(code))
    try:
        return CriticalLimits.from_mapping(value)
    except CriticalLimitsError as exc:
        raise InvalidValue(str(exc)) from None


def _text_critical_limits(text: str) -> CriticalLimits:
    return _toml_critical_limits(_parse_toml_value(text))


def choice(*options: str) -> ValueType:
    """A string that must be one of `options` (case-insensitive on input)."""
    by_lower = {o.lower(): o for o in options}

    def parse(value: object) -> str:
        text = _toml_str(value).strip()
        if text.lower() not in by_lower:
            raise InvalidValue(f"expected one of {', '.join(options)}; got {text!r}")
        return by_lower[text.lower()]

    return ValueType(" | ".join(f'"{o}"' for o in options), parse, parse)


STR = ValueType("str", _toml_str, str.strip)
OPTIONAL_STR = ValueType("str | None", _toml_opt_str, _text_opt_str)
FLOAT = ValueType("float", _toml_float, _text_float)
INT = ValueType("int", _toml_int, _text_int)
BOOL = ValueType("bool", _toml_bool, _text_bool)
OPTIONAL_PATH = ValueType("path | None", _toml_opt_path, _text_opt_path)
STR_LIST = ValueType("list[str]", _toml_str_list, _text_str_list)
CRITICAL_LIMITS = ValueType(
    "table {LOINC = {low, high, unit, name}}", _toml_critical_limits, _text_critical_limits
)

# ----------------------------------------------------------------------------- validators


def positive(value: float) -> None:
    """Validator: the number must be greater than zero."""
    if value <= 0:
        raise InvalidValue(f"must be greater than 0, got {value}")


def non_negative(value: float) -> None:
    """Validator: the number must not be negative."""
    if value < 0:
        raise InvalidValue(f"must not be negative, got {value}")


def between(low: float, high: float) -> Callable[[float], None]:
    """Validator: low < value <= high (the units are the key's)."""

    def check(value: float) -> None:
        if not low < value <= high:
            raise InvalidValue(f"must be more than {low:g} and at most {high:g}, got {value:g}")

    return check


def at_least(low: float) -> Callable[[float], None]:
    """Validator: value >= low."""

    def check(value: float) -> None:
        if value < low:
            raise InvalidValue(f"must be at least {low:g}, got {value:g}")

    return check


def non_empty(value: str) -> None:
    """Validator: a string with something in it."""
    if not value.strip():
        raise InvalidValue("must not be empty")


def _scopes(value: tuple[str, ...]) -> None:
    if not value:
        raise InvalidValue("must name at least one scope")
    for scope in value:
        if not scope or any(c.isspace() for c in scope):
            raise InvalidValue(f"{scope!r} is not a scope token (RFC 6749 §3.3)")


# FHIR R4 datatypes.html#id: a logical id is [A-Za-z0-9\-\.]{1,64}.
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _fhir_id(value: str | None) -> None:
    if value is not None and not _FHIR_ID.match(value):
        raise InvalidValue(f"{value!r} is not a FHIR logical id ([A-Za-z0-9-.], 1-64 chars)")


def _existing_file(value: Path | None) -> None:
    if value is not None and not value.is_file():
        raise InvalidValue(f"{str(value)!r} is not an existing file")


def _http_url(value: str | None) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"{value!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise InvalidValue(f"{value!r} must not have a query or fragment")


def _endpoint(value: str | None) -> None:
    # The realtime endpoint is `host[:port][/]` as the ably SDK takes it (docs/architecture.md §4),
    # or a ws:// / wss:// URL.
    if value is None:
        return
    url = value if "://" in value else f"//{value}"
    parts = urlsplit(url)
    if parts.scheme not in ("", "ws", "wss") or not parts.hostname:
        raise InvalidValue(f"{value!r} is not host[:port] or a ws(s):// URL")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise InvalidValue(f"{value!r}: {exc}") from None


def insecure_url_problem(value: str | None) -> str | None:
    """Why `value` breaks `security.require_tls` (plain http/ws to a non-loopback host)."""
    if value is None or "://" not in value:
        # A bare realtime endpoint carries no scheme: the sync layer uses TLS for it unless
        # the host is loopback, so it cannot be insecure here.
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "ws") and not is_loopback_host(parts.hostname):
        secure = "https" if parts.scheme == "http" else "wss"
        return (
            f"{parts.scheme}:// to non-loopback host {parts.hostname!r} is refused while "
            f"security.require_tls is true (use {secure}://)"
        )
    return None


# -------------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: its dotted name, type, default, meaning and checks.

    `secret` values are never printed (`config show` masks them). `tls_checked` URLs must
    use https/wss for non-loopback hosts while `security.require_tls` is true.
    """

    name: str
    type: ValueType
    default: Any
    description: str
    validate: Callable[[Any], None] | None = None
    secret: bool = False
    tls_checked: bool = False

    @property
    def env_var(self) -> str:
        """`WARDSYNC_` + the name upper-cased with `.` -> `_` (e.g. WARDSYNC_FHIR_BASE_URL)."""
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    def parse_toml(self, value: object) -> Any:
        """Read and validate a value from a TOML file; raises InvalidValue."""
        return self._checked(self.type.from_toml(value))

    def parse_text(self, text: str) -> Any:
        """Read and validate a value from the environment or command line; raises InvalidValue."""
        return self._checked(self.type.from_text(text))

    def _checked(self, value: Any) -> Any:
        if self.validate is not None:
            self.validate(value)
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("fhir.base_url", OPTIONAL_STR, None,
            "FHIR R4 base URL of the hospital's server; unset = run on the embedded sandbox "
            "with synthetic data (a permanent DEMO marker is shown).",
            _http_url, tls_checked=True),
    Setting("fhir.timeout_s", FLOAT, 10.0,
            "Seconds before a FHIR request is abandoned and retried with backoff.", positive),
    Setting("fhir.ca_bundle", OPTIONAL_PATH, None,
            "PEM file of a hospital CA, trusted besides the public CAs for FHIR, sign-in and "
            "realtime-token requests.",
            _existing_file),
    Setting("auth.client_id", STR, "wardsync-desktop",
            "OAuth client id registered with the hospital's SMART authorization server.",
            non_empty),
    Setting("auth.scopes", STR_LIST, DEFAULT_SCOPES,
            "SMART scopes requested at login: the narrow set the desktop needs.", _scopes),
    Setting("realtime.token_url", OPTIONAL_STR, None,
            "URL that exchanges the FHIR access token for a short-lived realtime token; "
            "unset = discovered from the sandbox.", _http_url, tls_checked=True),
    Setting("realtime.endpoint", OPTIONAL_STR, None,
            "Realtime hub as host[:port] (TLS unless loopback) or a ws(s):// URL; "
            "unset = the sandbox hub.", _endpoint, tls_checked=True),
    Setting("realtime.ward", OPTIONAL_STR, None,
            "Ward (FHIR Location id) whose channel ward:<id> this workstation follows; "
            "unset = chosen at login.", _fhir_id),
    Setting("sync.polling_interval_s", FLOAT, 15.0,
            "Seconds between watchdog polls while realtime is down (degraded: polling).",
            at_least(MIN_POLLING_INTERVAL_S)),
    Setting("sync.degraded_after_s", FLOAT, 10.0,
            "Seconds without a working realtime connection before windows show degraded.",
            positive),
    Setting("sync.pull_debounce_ms", INT, 10,
            "Milliseconds to coalesce pokes for the same query into one pull.", non_negative),
    Setting("sync.gap_grace_s", FLOAT, 2.0,
            "Seconds to wait for a missing poke sequence number before a catch-up pull.",
            non_negative),
    Setting("sync.backoff_cap_s", FLOAT, 30.0,
            "Longest wait in seconds between retries of a failing pull (exponential backoff).",
            positive),
    Setting("alerts.critical_limits", CRITICAL_LIMITS, CriticalLimits(),
            "Site critical limits keyed by LOINC code: {low, high, unit, name}; a code listed "
            "here replaces the built-in limit for that test (core.critical "
            "DEFAULT_CRITICAL_LIMITS.merged); empty = the built-in table.", None),
    # The relay's `alerts.escalation_after_min` default comes from the same constant.
    Setting("alerts.escalation_after_min", FLOAT, DEFAULT_ESCALATION_AFTER_S / 60.0,
            "Minutes an unacknowledged critical alert waits before escalating (at most 60).",
            between(0.0, MAX_ESCALATION_AFTER_MIN)),
    Setting("alerts.sound", BOOL, True, "Play a sound when a critical alert is raised."),
    Setting("alerts.sound_mutable", BOOL, False,
            "May the user mute the alert sound from the alerts panel."),
    Setting("security.idle_lock_min", FLOAT, 10.0,
            "Minutes without input before the workstation session locks (at most 60).",
            between(0.0, MAX_IDLE_LOCK_MIN)),
    Setting("security.edit_lock_idle_min", FLOAT, 2.0,
            "Minutes without activity after which a record edit lock is released (others "
            "may then edit; the holder is told).", between(0.0, MAX_IDLE_LOCK_MIN)),
    Setting("security.require_tls", BOOL, True,
            "Refuse http:// and ws:// URLs to non-loopback hosts (https/wss only)."),
    Setting("ui.vitals_window_h", FLOAT, 72.0,
            "Hours of vital signs each workstation fetches and keeps in memory (older readings "
            "are dropped; the charts show the 24 h ending at the latest reading).",
            between(MIN_VITALS_HOURS, MAX_VITALS_HOURS)),
    Setting("ui.theme", choice("light", "high-contrast"), "light",
            "Window theme: light, or high-contrast for bright wards and low vision."),
    Setting("logging.level", choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO",
            "Lowest level written to the application log (never clinical content)."),
    Setting("metrics.log", OPTIONAL_PATH, None,
            "Append JSON-lines metrics to this file (docs/architecture.md §3.4); "
            "WARDSYNC_METRICS_LOG is the documented contract.", None),
)
SETTINGS_BY_NAME: Mapping[str, Setting] = MappingProxyType({s.name: s for s in SETTINGS})
REQUIRE_TLS_KEY = "security.require_tls"


def _index(definitions: Sequence[Setting]) -> Mapping[str, Setting]:
    by_name = {s.name: s for s in definitions}
    if len(by_name) != len(definitions):
        raise ValueError("duplicate setting names")
    return MappingProxyType(by_name)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=SUGGESTION_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------ Settings


@dataclass(frozen=True)
class Settings:
    """The effective configuration: one typed value per key, where it came from, warnings.

    `settings["sync.polling_interval_s"]` returns the value parsed to the key's type
    (float, int, bool, str, Path, tuple of str, core.critical.CriticalLimits, or None for unset
    optional keys). An unknown key raises KeyError rather than quietly returning None, so a
    misspelt name cannot, for example, turn a hospital configuration into demo mode.
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    locked: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()
    definitions: Mapping[str, Setting] = field(
        default_factory=lambda: SETTINGS_BY_NAME, repr=False, compare=False
    )

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            raise KeyError(f"{key!r} is not a setting{_suggest(key, list(self.values))}")
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when it is unset (None); unknown keys raise."""
        value = self[key]
        return default if value is None else value

    def source_of(self, key: str) -> str:
        """Where the value came from: `default`, `policy:<path>`, `user:<path>`,
        `env:WARDSYNC_...` or `cli`."""
        self[key]  # the same KeyError as __getitem__ for unknown keys
        return self.sources[key]

    def is_locked(self, key: str) -> bool:
        """True if the machine policy locks `key`."""
        self[key]
        return key in self.locked

    def keys(self) -> tuple[str, ...]:
        """Every key, in the order of the settings table."""
        return tuple(self.values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __contains__(self, key: object) -> bool:
        return key in self.values


# -------------------------------------------------------------------------------- layers


@dataclass
class _Layer:
    # key -> (source label: "policy:<path>", "user:<path>", "env:<VAR>" or "cli", raw value)
    entries: dict[str, tuple[str, object]]
    from_text: bool  # env and command line give strings; files give typed TOML values
    strict: bool  # a bad value is a ConfigError (command line) rather than a warning


def _flatten(
    doc: Mapping[str, object], definitions: Mapping[str, Setting], prefix: str = ""
) -> tuple[dict[str, object], list[str]]:
    """TOML tables -> {dotted key: raw value}, plus the names that are not settings."""
    entries: dict[str, object] = {}
    unknown: list[str] = []
    for name, value in doc.items():
        dotted = f"{prefix}{name}"
        if dotted in definitions:
            entries[dotted] = value
        elif isinstance(value, dict) and any(k.startswith(dotted + ".") for k in definitions):
            sub_entries, sub_unknown = _flatten(value, definitions, dotted + ".")
            entries.update(sub_entries)
            unknown.extend(sub_unknown)
        else:
            unknown.append(dotted)
    return entries, unknown


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class MachinePolicy:
    """A parsed machine policy file: the values it sets, the keys it locks, its problems."""

    values: Mapping[str, Any]
    locked: frozenset[str]
    problems: tuple[str, ...]


def _parse_policy(
    doc: Mapping[str, object], definitions: Mapping[str, Setting]
) -> MachinePolicy:
    problems: list[str] = []
    locked: set[str] = set()
    body = dict(doc)
    lock_table = body.pop(LOCKED_TABLE, None)
    if lock_table is not None:
        if not isinstance(lock_table, dict):
            problems.append(f"{LOCKED_TABLE}: must be a table with 'keys = [...]'")
        else:
            for extra in sorted(set(lock_table) - {LOCKED_KEYS_ENTRY}):
                problems.append(f"{LOCKED_TABLE}.{extra}: unknown entry (only 'keys')")
            names = lock_table.get(LOCKED_KEYS_ENTRY, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append(
                    f"{LOCKED_TABLE}.{LOCKED_KEYS_ENTRY}: must be an array of key names"
                )
            else:
                for name in names:
                    if name in definitions:
                        locked.add(name)
                    else:
                        problems.append(
                            f"{name}: listed in [{LOCKED_TABLE}] keys but is not a setting"
                            f"{_suggest(name, list(definitions))}"
                        )
    entries, unknown = _flatten(body, definitions)
    for name in unknown:
        problems.append(f"{name}: not a setting{_suggest(name, list(definitions))}")
    values: dict[str, Any] = {}
    for key, raw in entries.items():
        try:
            values[key] = definitions[key].parse_toml(raw)
        except InvalidValue as exc:
            problems.append(f"{key}: {exc}")
    # Checked against the policy's own require_tls (or the default): an administrator who
    # means plain http must say so in the same file.
    require_tls = values.get(REQUIRE_TLS_KEY, definitions[REQUIRE_TLS_KEY].default
                             if REQUIRE_TLS_KEY in definitions else False)
    if require_tls:
        for key, value in values.items():
            problem = insecure_url_problem(value) if definitions[key].tls_checked else None
            if problem:
                problems.append(f"{key}: {problem}")
    return MachinePolicy(
        values=MappingProxyType(values), locked=frozenset(locked), problems=tuple(problems)
    )


def read_policy_file(
    path: str | Path, *, definitions: Sequence[Setting] = SETTINGS
) -> MachinePolicy:
    """Parse a machine policy file without raising; problems are in `.problems`."""
    path = Path(path)
    try:
        doc = _read_toml(path)
    except OSError as exc:
        return MachinePolicy({}, frozenset(), (f"{path}: cannot read: {exc.strerror or exc}",))
    except tomllib.TOMLDecodeError as exc:
        return MachinePolicy({}, frozenset(), (f"{path}: not valid TOML: {exc}",))
    return _parse_policy(doc, _index(definitions))


def check_policy_file(
    path: str | Path, *, definitions: Sequence[Setting] = SETTINGS
) -> list[str]:
    """Problems in a machine policy file, one human-readable line each naming the key.

    Checks: readable, valid TOML, every key known, every value of the right type and valid,
    `[locked] keys` an array of known keys, URLs allowed by `security.require_tls`.
    Returns an empty list if the file is fine.
    """
    return list(read_policy_file(path, definitions=definitions).problems)


def _user_layer(
    path: Path, definitions: Mapping[str, Setting], warnings: list[str]
) -> _Layer | None:
    source = f"user:{path}"
    try:
        doc = _read_toml(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warnings.append(f"{source}: not read ({exc.strerror or exc}); the file is ignored")
        return None
    except tomllib.TOMLDecodeError as exc:
        warnings.append(f"{source}: not valid TOML ({exc}); the file is ignored")
        return None
    if LOCKED_TABLE in doc:
        doc = {k: v for k, v in doc.items() if k != LOCKED_TABLE}
        warnings.append(
            f"{source}: [{LOCKED_TABLE}] is ignored: only the machine policy locks keys"
        )
    entries, unknown = _flatten(doc, definitions)
    for name in unknown:
        warnings.append(f"{source}: unknown key {name!r} ignored{_suggest(name, definitions)}")
    return _Layer({k: (source, v) for k, v in entries.items()}, from_text=False, strict=False)


def _env_layer(
    environ: Mapping[str, str], definitions: Mapping[str, Setting], warnings: list[str]
) -> _Layer:
    by_env = {s.env_var: s.name for s in definitions.values()}
    entries: dict[str, tuple[str, object]] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        key = by_env.get(var)
        if key is None:
            if var not in NON_SETTING_ENV_VARS:
                warnings.append(
                    f"env:{var}: not a WardSync setting, ignored{_suggest(var, list(by_env))}"
                )
            continue
        entries[key] = (f"env:{var}", environ[var])
    return _Layer(entries, from_text=True, strict=False)


def _cli_layer(overrides: Mapping[str, str], definitions: Mapping[str, Setting]) -> _Layer:
    for key in overrides:
        if key not in definitions:
            raise ConfigError(
                f"{CLI_SOURCE}: --set {key}: not a setting{_suggest(key, list(definitions))}",
                key=key, layer=CLI_SOURCE,
            )
    return _Layer({k: (CLI_SOURCE, v) for k, v in overrides.items()}, from_text=True, strict=True)


def _resolve_order(definitions: Mapping[str, Setting]) -> list[str]:
    # security.require_tls first: the URL keys are validated against its final value.
    names = list(definitions)
    if REQUIRE_TLS_KEY in definitions:
        names.remove(REQUIRE_TLS_KEY)
        names.insert(0, REQUIRE_TLS_KEY)
    return names


def load_settings(
    *,
    argv_overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    policy_path: Path | None = None,
    user_path: Path | None = None,
    definitions: Sequence[Setting] = SETTINGS,
) -> Settings:
    """Build the effective settings from all five layers (last wins, locks respected).

    `argv_overrides` are the command line's `--set key=value` pairs (and the launcher's
    dedicated flags mapped to keys). `environ` defaults to `os.environ`; `policy_path` and
    `user_path` default to this OS's locations (`paths.policy_file()`,
    `paths.user_config_file(environ)`). A missing policy or user file is simply absent.

    Raises ConfigError for any problem in the policy file and for a bad or unknown key on
    the command line; problems in the user file and environment become `warnings`.
    """
    env = os.environ if environ is None else environ
    defs = _index(definitions)
    policy_file = Path(policy_path) if policy_path is not None else paths.policy_file(env)
    user_file = Path(user_path) if user_path is not None else paths.user_config_file(env)
    warnings: list[str] = []

    policy_source = f"policy:{policy_file}"
    policy = MachinePolicy(MappingProxyType({}), frozenset(), ())
    try:
        policy_doc: dict[str, Any] | None = _read_toml(policy_file)
    except FileNotFoundError:
        policy_doc = None
    except OSError as exc:
        raise ConfigError(
            f"{policy_source}: cannot read the machine policy: {exc.strerror or exc}",
            layer=policy_source,
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{policy_source}: not valid TOML: {exc}", layer=policy_source) from exc
    if policy_doc is not None:
        policy = _parse_policy(policy_doc, defs)
        if policy.problems:
            first_key = policy.problems[0].split(":", 1)[0]
            raise ConfigError(
                f"{policy_source}: the machine policy is invalid:\n  "
                + "\n  ".join(policy.problems),
                key=first_key, layer=policy_source,
            )

    layers: list[_Layer] = [
        # Already parsed and validated by _parse_policy (problems raised above).
        _Layer({k: (policy_source, v) for k, v in policy.values.items()},
               from_text=False, strict=False),
    ]
    user_layer = _user_layer(user_file, defs, warnings)
    if user_layer is not None:
        layers.append(user_layer)
    layers.append(_env_layer(env, defs, warnings))
    layers.append(_cli_layer(argv_overrides or {}, defs))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in _resolve_order(defs):
        setting = defs[key]
        value, source = setting.default, DEFAULT_SOURCE
        for layer_index, layer in enumerate(layers):
            if key not in layer.entries:
                continue
            label, raw = layer.entries[key]
            if layer_index > 0 and key in policy.locked:
                warnings.append(
                    f"{key}: locked by the machine policy ({policy_source}); "
                    f"the value from {label} was ignored"
                )
                continue
            try:
                if layer_index == 0:
                    candidate = raw  # parsed and validated by _parse_policy
                elif layer.from_text:
                    candidate = setting.parse_text(str(raw))
                else:
                    candidate = setting.parse_toml(raw)
                problem = (
                    insecure_url_problem(candidate)
                    if setting.tls_checked and isinstance(candidate, str)
                    and values.get(REQUIRE_TLS_KEY, False)
                    else None
                )
                if problem:
                    raise InvalidValue(problem)
            except InvalidValue as exc:
                if layer.strict:
                    raise ConfigError(f"{label}: {key}: {exc}", key=key, layer=label) from None
                # A later layer turned require_tls on, or a user/env value is bad: keep the
                # earlier value and say so where the UI and `config show` can display it.
                warnings.append(f"{key}: the value from {label} was ignored: {exc}")
                continue
            value, source = candidate, label
        values[key] = value
        sources[key] = source

    ordered = {k: values[k] for k in defs}
    return Settings(
        values=MappingProxyType(ordered),
        sources=MappingProxyType({k: sources[k] for k in defs}),
        locked=policy.locked,
        warnings=tuple(warnings),
        definitions=defs,
    )


def default_settings() -> Settings:
    """The built-in defaults alone (no policy, user file, environment or command line)."""
    defs = SETTINGS_BY_NAME
    return Settings(
        values=MappingProxyType({k: s.default for k, s in defs.items()}),
        sources=MappingProxyType(dict.fromkeys(defs, DEFAULT_SOURCE)),
        definitions=defs,
    )
