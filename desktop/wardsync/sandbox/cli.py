"""`wardsync sandbox`: run the embedded backend headless and print one JSON ready line."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=0, help="FHIR/OAuth port (0: any free)")
    parser.add_argument("--hub-port", type=int, default=0, help="realtime hub port (0: any free)")
    parser.add_argument("--data-dir", default=None, help="where the SQLite data lives")
    parser.add_argument("--seed", type=int, default=1, help="synthetic ward seed")
    parser.add_argument("--no-simulator", action="store_true", help="do not write new results")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("the sandbox backend is not assembled yet")
