"""`wardsync config show` and `wardsync config check FILE`, and the settings flags.

`show` prints every effective key, its value and the layer it came from, marks keys the
machine policy locks, and lists the warnings (ignored overrides of locked keys, unknown keys
and bad values in the user file or environment). Settings hold no clinical data; values of
keys marked secret are still masked.

`check` validates a machine policy file before an administrator deploys it.

The launcher (`wardsync.cli`) calls `add_override_arguments` on its main parser (the
repeatable `--set key=value` plus a few dedicated flags), `overrides_from_args` to turn the
parsed flags into `load_settings(argv_overrides=...)`, and `add_arguments`/`run` for the
`config` sub-command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from wardsync.core.critical import CriticalLimit
from wardsync.infra.settings import (
    ConfigError,
    Setting,
    Settings,
    load_settings,
    read_policy_file,
)

SECRET_MASK = "********"
UNSET = "(unset)"
LOCKED_MARK = "[locked]"
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG_ERROR = 2  # the same code argparse uses for a bad command line

# Dedicated launcher flags: flag -> (argparse dest, settings key, help).
DEDICATED_FLAGS: Mapping[str, tuple[str, str, str]] = {
    "--fhir-url": ("fhir_url", "fhir.base_url", "FHIR R4 base URL (sets fhir.base_url)"),
    "--ward": ("ward", "realtime.ward", "ward (Location id) to follow (sets realtime.ward)"),
    "--theme": ("theme", "ui.theme", "light or high-contrast (sets ui.theme)"),
    "--metrics-log": ("metrics_log", "metrics.log", "append JSON-lines metrics to this file "
                      "(sets metrics.log)"),
}
SET_DEST = "config_set"


# ------------------------------------------------------------------------------- rendering


def _toml_literal(value: Any) -> str:
    """A value as TOML would write it, so `show` output can be pasted into a config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, CriticalLimit):
        parts = [f"{name} = {_toml_literal(getattr(value, name))}"
                 for name in ("low", "high", "unit", "name")
                 if getattr(value, name) not in (None, "")]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, Mapping):
        items = [f"{json.dumps(str(k))} = {_toml_literal(v)}" for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, Iterable):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(value)


def render_value(setting: Setting | None, value: Any) -> str:
    """How `show` prints one value: TOML syntax, `(unset)` for None, masked if secret."""
    if value is None:
        return UNSET
    if setting is not None and setting.secret:
        return SECRET_MASK
    return _toml_literal(value)


def show(settings: Settings) -> str:
    """Every effective key with its value and source, then the warnings."""
    rows = []
    for key in settings:
        source = settings.source_of(key)
        if settings.is_locked(key):
            source = f"{source} {LOCKED_MARK}"
        rows.append((key, render_value(settings.definitions.get(key), settings[key]), source))
    # The value goes last: a long one (the scope list) then cannot push the columns apart.
    key_width = max(len("KEY"), *(len(r[0]) for r in rows))
    source_width = max(len("SOURCE"), *(len(r[2]) for r in rows))
    lines = [
        "WardSync effective settings "
        "(last wins: default < policy < user < env < cli; locked keys keep the policy value)",
        "",
        f"{'KEY':<{key_width}}  {'SOURCE':<{source_width}}  VALUE",
    ]
    for key, value, source in rows:
        lines.append(f"{key:<{key_width}}  {source:<{source_width}}  {value}")
    lines.append("")
    if settings.warnings:
        lines.append(f"Warnings ({len(settings.warnings)}):")
        lines.extend(f"  - {w}" for w in settings.warnings)
    else:
        lines.append("Warnings: none")
    return "\n".join(lines) + "\n"


def check(path: str | Path) -> tuple[bool, str]:
    """Validate a machine policy file: (ok, a report for the administrator)."""
    policy = read_policy_file(path)
    if policy.problems:
        lines = [f"{path}: INVALID machine policy ({len(policy.problems)} problem(s)):"]
        lines.extend(f"  - {p}" for p in policy.problems)
        return False, "\n".join(lines) + "\n"
    lines = [f"{path}: OK, a valid WardSync machine policy."]
    if policy.values:
        lines.append(f"Sets {len(policy.values)} key(s):")
        lines.extend(f"  {k} = {_toml_literal(v)}" for k, v in sorted(policy.values.items()))
    else:
        lines.append("Sets no keys (built-in defaults apply).")
    if policy.locked:
        lines.append(f"Locks {len(policy.locked)} key(s): {', '.join(sorted(policy.locked))}")
    else:
        lines.append("Locks no keys (users may override everything).")
    return True, "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- arguments


def parse_set_option(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value); the value may be empty (clears an optional key)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"cli: --set {text!r}: expected KEY=VALUE", layer="cli")
    return key.strip(), value


def _argparse_set_option(text: str) -> tuple[str, str]:
    try:
        return parse_set_option(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--set KEY=VALUE` (repeatable) and the dedicated settings flags to `parser`."""
    parser.add_argument(
        "--set", dest=SET_DEST, action="append", type=_argparse_set_option, default=None,
        metavar="KEY=VALUE", help="override a setting for this run (repeatable; "
        "see `wardsync config show` for the keys)",
    )
    for flag, (dest, _key, help_text) in DEDICATED_FLAGS.items():
        parser.add_argument(flag, dest=dest, default=None, help=help_text)


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The command-line layer for `load_settings(argv_overrides=...)`.

    Repeated `--set` of one key: the last wins. A dedicated flag and a `--set` that give one
    key different values are a ConfigError (which one was meant is not knowable).
    """
    overrides: dict[str, str] = {}
    for key, value in getattr(args, SET_DEST, None) or []:
        overrides[key] = value
    for flag, (dest, key, _help) in DEDICATED_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if key in overrides and overrides[key] != value:
            raise ConfigError(
                f"cli: {key} given twice ({flag} {value!r} and --set {key}={overrides[key]!r})",
                key=key, layer="cli",
            )
        overrides[key] = value
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `show` and `check FILE` sub-commands to the `config` parser."""
    sub = parser.add_subparsers(dest="config_command", required=True)
    sub.add_parser("show", help="print every effective setting, its value and its source")
    check_parser = sub.add_parser("check", help="validate a machine policy file")
    check_parser.add_argument("file", type=Path, help="the policy TOML file to check")


def run(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    policy_path: Path | None = None,
    user_path: Path | None = None,
) -> int:
    """Run `config show` or `config check`; returns the process exit code.

    `environ`, `policy_path` and `user_path` are passed to `load_settings` (None: this
    process's environment and this OS's files).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if args.config_command == "check":
        ok, text = check(args.file)
        (out if ok else err).write(text)
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    try:
        settings = load_settings(
            argv_overrides=overrides_from_args(args),
            environ=environ,
            policy_path=policy_path,
            user_path=user_path,
        )
    except ConfigError as exc:
        err.write(f"wardsync: configuration error: {exc}\n")
        return EXIT_CONFIG_ERROR
    out.write(show(settings))
    return EXIT_OK
