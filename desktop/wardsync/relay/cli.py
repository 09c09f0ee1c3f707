"""`wardsync relay ...`: run the relay, or `wardsync relay check FILE` to validate a config.

Contract (docs/architecture.md §3.1, docs/relay.md): prints ONE JSON line on stdout when ready,
`{"token_url", "notify_url", "health_url", "metrics_url"}`; logs go to stderr as JSON; SIGTERM
or SIGINT drains and exits 0. Exit 2 for an unusable configuration, 1 when the relay cannot
start (e.g. the FHIR server's SMART configuration is unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import signal
import sys
from pathlib import Path

from wardsync.fhir.smart_configuration import DiscoveryError
from wardsync.relay import logs
from wardsync.relay.config import (
    ConfigError,
    RelayConfig,
    load,
    refuse_secret_flags,
)

log = logging.getLogger(__name__)

# What `pip install 'wardsync[relay]'` adds (pyproject.toml); imported only when serving
# (psycopg only with `relay.database_url`).
RELAY_EXTRA_MODULES = ("aiohttp", "prometheus_client")


# Flags someone might try for a secret. Each is refused without echoing its value (argparse
# would otherwise take `--client-secret X` as an abbreviation of `--client-secret-file X`).
SECRET_TRAP_FLAGS = ("--client-secret", "--ably-key", "--key", "--secret", "--password",
                     "--token", "--api-key")


class _RefuseSecret(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string}: secrets are not accepted on the command line; use "
                     "--client-secret-file / --ably-key-file or the environment (docs/relay.md)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag in SECRET_TRAP_FLAGS:
        parser.add_argument(flag, action=_RefuseSecret, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file (default /etc/wardsync/relay.toml when present)")
    parser.add_argument("--fhir-base", help="FHIR server base URL")
    parser.add_argument("--client-id", help="the relay's client id at the authorization server")
    parser.add_argument("--client-secret-file", type=Path, help="file holding the client secret")
    parser.add_argument("--ably-key-file", type=Path, help="file holding the Ably API key")
    parser.add_argument("--ably-endpoint", help="Ably REST endpoint HOST[:PORT]")
    parser.add_argument("--listen", help="HOST:PORT to serve on (port 0: any free port)")
    parser.add_argument("--public-url", help="the relay's URL as workstations reach it")
    parser.add_argument("--data-dir", type=Path, help="where the relay keeps its state")
    sub = parser.add_subparsers(dest="relay_command")
    check = sub.add_parser("check", help="validate a relay configuration file and exit")
    check.add_argument("file", type=Path)


def _flags(args: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(args, name, None) for name in (
        "fhir_base", "client_id", "client_secret_file", "ably_key_file", "ably_endpoint",
        "listen", "public_url", "data_dir")}


def _check(path: Path) -> int:
    try:
        config = load(config_file=path, env={}, require_file=True)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    problems = config.validate()
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"{path}: ok")
    return 0


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Entry point from `wardsync relay`."""
    try:
        refuse_secret_flags(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"wardsync relay: {exc}", file=sys.stderr)
        return 2
    if args.relay_command == "check":
        return _check(args.file)
    try:
        config = load(config_file=args.config, flags=_flags(args))
    except ConfigError as exc:
        print(f"wardsync relay: {exc}", file=sys.stderr)
        return 2
    problems = config.validate()
    if problems:
        for problem in problems:
            print(f"wardsync relay: {problem}", file=sys.stderr)
        return 2
    needed = RELAY_EXTRA_MODULES + (("psycopg",) if config.uses_postgres else ())
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(f"wardsync relay: needs the `relay` extra (pip install 'wardsync[relay]'); "
              f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    logs.configure(config.relay.log_level)
    return asyncio.run(_serve(config))


async def _serve(config: RelayConfig) -> int:
    from wardsync.relay.service import Relay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = Relay(config)
    try:
        await relay.start()
    except (DiscoveryError, OSError) as exc:
        log.error("relay could not start: %s", exc)
        await relay.stop(drain_s=0)
        return 1
    print(json.dumps(relay.ready_info()), flush=True)
    await stop.wait()
    log.info("stopping: draining pokes")
    await relay.stop()
    return 0
