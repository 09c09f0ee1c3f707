"""The relay's configuration: TOML file < `WARDSYNC_RELAY_*` environment < command line.

File (default `/etc/wardsync/relay.toml`, keys in docs/relay.md):

    [relay]      listen, public_url, data_dir, default_ward, log_level,
                 database_url, database_password_file
    [fhir]       base, client_id, client_secret_file, scope, ca_bundle, token_url
    [ably]       endpoint, key_file, tls, max_pokes_per_s, heartbeat_s
    [reconcile]  interval_s, overlap_s, initial_lookback_s, types
    [tokens]     max_ttl_s, jwt_audience, jwt_issuer
    [alerts]     escalate, escalation_after_min
    [subscriptions] mode, channel, heartbeat_s, silence_margin_s, topics

Environment: `WARDSYNC_RELAY_<SECTION>_<KEY>` (e.g. `WARDSYNC_RELAY_FHIR_BASE`), plus the
secrets themselves, `WARDSYNC_RELAY_FHIR_CLIENT_SECRET`, `WARDSYNC_RELAY_ABLY_KEY` and
`WARDSYNC_RELAY_DATABASE_PASSWORD`, for
container platforms that inject secrets as environment. Secrets never come from argv: a
command line naming one is refused (`SecretOnCommandLine`), since argv is visible to every
user of the machine (`ps`, /proc/PID/cmdline) and lands in shell histories.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wardsync.core.alerts import DEFAULT_ESCALATION_AFTER_S
from wardsync.core.heartbeats import MAX_HEARTBEAT_S, MIN_HEARTBEAT_S
from wardsync.core.pokes import POKE_RESOURCE_TYPES
from wardsync.fhir.client import InsecureServer, require_secure_url

DEFAULT_CONFIG_PATH = Path("/etc/wardsync/relay.toml")
DEFAULT_DATA_DIR = Path("/var/lib/wardsync-relay")
DEFAULT_LISTEN = "127.0.0.1:8470"
ENV_PREFIX = "WARDSYNC_RELAY_"
SECRET_ENV = {"fhir": ("client_secret", "WARDSYNC_RELAY_FHIR_CLIENT_SECRET"),
              "ably": ("key", "WARDSYNC_RELAY_ABLY_KEY"),
              "relay": ("database_password", "WARDSYNC_RELAY_DATABASE_PASSWORD")}
POSTGRES_SCHEMES = ("postgresql", "postgres")
_ENDPOINT = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?")
_SECRET_FLAG = re.compile(r"--?[\w-]*(secret|key|password|token)[\w-]*", re.IGNORECASE)


class ConfigError(ValueError):
    """The configuration is unusable; the message says which key and why (never a secret)."""


class SecretOnCommandLine(ConfigError):
    """A secret was passed as a command-line argument."""


@dataclass
class RelaySection:
    listen: str = DEFAULT_LISTEN
    public_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    default_ward: str | None = None
    log_level: str = "info"
    # PostgreSQL (libpq URI, no password) for the shared state and the leader lease (HA);
    # unset: SQLite in data_dir, the lease shared by the relays of that one data dir.
    database_url: str | None = None
    database_password_file: Path | None = None


@dataclass
class FhirSection:
    base: str = ""
    client_id: str = "wardsync-relay"
    client_secret_file: Path | None = None
    scope: str | None = None
    ca_bundle: Path | None = None
    # Where the relay's client_credentials are exchanged; unset: the token_endpoint of the FHIR
    # server's SMART configuration (set it when backend services are registered elsewhere).
    token_url: str | None = None


@dataclass
class AblySection:
    endpoint: str = ""
    key_file: Path | None = None
    tls: bool | None = None
    max_pokes_per_s: float = 40.0
    # Relay heartbeat on every ward channel (core/heartbeats.py); 0 sends none.
    heartbeat_s: float = 15.0


@dataclass
class ReconcileSection:
    interval_s: float = 5.0
    overlap_s: float = 2.0
    initial_lookback_s: float = 60.0
    types: list[str] = field(default_factory=lambda: sorted(POKE_RESOURCE_TYPES))


@dataclass
class SubscriptionsSection:
    mode: str = "auto"  # auto | topic | classic | none
    channel: str = "rest-hook"  # rest-hook | websocket (topic-based only)
    heartbeat_s: float = 60.0
    silence_margin_s: float = 10.0
    topics: list[str] = field(default_factory=list)  # empty: every advertised topic


SUBSCRIPTION_MODES = ("auto", "topic", "classic", "none")
SUBSCRIPTION_CHANNELS = ("rest-hook", "websocket")


@dataclass
class TokensSection:
    max_ttl_s: float = 3600.0
    # Set: verify workstations' JWT access tokens locally (JWKS) for this `aud`, instead of
    # RFC 7662 introspection; the issuer defaults to the SMART configuration's `issuer`.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None


@dataclass
class AlertsSection:
    # The desktop's site default (`alerts.escalation_after_min`), from one constant in core.
    escalate: bool = True
    escalation_after_min: float = DEFAULT_ESCALATION_AFTER_S / 60.0


@dataclass
class RelayConfig:
    relay: RelaySection = field(default_factory=RelaySection)
    fhir: FhirSection = field(default_factory=FhirSection)
    ably: AblySection = field(default_factory=AblySection)
    reconcile: ReconcileSection = field(default_factory=ReconcileSection)
    tokens: TokensSection = field(default_factory=TokensSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    subscriptions: SubscriptionsSection = field(default_factory=SubscriptionsSection)

    # ------------------------------------------------------------------ secrets
    def client_secret(self, env: Mapping[str, str] | None = None) -> str:
        return _secret(self.fhir.client_secret_file, "fhir.client_secret_file",
                       SECRET_ENV["fhir"][1], os.environ if env is None else env)

    def ably_key(self, env: Mapping[str, str] | None = None) -> str:
        key = _secret(self.ably.key_file, "ably.key_file", SECRET_ENV["ably"][1],
                      os.environ if env is None else env)
        if ":" not in key or "." not in key.split(":", 1)[0]:
            raise ConfigError("the Ably key must look like `appId.keyId:secret`")
        return key

    def database_password(self, env: Mapping[str, str] | None = None) -> str | None:
        """The PostgreSQL password (file, else environment), or None: libpq then uses its
        own means (a ~/.pgpass, peer or certificate authentication)."""
        env = os.environ if env is None else env
        if self.relay.database_password_file is None and not env.get(
                SECRET_ENV["relay"][1], "").strip():
            return None
        return _secret(self.relay.database_password_file, "relay.database_password_file",
                       SECRET_ENV["relay"][1], env)

    @property
    def uses_postgres(self) -> bool:
        return bool(self.relay.database_url)

    # ------------------------------------------------------------------ checks
    def validate(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Every problem found (empty when the relay can start with this configuration)."""
        problems: list[str] = []
        if not self.fhir.base:
            problems.append("fhir.base is required (the FHIR server's base URL)")
        else:
            try:
                require_secure_url(self.fhir.base)
            except InsecureServer as exc:
                problems.append(f"fhir.base: {exc}")
        if self.fhir.token_url is not None:
            try:
                require_secure_url(self.fhir.token_url)
            except InsecureServer as exc:
                problems.append(f"fhir.token_url: {exc}")
        if self.fhir.ca_bundle is not None and not Path(self.fhir.ca_bundle).is_file():
            problems.append(f"fhir.ca_bundle: {self.fhir.ca_bundle} is not a readable file")
        if not self.fhir.client_id:
            problems.append("fhir.client_id is required")
        if not self.ably.endpoint:
            problems.append("ably.endpoint is required (HOST[:PORT])")
        elif not _ENDPOINT.fullmatch(self.ably.endpoint):
            problems.append(f"ably.endpoint must be HOST[:PORT], got {self.ably.endpoint!r}")
        if self.relay.database_url:
            problems += _database_url_problems(self.relay.database_url)
        for check in (self.client_secret, self.ably_key, self.database_password):
            try:
                check(env)
            except ConfigError as exc:
                problems.append(str(exc))
        try:
            _host_port(self.relay.listen)
        except ConfigError as exc:
            problems.append(str(exc))
        for name in ("interval_s", "overlap_s"):
            if getattr(self.reconcile, name) <= 0:
                problems.append(f"reconcile.{name} must be positive")
        if self.reconcile.initial_lookback_s < 0:
            problems.append("reconcile.initial_lookback_s must not be negative")
        unknown = sorted(set(self.reconcile.types) - POKE_RESOURCE_TYPES)
        if unknown:
            problems.append(f"reconcile.types: not announced on the ward channel: {unknown}")
        if not 0 < self.ably.max_pokes_per_s <= 50:
            problems.append("ably.max_pokes_per_s must be in (0, 50] (Ably's channel limit)")
        if self.ably.heartbeat_s != 0 and not (
                MIN_HEARTBEAT_S <= self.ably.heartbeat_s <= MAX_HEARTBEAT_S):
            problems.append(f"ably.heartbeat_s must be 0 (no heartbeats) or in "
                            f"[{MIN_HEARTBEAT_S:g}, {MAX_HEARTBEAT_S:g}]")
        subs = self.subscriptions
        if subs.mode not in SUBSCRIPTION_MODES:
            problems.append(f"subscriptions.mode must be one of {', '.join(SUBSCRIPTION_MODES)}")
        if subs.channel not in SUBSCRIPTION_CHANNELS:
            problems.append("subscriptions.channel must be one of "
                            f"{', '.join(SUBSCRIPTION_CHANNELS)}")
        elif subs.channel == "websocket" and subs.mode == "classic":
            # Classic R4 criteria subscriptions have no websocket binding the relay can use.
            problems.append("subscriptions.channel websocket needs topic-based subscriptions "
                            "(subscriptions.mode auto or topic)")
        if not 1 <= subs.heartbeat_s <= 86400:
            problems.append("subscriptions.heartbeat_s must be in [1, 86400]")
        if subs.silence_margin_s < 0:
            problems.append("subscriptions.silence_margin_s must not be negative")
        if not 0 < self.tokens.max_ttl_s <= 86400:
            problems.append("tokens.max_ttl_s must be in (0, 86400]")
        if not 0 <= self.alerts.escalation_after_min <= 60:
            problems.append("alerts.escalation_after_min must be in [0, 60] (minutes)")
        return problems

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return _host_port(self.relay.listen)


