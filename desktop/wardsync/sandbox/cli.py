"""`wardsync sandbox`: run the embedded backend headless and print one JSON ready line.

The ready line (docs/architecture.md §3) is the only thing written to stdout; logs go to stderr.
Ctrl-C and SIGTERM stop the sandbox cleanly (servers closed, simulator stopped, the relay's
pokes drained).
The sandbox is an optional extra (`wardsync[sandbox]`): without its libraries the command says
how to install them and exits with `SANDBOX_NOT_INSTALLED_EXIT`, before anything needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from wardsync.infra.sandbox_process import SANDBOX_NOT_INSTALLED_EXIT, SandboxNotInstalled
from wardsync.sandbox.ward.planner import SimulatorConfig

# What the `sandbox` extra in pyproject.toml adds to the app's own dependencies (the relay it
# runs needs prometheus_client).
EXTRA_REQUIREMENTS = ("aiohttp", "prometheus_client")


def missing_requirements() -> list[str]:
    """The sandbox's own libraries (the `sandbox` extra) that cannot be imported here."""
    missing: list[str] = []
    for name in EXTRA_REQUIREMENTS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_installed() -> None:
    """Raise `SandboxNotInstalled`, naming what is missing, unless the sandbox can run."""
    missing = missing_requirements()
    if missing:
        raise SandboxNotInstalled(", ".join(missing))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=0, help="FHIR/sign-in port (0: any free)")
    parser.add_argument("--hub-port", type=int, default=0, help="realtime hub port (0: any free)")
    parser.add_argument("--data-dir", default=None,
                        help="keep the sandbox's data here (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic ward seed")
    parser.add_argument("--patients", type=int, default=24, help="patients on the ward")
    parser.add_argument("--no-simulator", action="store_true",
                        help="do not write new vitals and lab results")
    parser.add_argument("--results-per-min", type=float, default=6.0,
                        help="simulated lab events per minute")
    parser.add_argument("--vitals-per-min", type=float, default=12.0,
                        help="simulated rounds of vital signs per minute")
    parser.add_argument("--critical-probability", type=float, default=0.05,
                        help="share of simulated lab panels with a critical value")
    parser.add_argument("--access-token-ttl", type=float, default=900.0,
                        help="lifetime of access tokens in seconds")
    parser.add_argument("--auth-issuer", default=None,
                        help="trust access tokens from this OpenID issuer (a site's Keycloak, "
                             "Entra ID...) instead of the sandbox's own sign-in")
    parser.add_argument("--auth-audience", default=None,
                        help="the `aud` those tokens must name (with --auth-issuer)")
    parser.add_argument("--no-relay", action="store_true",
                        help="do not run the WardSync relay: no pokes are published unless a "
                        "relay is run beside the sandbox (its client is in the ready line)")
    parser.add_argument("--hub-connections-per-user", type=int, default=None,
                        help="realtime connections one user may hold at once (default 20; "
                        "load tests that sign one user in at many workstations raise it)")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="stop when standard input closes (a parent app that ends, "
                        "however it ends, takes its demo sandbox with it)")


def _config(args: argparse.Namespace):  # -> SandboxConfig (imported lazily below)
    from wardsync.sandbox.hub import HubConfig
    from wardsync.sandbox.server import SandboxConfig

    hub = HubConfig()
    if args.hub_connections_per_user is not None:
        hub.max_connections_per_client = args.hub_connections_per_user
    return SandboxConfig(
        host=args.host, port=args.port, hub_port=args.hub_port,
        data_dir=Path(args.data_dir) if args.data_dir else None, seed=args.seed,
        patients=args.patients, simulator=not args.no_simulator,
        simulator_config=SimulatorConfig(
            seed=args.seed, results_per_min=args.results_per_min,
            vitals_per_min=args.vitals_per_min,
            critical_probability=args.critical_probability,
        ),
        access_token_ttl_s=args.access_token_ttl,
        auth_issuer=args.auth_issuer, auth_audience=args.auth_audience,
        relay=not args.no_relay, hub_config=hub,
    )


async def _serve(args: argparse.Namespace) -> None:
    from wardsync.sandbox.server import Sandbox

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(sig, stop.set)
    async with Sandbox(_config(args)) as sandbox:
        sys.stdout.write(json.dumps(sandbox.ready_info()) + "\n")
        sys.stdout.flush()
        if args.stop_on_stdin_eof:
            watcher = threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True,
                                       name="parent watch")
            watcher.start()
        await stop.wait()


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Blocks until the parent closes our stdin (or dies), then asks the loop to stop."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass  # stdin unusable: treat as closed
    loop.call_soon_threadsafe(stop.set)


def run(args: argparse.Namespace) -> int:
    try:
        require_installed()
    except SandboxNotInstalled as exc:
        print(f"wardsync sandbox: {exc}", file=sys.stderr)
        return SANDBOX_NOT_INSTALLED_EXIT
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"wardsync sandbox: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
