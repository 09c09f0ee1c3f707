"""The fault proxy on its own, against a real TCP echo server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.faults.harness import eventually
from tests.faults.proxy import FaultProxy, ProxyMode

QUIET_S = 0.4  # long enough that forwarded bytes would have arrived on loopback


class EchoServer:
    """Echoes every byte back; records what it received and how many clients it saw."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.eofs = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
            self.eofs += 1
            writer.write(b"bye")
            await writer.drain()
        except ConnectionError:
            self.resets += 1
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


@contextlib.asynccontextmanager
async def connected(proxy: FaultProxy
                    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout_s: float = 2.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout_s)


async def test_pass_forwards_both_ways_and_half_closes(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with connected(proxy) as (reader, writer):
        writer.write(b"hello")
        assert await read_exactly(reader, 5) == b"hello"
        writer.write_eof()  # our FIN reaches the server, whose reply still reaches us
        assert await asyncio.wait_for(reader.read(), 2.0) == b"bye"
    assert echo.eofs == 1
    assert proxy.stats.bytes_up == 5 and proxy.stats.bytes_down == 8
    assert proxy.mode is ProxyMode.PASS


async def test_drop_all_resets_both_peers_and_new_connections_work(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with connected(proxy) as (reader, writer):
        writer.write(b"x")
        await read_exactly(reader, 1)
        assert proxy.drop_all() == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 2.0)
    await eventually(lambda: echo.resets == 1, 2.0, "the server side saw a reset too")
    async with connected(proxy) as (reader, writer):
        writer.write(b"again")
        assert await read_exactly(reader, 5) == b"again"
    assert proxy.stats.dropped == 1


async def test_blackhole_holds_open_and_new_connections_then_releases_in_order(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with connected(proxy) as (reader, writer):
        writer.write(b"a")
        await read_exactly(reader, 1)
        proxy.blackhole()
        writer.write(b"bc")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), QUIET_S)
        assert bytes(echo.received) == b"a", "nothing crossed the blackhole"
        assert not reader.at_eof() and not writer.is_closing(), "the connection looks open"
        async with connected(proxy) as (reader2, writer2):
            writer2.write(b"new")
            await asyncio.sleep(QUIET_S)
            assert echo.connections == 1, "a new connection gets no further than the proxy"
            await proxy.heal()
            assert await read_exactly(reader, 2) == b"bc"
            assert await read_exactly(reader2, 3) == b"new"
    assert proxy.mode is ProxyMode.PASS


async def test_latency_delays_each_direction_without_adding_up(proxy: FaultProxy) -> None:
    async with connected(proxy) as (reader, writer):
        proxy.set_latency(upstream_s=0.2, downstream_s=0.1)
        assert proxy.latency == (0.2, 0.1)
        start = time.monotonic()
        writer.write(b"p")
        await read_exactly(reader, 1)
        rtt = time.monotonic() - start
        assert 0.3 <= rtt < 0.45, rtt
        # 20 chunks 20 ms apart: each is 0.3 s late, the whole stream is not 20 x 0.3 s late.
        start = time.monotonic()
        for _ in range(20):
            writer.write(b"q")
            await writer.drain()
            await asyncio.sleep(0.02)
        await read_exactly(reader, 20)
        assert time.monotonic() - start < 0.4 + 0.3 + 0.3, "latency accumulated per chunk"
        with pytest.raises(ValueError):
            proxy.set_latency(upstream_s=-1)
        await proxy.heal()
        assert proxy.latency == (0.0, 0.0)


async def test_refuse_closes_the_listener_but_keeps_open_connections(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    port = proxy.port
    async with connected(proxy) as (reader, writer):
        await proxy.refuse()
        assert proxy.mode is ProxyMode.REFUSE
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"still")
        assert await read_exactly(reader, 5) == b"still"
    await proxy.heal()
    assert proxy.port == port
    async with connected(proxy) as (reader, writer):
        writer.write(b"back")
        assert await read_exactly(reader, 4) == b"back"


async def test_upstream_down_resets_the_client() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with FaultProxy("127.0.0.1", dead_port) as proxy, connected(proxy) as (reader, _):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 2.0)
        assert proxy.stats.upstream_failures == 1


async def test_injected_bytes_arrive_between_forwarded_chunks(proxy: FaultProxy) -> None:
    async with connected(proxy) as (reader, writer):
        writer.write(b"one")
        assert await read_exactly(reader, 3) == b"one"
        assert proxy.inject_downstream(b"JUNK") == 1
        writer.write(b"two")
        assert await read_exactly(reader, 7) == b"JUNKtwo"
        assert proxy.stats.injected == 1


async def test_close_cancels_every_task_and_connection(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port)
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    await read_exactly(reader, 1)
    proxy.blackhole()  # a held connection must not keep close() waiting
    await asyncio.wait_for(proxy.aclose(), 2.0)
    assert proxy.open_connections == 0
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 2.0)
    writer.transport.abort()
    others = [t for t in asyncio.all_tasks()
              if t is not asyncio.current_task() and not t.done()
              and "proxy" in repr(t.get_coro())]
    assert not others, others
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