def _host_port(value: str) -> tuple[str, int]:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"relay.listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _database_url_problems(url: str) -> list[str]:
    """A libpq URI naming a PostgreSQL, without a password in it (the password is a secret:
    `relay.database_password_file` or the environment). Never echoes the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return ["relay.database_url is not a valid URL"]
    if parts.scheme not in POSTGRES_SCHEMES:
        return ["relay.database_url must be a postgresql:// URL"]
    if parts.password is not None or "password" in parse_qs(parts.query):
        return ["relay.database_url must not contain a password; use "
                f"relay.database_password_file or {SECRET_ENV['relay'][1]}"]
    return []


def _secret(path: Path | None, key: str, env_name: str, env: Mapping[str, str]) -> str:
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from exc
        if not value:
            raise ConfigError(f"{key}: {path} is empty")
        return value
    value = env.get(env_name, "").strip()
    if value:
        return value
    raise ConfigError(f"{key} is required (or set {env_name})")


# ---------------------------------------------------------------------- loading
_SECTIONS = {f.name: f.type for f in fields(RelayConfig)}


def _coerce(section: str, key: str, raw: object, target: Any) -> object:
    hint = {f.name: f.type for f in fields(target)}[key]
    where = f"{section}.{key}"
    if raw is None:
        return None
    if "Path" in str(hint):
        if not isinstance(raw, str | Path) or not str(raw):
            raise ConfigError(f"{where} must be a path")
        return Path(raw)
    if "bool" in str(hint):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false")
    if "float" in str(hint):
        try:
            if isinstance(raw, bool):
                raise TypeError
            return float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} must be a number") from exc
    if "list" in str(hint):
        if isinstance(raw, str):
            raw = [t.strip() for t in raw.split(",") if t.strip()]
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            raise ConfigError(f"{where} must be a list of strings")
        return list(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string")
    if not raw and "None" in str(hint):
        return None
    return raw


def _apply(config: RelayConfig, values: Mapping[str, Mapping[str, object]], origin: str) -> None:
    for section, items in values.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(items, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        target = getattr(config, section)
        known = {f.name for f in fields(target)}
        for key, raw in items.items():
            if key not in known:
                secret_key = SECRET_ENV.get(section, ("", ""))[0]
                hint = " (secrets go in a file or the environment)" if key == secret_key else ""
                raise ConfigError(f"{origin}: unknown key {section}.{key}{hint}")
            setattr(target, key, _coerce(section, key, raw, target))


def load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def from_env(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`WARDSYNC_RELAY_<SECTION>_<KEY>` settings (the two secret variables excluded)."""
    secret_vars = {name for _, name in SECRET_ENV.values()}
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in secret_vars:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS or not key:
            raise ConfigError(f"{name}: not a relay setting")
        out.setdefault(section, {})[key] = value
    return out


