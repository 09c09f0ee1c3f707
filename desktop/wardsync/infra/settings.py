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

The schema is `infra.settings_schema` and the value types `infra.settings_types`; this module
holds the effective `Settings` and the layers that produce them.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wardsync.infra import paths
from wardsync.infra.settings_schema import (
    DEFAULT_SCOPES,
    ENV_PREFIX,
    REQUIRE_TLS_KEY,
    SETTINGS,
    SETTINGS_BY_NAME,
    Setting,
)
from wardsync.infra.settings_types import InvalidValue, choice, insecure_url_problem

LOCKED_TABLE = "locked"
LOCKED_KEYS_ENTRY = "keys"
DEFAULT_SOURCE = "default"
CLI_SOURCE = "cli"
__all__ = [
    "CLI_SOURCE", "DEFAULT_SCOPES", "DEFAULT_SOURCE", "SETTINGS", "SETTINGS_BY_NAME",
    "ConfigError", "InvalidValue", "MachinePolicy", "Setting", "Settings", "check_policy_file",
    "choice", "default_settings", "load_settings", "read_policy_file",
]

# WARDSYNC_* variables that are not settings, so they are not reported as unknown.
NON_SETTING_ENV_VARS = frozenset({"WARDSYNC_TEST_ARTIFACTS"})
# How alike (difflib ratio) a misspelt key must be to a real one to be suggested.
SUGGESTION_CUTOFF = 0.8


class ConfigError(Exception):
    """A configuration problem that stops the app: names the key and the layer."""

    def __init__(self, message: str, *, key: str | None = None, layer: str | None = None):
        super().__init__(message)
        self.key = key
        self.layer = layer



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
                    if setting.tls_checked and values.get(REQUIRE_TLS_KEY, False)
                    and (candidate is None or isinstance(candidate, str))
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
