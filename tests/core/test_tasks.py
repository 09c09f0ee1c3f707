"""TaskOwner: owns what it spawns, logs a failure once, cancels and awaits on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import FakeTimer


async def test_a_failed_task_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("audit trail")

    async def boom() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.ERROR):
        task = owner.spawn(boom(), name="write audit event")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert "audit trail" in failures[0].getMessage()
    assert "write audit event" in failures[0].getMessage()
    assert owner.failed == 1
    assert len(owner) == 0


async def test_close_cancels_and_awaits_running_tasks_and_refuses_new_ones() -> None:
    owner = TaskOwner("presence")
    started = asyncio.Event()
    finished: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("cleaned up")

    owner.spawn(forever())
    await started.wait()
    assert len(owner) == 1
    await owner.aclose()
    assert finished == ["cleaned up"]
    assert len(owner) == 0
    coro = forever()
    with pytest.raises(RuntimeError, match="closed"):
        owner.spawn(coro)
    assert owner.failed == 0


async def test_wait_lets_quick_tasks_finish_and_reports_slow_ones() -> None:
    owner = TaskOwner("flush")
    owner.spawn(asyncio.sleep(0.01))
    assert await owner.wait(2.0) is True
    owner.spawn(asyncio.sleep(3600))
    assert await owner.wait(0.01) is False
    await owner.aclose(grace_s=0.01)
    assert len(owner) == 0


async def test_wait_and_close_grace_are_measured_on_the_owners_timer() -> None:
    timer = FakeTimer()
    owner = TaskOwner("audit trail", timer=timer)
    release = asyncio.Event()
    owner.spawn(release.wait(), name="write")
    waiting = asyncio.ensure_future(owner.wait(5.0))
    await timer.advance(4.999)
    assert not waiting.done()
    await timer.advance(0.001)
    assert await waiting is False
    assert len(owner) == 1, "a timed-out wait leaves the task running"
    waiting = asyncio.ensure_future(owner.wait(5.0))
    await timer.advance(1.0)
    release.set()
    assert await waiting is True
    # Closing gives a running task its grace on the timer, then cancels it.
    owner.spawn(asyncio.Event().wait(), name="slow write")
    closing = asyncio.ensure_future(owner.aclose(grace_s=2.0))
    await timer.advance(1.999)
    assert not closing.done() and len(owner) == 1
    await timer.advance(0.001)
    await closing
    assert len(owner) == 0 and owner.failed == 0


async def test_a_failure_is_logged_once_even_when_the_task_is_also_awaited(
        caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("presence")

    async def boom() -> None:
        raise RuntimeError("lost")

    with caplog.at_level(logging.ERROR):
        task = owner.spawn(boom(), name="record presence leave")
        with pytest.raises(RuntimeError):
            await task
        await owner.aclose()
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    assert owner.failed == 1
