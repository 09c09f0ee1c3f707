"""The workstation's "system browser" in the hospital-mode end-to-end tests.

The app opens the sign-in page with the site's browser command (`auth.browser`,
`wardsync/auth/browser_command.py`). In the tests that command is this module, run as its own
process by the app: `python -m tests.e2e.browser HOST:PORT URL` hands the address to the test
(`BrowserInbox`, a loopback listener in the test process), which then plays the person at the
browser: it loads the page, submits the sandbox's sign-in form and follows the redirect to the
app's loopback listener (RFC 8252 §7.3). The app only ever sees a browser it started and a
redirect to its own listener.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence


class BrowserInbox:
    """The test's end: receives each address the app's browser command was started with."""

    def __init__(self) -> None:
        self.urls: asyncio.Queue[str] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> BrowserInbox:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def command(self) -> list[str]:
        """The `auth.browser` setting that makes the app open pages here."""
        return [sys.executable, "-m", "tests.e2e.browser", self.address, "%s"]

    async def next_url(self, timeout_s: float) -> str:
        return await asyncio.wait_for(self.urls.get(), timeout_s)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
        if line.strip():
            self.urls.put_nowait(line.decode().strip())


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.e2e.browser HOST:PORT URL", file=sys.stderr)
        return 2
    host, port = argv[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(argv[1].encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
