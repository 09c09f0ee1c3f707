"""A loopback TCP proxy that misbehaves on command: the network between workstations and servers.

The fault suite puts one `FaultProxy` in front of the sandbox's FHIR port and one in front of
its hub port, points the headless workstations at the proxies (`fhir_base` = `proxy.url(...)`,
`realtime_endpoint` = `proxy.endpoint`) and then breaks the network in the ways hospital
networks break:

- `drop_all()`: every open connection is reset now (RST both ways, like a firewall or NAT box
  forgetting its flows); new connections work.
- `blackhole()`: connections stay open and new ones are accepted, but nothing is forwarded
  either way. This is the silent failure only heartbeats detect (Ably RTN23a: the SDK drops a
  connection that has been silent for maxIdleInterval). Bytes are held, not discarded, as TCP
  would retransmit them, and flow again after `heal()`.
- `set_latency(upstream_s, downstream_s)`: every chunk is delivered that much later, per
  direction, without reordering and without adding up across chunks.
- `refuse()`: the listening socket closes, so new connections get ECONNREFUSED (the server's
  host is up but the service is not); open ones are left alone.
- `heal()`: back to plain forwarding (no latency, listening again, held bytes released).

A maintained tool was looked for first: toxiproxy does all of this but is a Go server binary
(not on PyPI or in Debian here, and downloads are not reachable); vaurien is a gevent tool
unmaintained since 2013; toxic-proxy only adds latency and bandwidth limits; flakynet and
faulty are young single-author packages whose fault sets do not include a blackhole that holds
connections open; the userver test framework's `TcpGate` fits the model but comes with a C++
framework. So this stays small and has its own tests (tests/faults/test_proxy.py).

Every task belongs to the proxy and is cancelled and awaited by `aclose()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# Chunks read ahead per direction before the proxy stops reading (backpressure to the sender).
QUEUE_CHUNKS = 64
UPSTREAM_CONNECT_TIMEOUT_S = 5.0


class ProxyMode(StrEnum):
    """What the proxy does with traffic (latency applies on top of `PASS`)."""

    PASS = "pass"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


@dataclass
class ProxyStats:
    """Counters for assertions and for the fault suite's reports."""

    accepted: int = 0
    upstream_failures: int = 0
    dropped: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    injected: int = 0


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


_EOF = object()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.downstream_queue: asyncio.Queue[tuple[float, bytes] | object] | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def reset(self) -> None:
        for writer in self.writers():
            _reset_on_close(writer)
            writer.transport.abort()


class FaultProxy:
    """`async with FaultProxy(host, port) as proxy:` — forwards 127.0.0.1:`proxy.port` there."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._latency = {"up": 0.0, "down": 0.0}
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._mode = ProxyMode.PASS
        self._closed = False

    # ------------------------------------------------------------------ addresses
    @property
    def endpoint(self) -> str:
        """`host:port`, as `WorkstationConfig.realtime_endpoint` wants it."""
        return f"{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        """`http://host:port/path`, e.g. `proxy.url("fhir")` for `fhir_base`."""
        return f"http://{self.endpoint}/{path.lstrip('/')}"

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def latency(self) -> tuple[float, float]:
        """(upstream_s, downstream_s) currently added."""
        return self._latency["up"], self._latency["down"]

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Listen (on `port`, or a free one if 0; `port` then holds the bound port)."""
        await self._listen()

    async def aclose(self) -> None:
        """Stop listening, reset every connection, cancel and await every task."""
        if self._closed:
            return
        self._closed = True
        self._flowing.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.reset()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------------ faults
    async def heal(self) -> None:
        """Plain forwarding again: no latency, listening, held bytes released."""
        self._latency = {"up": 0.0, "down": 0.0}
        if self._server is None and not self._closed:
            await self._listen()
        self._mode = ProxyMode.PASS
        self._flowing.set()

    def blackhole(self) -> None:
        """Forward nothing either way, on open and new connections, until `heal()`."""
        self._mode = ProxyMode.BLACKHOLE
        self._flowing.clear()

    def set_latency(self, upstream_s: float = 0.0, downstream_s: float = 0.0) -> None:
        """Delay every chunk read from now on by this much per direction (seconds)."""
        if upstream_s < 0 or downstream_s < 0:
            raise ValueError("latency must not be negative")
        self._latency = {"up": float(upstream_s), "down": float(downstream_s)}

    async def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones carry on."""
        self._mode = ProxyMode.REFUSE
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def drop_all(self) -> int:
        """Reset every open connection now (RST to both peers); returns how many."""
        links = list(self._links)
        for link in links:
            link.reset()
        self.stats.dropped += len(links)
        return len(links)

    def inject_downstream(self, data: bytes) -> int:
        """Send `data` to every connected client between two forwarded chunks (a corrupt
        frame from the network); returns how many clients got it."""
        n = 0
        for link in self._links:
            if link.downstream_queue is not None:
                link.downstream_queue.put_nowait((time.monotonic(), data))
                n += 1
        self.stats.injected += n
        return n

    # ------------------------------------------------------------------ forwarding
    async def _on_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        if self._closed:
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        self.stats.accepted += 1
        # The link's work runs in a task of ours, so `aclose` can cancel it: asyncio's own
        # handler task must end normally (3.11 streams log a cancelled one as an error).
        serving = asyncio.get_running_loop().create_task(self._serve(link, reader))
        self._tasks.add(serving)
        self._handlers.add(handler)
        try:
            await asyncio.wait([serving])
        finally:
            self._links.discard(link)
            for w in link.writers():
                w.transport.abort()
            self._tasks.discard(serving)
            self._handlers.discard(handler)
            if not serving.cancelled() and serving.exception() is not None:
                log.warning("proxy link failed: %r", serving.exception())

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        # A blackholed network does not complete the upstream handshake either.
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), UPSTREAM_CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            # The server is down: the client sees its connection reset, as it would directly.
            self.stats.upstream_failures += 1
            link.reset()
            return
        link.upstream = up_writer
        link.downstream_queue = asyncio.Queue(QUEUE_CHUNKS)
        up_queue: asyncio.Queue[tuple[float, bytes] | object] = asyncio.Queue(QUEUE_CHUNKS)
        pumps = [
            self._read_into(client_reader, up_queue, "up"),
            self._write_from(up_queue, up_writer, "up"),
            self._read_into(up_reader, link.downstream_queue, "down"),
            self._write_from(link.downstream_queue, link.client, "down"),
        ]
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(p) for p in pumps]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.debug("proxy link ended: %r", t.exception())

    async def _read_into(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue, direction: str
    ) -> None:
        while True:
            try:
                data = await reader.read(CHUNK_BYTES)
            except OSError:
                data = b""
            if not data:
                await queue.put(_EOF)
                return
            # Latency counts from when the chunk was read, so chunks do not add up delays.
            await queue.put((time.monotonic() + self._latency[direction], data))

    async def _write_from(
        self, queue: asyncio.Queue, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        while True:
            item = await queue.get()
            # A blackhole holds everything, the peer's FIN included.
            await self._flowing.wait()
            if item is _EOF:
                # Half-close: the peer's FIN goes on, as it would without the proxy; the link
                # ends when both directions have ended.
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            deliver_at, data = item  # type: ignore[misc]
            delay = deliver_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                await self._flowing.wait()
            writer.write(data)
            await writer.drain()
            if direction == "up":
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
