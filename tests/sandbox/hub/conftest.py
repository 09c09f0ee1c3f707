"""Fixtures: a real hub on 127.0.0.1 per test, torn down with every client it served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hub_harness import KEY_NAME, KEY_SECRET, HubBed, fast_config

from wardsync.sandbox.hub import Hub, HubConfig

BedFactory = Callable[..., Awaitable[HubBed]]


def _pending() -> list[asyncio.Task]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


def _is_sdk_task(task: asyncio.Task) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "/ably/" in code.co_filename


async def _assert_no_dangling_tasks() -> None:
    hub_tasks = [t.get_name() for t in _pending() if t.get_name().startswith("hub-")]
    assert not hub_tasks, f"hub tasks left running after stop(): {hub_tasks}"
    # The SDK finishes its own clean-up tasks shortly after close().
    for _ in range(100):
        if not _pending():
            return
        await asyncio.sleep(0.01)
    # ably 3.1.4 can orphan a connect attempt started before close(); that is the SDK's
    # task, not ours: cancel it so nothing outlives the test, and fail on anything else.
    leftovers = _pending()
    sdk = [t for t in leftovers if _is_sdk_task(t)]
    for task in sdk:
        task.cancel()
    await asyncio.gather(*sdk, return_exceptions=True)
    others = [t for t in leftovers if not _is_sdk_task(t)]
    assert not others, f"tasks left running: {others}"


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
