"""Fixtures: a real hub on 127.0.0.1 per test, torn down with every client it served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hub_harness import KEY_NAME, KEY_SECRET, HubBed, fast_config

from wardsync.sandbox.hub import Hub, HubConfig

BedFactory = Callable[..., Awaitable[HubBed]]


async def _assert_no_dangling_tasks() -> None:
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    hub_tasks = [t.get_name() for t in pending if t.get_name().startswith("hub-")]
    assert not hub_tasks, f"hub tasks left running after stop(): {hub_tasks}"
    # The SDK finishes its own transport clean-up tasks shortly after close().
    for _ in range(100):
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks left running: {pending}")


@pytest.fixture
async def make_bed() -> AsyncIterator[BedFactory]:
    beds: list[HubBed] = []

    async def factory(config: HubConfig | None = None, port: int = 0) -> HubBed:
        hub = Hub({KEY_NAME: KEY_SECRET}, config or fast_config())
        await hub.start(port=port)
        bed = HubBed(hub)
        beds.append(bed)
        return bed

    try:
        yield factory
    finally:
        for bed in beds:
            await bed.close()
        await _assert_no_dangling_tasks()


@pytest.fixture
async def bed(make_bed: BedFactory) -> HubBed:
    return await make_bed()
