"""Settings value types and validators: how a value is read from TOML and from text.

TOML files keep their types (a float key rejects `"10"`); the environment and the command line
give strings, parsed by the key's type. Validators raise `InvalidValue` with a message that
says what is wrong with the value (never a secret: secret values are not echoed).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wardsync.core.critical import CriticalLimits, CriticalLimitsError
from wardsync.core.loinc import loinc_code_problem
from wardsync.core.net import is_loopback_host
from wardsync.core.resources import is_fhir_id


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


def _check_loinc(code: str) -> None:
    problem = loinc_code_problem(code)
    if problem is not None:
        raise InvalidValue(problem)


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


def oauth_scopes(value: tuple[str, ...]) -> None:
    if not value:
        raise InvalidValue("must name at least one scope")
    for scope in value:
        if not scope or any(c.isspace() for c in scope):
            raise InvalidValue(f"{scope!r} is not a scope token (RFC 6749 §3.3)")


def browser_command(value: tuple[str, ...]) -> None:
    """Validator for `auth.browser`: empty (the system's browser), or a program and arguments."""
    if value and not value[0].strip():
        raise InvalidValue("the first item must name the browser program")


def fhir_id(value: str | None) -> None:
    if value is not None and not is_fhir_id(value):
        raise InvalidValue(f"{value!r} is not a FHIR logical id ([A-Za-z0-9-.], 1-64 chars)")


def existing_file(value: Path | None) -> None:
    if value is not None and not value.is_file():
        raise InvalidValue(f"{str(value)!r} is not an existing file")


def http_url(value: str | None) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"{value!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise InvalidValue(f"{value!r} must not have a query or fragment")


def realtime_endpoint(value: str | None) -> None:
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
