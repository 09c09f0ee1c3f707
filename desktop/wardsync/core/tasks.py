"""One owner for the background tasks a component starts (docs/style.md §5).

A component that fires work off (an audit write, a presence leave, a channel detach) spawns it
through its `TaskOwner`, which keeps a strong reference until the task ends, logs a task that
failed exactly once (with its name, never its arguments, which may be clinical), and on close
cancels what is still running and awaits it, so nothing outlives its owner and no
"Task exception was never retrieved" reaches the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from wardsync.core.timer import SYSTEM_TIMER, Timer, wait_for

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class TaskOwner:
    """The tasks one component has started and not yet seen finish."""

    def __init__(self, owner: str, *, logger: logging.Logger | None = None,
                 timer: Timer = SYSTEM_TIMER) -> None:
        self.owner = owner
        self._log = logger or log
        self._timer = timer  # measures the `wait` and `aclose` grace times
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = 0
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str | None = None) -> asyncio.Task[_T]:
        """Run `coro` as a task owned here. Raises RuntimeError once the owner is closed."""
        if self.closed:
            coro.close()
            raise RuntimeError(f"{self.owner} is closed: no new background work")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never reports it again
        if exc is not None:
            self.failed += 1
            self._log.error("%s: background task %r failed", self.owner, task.get_name(),
                            exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(tuple(self._tasks))

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the running tasks to end on their own; True if all did within the time."""
        if not self._tasks:
            return True
        everything = asyncio.wait(set(self._tasks))
        if timeout_s is None:
            await everything
            return True
        try:
            await wait_for(self._timer, everything, timeout_s)
        except TimeoutError:
            return False
        return True

    async def cancel_all(self) -> None:
        """Cancel every running task and wait until each has ended (the owner stays open)."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Refuse new work; give running tasks `grace_s` to finish, then cancel and await them."""
        self.closed = True
        if grace_s > 0:
            await self.wait(grace_s)
        await self.cancel_all()
