"""Runs FHIR searches off the event loop, with a time limit.

The sandbox's FHIR server, OAuth server and realtime hub share one event loop: a search run
on it holds every endpoint of all three until it ends (a 62 s `_sort` stopped every
workstation's realtime link). So the search parameters are parsed and capped on the loop
(cheap; over the caps is a 400 at once, search_query.py) and the SQL runs on a small pool of
worker threads, each with its own read-only connection (store.py `run_search`), interrupted
at `SEARCH_TIME_LIMIT_S` (docs/security.md §3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from wardsync.sandbox.fhir.store import FhirStore, SearchPage

# The app's and the relay's searches take milliseconds at ward scale; one that needs seconds
# is an abuse or a bug, and stopping it keeps the server available to everyone else.
SEARCH_TIME_LIMIT_S = 5.0
# Two cores on a workstation-class host: more threads would only queue on the CPU.
SEARCH_WORKERS = 2

_T = TypeVar("_T")


class SearchRunner:
    """`await runner.search(type, pairs)`: parse on the loop, run on a worker thread.

    `aclose()` waits for the searches in flight (each bounded by the time limit) and stops
    the workers; call it before closing the store.
    """

    def __init__(
        self, store: FhirStore, *, time_limit_s: float = SEARCH_TIME_LIMIT_S,
        workers: int = SEARCH_WORKERS,
    ) -> None:
        self._store = store
        self._time_limit_s = time_limit_s
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="fhir-search")

    async def search(
        self, resource_type: str, params: Iterable[tuple[str, str]], *, strict: bool = False,
    ) -> SearchPage:
        """The page of results; UnknownResourceType, InvalidSearch (SearchTooCostly over the
        caps) or SearchTimedOut as FhirStore raises them."""
        query = self._store.parse_search(resource_type, params, strict=strict)
        deadline = time.monotonic() + self._time_limit_s
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: self._store.run_search(query, deadline=deadline))

    async def off_loop(self, work: Callable[[], _T]) -> _T:
        """Run `work` on a search worker: turning a page of up to 500 resources into JSON
        takes milliseconds the event loop should spend on other requests."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def aclose(self) -> None:
        """Stop the workers once the searches in flight have ended. Idempotent."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._executor.shutdown(wait=True, cancel_futures=True))
