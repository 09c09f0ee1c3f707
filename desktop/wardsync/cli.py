"""The `wardsync` command: the launcher and composition root.

`wardsync` starts the desktop app (on the embedded sandbox when no FHIR server is configured),
`wardsync sandbox ...` runs the backend headless, `wardsync config show|check` explains the
effective configuration. Qt is imported only when a window is needed, so the headless commands
work on machines without a display. The sandbox is an optional extra (`wardsync[sandbox]`);
`wardsync --demo` without it says how to install it instead of starting a window.
"""

from __future__ import annotations

import argparse
import sys

from wardsync._version import __version__


def _build_parser() -> argparse.ArgumentParser:
    from wardsync.infra import config_cli
    from wardsync.relay.cli import add_arguments as add_relay_arguments
    from wardsync.sandbox.cli import add_arguments as add_sandbox_arguments

    parser = argparse.ArgumentParser(
        prog="wardsync",
        description="WardSync clinical workstation. With no FHIR server configured it runs on "
        "the embedded sandbox with synthetic data.",
    )
    parser.add_argument("--version", action="version", version=f"wardsync {__version__}")
    parser.add_argument(
        "--demo", action="store_true", help="run on the embedded sandbox (synthetic data)"
    )
    config_cli.add_override_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    add_sandbox_arguments(sub.add_parser("sandbox", help="run the embedded backend headless"))
    add_relay_arguments(sub.add_parser("relay", help="run the relay service (docs/relay.md)"))
    config_cli.add_arguments(
        sub.add_parser("config", help="show the effective settings or check a policy file")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "sandbox":
        from wardsync.sandbox.cli import run

        return run(args)
    if args.command == "relay":
        from wardsync.relay.cli import run as run_relay

        return run_relay(args, argv)
    if args.command == "config":
        from wardsync.infra.config_cli import run

        return run(args)
    if args.demo:
        from wardsync.infra.sandbox_process import SANDBOX_NOT_INSTALLED_EXIT, SandboxNotInstalled
        from wardsync.sandbox.cli import require_installed

        try:
            require_installed()
        except SandboxNotInstalled as exc:
            print(f"wardsync: {exc}", file=sys.stderr)
            return SANDBOX_NOT_INSTALLED_EXIT
    from wardsync.ui.app import run_app

    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
