"""`python -m benchmarks.baseline_sandbox`: the sandbox as it was before the relay.

The real `wardsync.sandbox.server.Sandbox`, started in this process with `relay=False`, and
the former in-process poke publisher (`benchmarks.inprocess_publisher`) attached to its FHIR
store, so every committed write becomes a poke from inside the sandbox's own process, as
before the WardSync relay. A benchmark baseline only (benchmarks/relay_path.py).

It takes the `wardsync sandbox` flags (`--no-relay` is implied) and speaks the same contract:
one JSON ready line on stdout (the sandbox's own, plus `"poke_publisher": "in-process"`),
logs on stderr, stop on SIGTERM, Ctrl-C or, with `--stop-on-stdin-eof`, when standard input
closes. `running_baseline` is the driver's side: it runs this module as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.inprocess_publisher import InProcessPokePublisher
from wardsync.sandbox import cli as sandbox_cli
from wardsync.sandbox.server import Sandbox

DRAIN_ON_STOP_S = 2.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Blocks until the parent closes our stdin, then asks the loop to stop."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass  # stdin unusable: treat as closed
    loop.call_soon_threadsafe(stop.set)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The flags mean what they mean for `wardsync sandbox`; only the relay is left out.
    config = dataclasses.replace(sandbox_cli._config(args), relay=False)
    async with Sandbox(config) as sandbox:
        assert sandbox.store is not None and sandbox.hub is not None
        hub = sandbox.hub
        publisher = InProcessPokePublisher(
            store=sandbox.store, ward=sandbox.ward, key=sandbox.hub_key,
            hub_host=config.host, hub_port=lambda: hub.port,
            seq_file=sandbox.data_dir / "pokes.seq",
        )
        publisher.start()
        try:
            sys.stdout.write(json.dumps({**sandbox.ready_info(),
                                         "poke_publisher": "in-process"}) + "\n")
            sys.stdout.flush()
            if args.stop_on_stdin_eof:
                threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True,
                                 name="parent watch").start()
            await stop.wait()
        finally:
            with contextlib.suppress(TimeoutError):
                await publisher.drain(DRAIN_ON_STOP_S)
            await publisher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_sandbox",
                                     description=__doc__.splitlines()[0])
    sandbox_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


@contextlib.asynccontextmanager
async def running_baseline(*args: str) -> AsyncIterator[dict[str, Any]]:
    """This module as a child process (`wardsync sandbox` flags); yields its ready line."""
    env = dict(os.environ)
    env.pop("WARDSYNC_METRICS_LOG", None)  # the app's metrics are the app's own
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.baseline_sandbox", "--stop-on-stdin-eof", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the baseline sandbox exited before it was ready "
                               f"(exit {await proc.wait()})")
        yield json.loads(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