FLAG_KEYS = {
    "fhir_base": ("fhir", "base"),
    "client_id": ("fhir", "client_id"),
    "client_secret_file": ("fhir", "client_secret_file"),
    "ably_key_file": ("ably", "key_file"),
    "ably_endpoint": ("ably", "endpoint"),
    "listen": ("relay", "listen"),
    "public_url": ("relay", "public_url"),
    "data_dir": ("relay", "data_dir"),
}


def refuse_secret_flags(argv: Sequence[str]) -> None:
    """Raise SecretOnCommandLine if an argument looks like a secret rather than a file."""
    for arg in argv:
        name = arg.split("=", 1)[0]
        if _SECRET_FLAG.fullmatch(name) and not name.endswith("-file"):
            raise SecretOnCommandLine(
                f"{name}: secrets are not accepted on the command line; use a *-file option "
                "or the environment (docs/relay.md)")


def load(
    *,
    config_file: Path | None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    require_file: bool = False,
) -> RelayConfig:
    """Defaults < file < environment < flags (flags given as `FLAG_KEYS` names)."""
    env = os.environ if env is None else env
    config = RelayConfig()
    path = config_file or DEFAULT_CONFIG_PATH
    if config_file is not None or require_file or path.exists():
        _apply(config, load_file(path), str(path))
    _apply(config, from_env(env), "environment")
    layered: dict[str, dict[str, object]] = {}
    for name, value in (flags or {}).items():
        if value is not None:
            section, key = FLAG_KEYS[name]
            layered.setdefault(section, {})[key] = value
    _apply(config, layered, "command line")
    return config
