"""The ward simulator: carries out the `WritePlanner`'s plan against a FHIR server.

This is the thin async half: it sleeps for each planned write's delay, writes it through the
laboratory or bedside-devices client, and keeps going whatever the server does. A transient
failure (server down, 5xx, 401) is logged and the same write is retried after a capped
exponential backoff; a write the server rejects (4xx, 412 conflict) is logged and dropped.
Logs name the write's sequence number and kind only: never a patient, value or resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from wardsync.fhir.errors import FhirError

from .devices import WardDevices
from .lab import LabSystem
from .planner import (
    LabCorrectionWrite,
    LabResultWrite,
    PlannedWrite,
    SimulatorConfig,
    VitalsWrite,
    WritePlanner,
)

__all__ = ["SimulatorConfig", "SimulatorStats", "WardSimulator"]

log = logging.getLogger(__name__)

STOP_WRITE_TIMEOUT_S = 10.0  # how long stop() lets a write in flight finish
REMEMBERED_REPORTS = 200  # released reports kept by plan seq, so they can be corrected


@dataclass(slots=True)
class SimulatorStats:
    """What the simulator has done so far (counts only)."""

    lab_results: int = 0
    corrections: int = 0
    vitals_rounds: int = 0
    critical: int = 0
    failed_attempts: int = 0
    rejected: int = 0
    skipped: int = 0


class WardSimulator:
    """Writes new lab results, corrections and vital signs at the configured rates.

    Owns one task: `start()` creates it, `stop()` cancels and awaits it. The clients are the
    caller's (the simulator does not close them).
    """

    def __init__(
        self,
        *,
        lab: LabSystem,
        devices: WardDevices,
        patients: Sequence[str],
        encounters: dict[str, str],
        config: SimulatorConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._lab = lab
        self._devices = devices
        self._encounters = dict(encounters)
        self._config = config
        self._sleep = sleep  # injectable so tests can assert the exact timeline
        self._planner = WritePlanner(patients, config)
        # A per-run prefix keeps accession numbers unique when the same seed runs again
        # against the same data directory.
        self._run = uuid.uuid4().hex[:8].upper()
        self._reports: OrderedDict[int, str] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = asyncio.Event()  # set while no write is in flight
        self._idle.set()
        self.stats = SimulatorStats()

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()` (and while the plan lasts)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start writing in the background (needs a running event loop)."""
        if self._task is not None:
            raise RuntimeError("the ward simulator was already started")
        self._task = asyncio.get_running_loop().create_task(self._run_plan(), name="ward-simulator")

    async def stop(self, write_timeout_s: float = STOP_WRITE_TIMEOUT_S) -> None:
        """Let a write in flight finish (so `stats` matches what the server holds), then cancel
        the task and wait for it. Safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), write_timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run_plan(self) -> None:
        for write in self._planner:
            await self._sleep(write.delay_s)
            if self._stopping:
                return
            await self._write_until_done(write)
        log.info("ward simulator: nothing to write (both rates are zero)")

    async def _write_until_done(self, write: PlannedWrite) -> None:
        delay = self._config.retry_initial_s
        while True:
            self._idle.clear()
            try:
                await self._write(write)
                return
            except FhirError as exc:
                kind = type(write).__name__
                if not exc.transient:
                    self.stats.rejected += 1
                    log.warning("ward simulator: write %d (%s) rejected: %s", write.seq, kind, exc)
                    return
                self.stats.failed_attempts += 1
                log.warning(
                    "ward simulator: write %d (%s) failed (%s: %s); retrying in %.1f s",
                    write.seq,
                    kind,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            except Exception:
                # Anything else (a reply this client cannot use, a bug) must not end the
                # simulation: drop this write with its traceback (code and ids only, no
                # resource content) and carry on with the plan.
                self.stats.rejected += 1
                log.exception(
                    "ward simulator: write %d (%s) dropped", write.seq, type(write).__name__
                )
                return
            finally:
                self._idle.set()
            if self._stopping:
                return  # a failed write is not retried once stop() was asked for
            await self._sleep(delay)
            delay = min(max(delay * 2, self._config.retry_initial_s), self._config.retry_max_s)

    async def _write(self, write: PlannedWrite) -> None:
        encounter = self._encounters.get(write.patient_id)
        if isinstance(write, VitalsWrite):
            await self._devices.post_vitals(
                write.patient_id,
                write.vitals,
                encounter_id=encounter,
                round_id=f"{self._run}-{write.seq}",
            )
            self.stats.vitals_rounds += 1
        elif isinstance(write, LabResultWrite):
            report, _ = await self._lab.post_panel(
                write.patient_id,
                write.panel_code,
                write.values,
                encounter_id=encounter,
                accession=f"SIM-{self._run}-{write.seq:06d}",
            )
            self._remember(write.seq, report["id"])
            self.stats.lab_results += 1
            self.stats.critical += write.critical
        elif isinstance(write, LabCorrectionWrite):
            report_id = self._reports.get(write.corrects_seq)
            if report_id is None:
                # The original was rejected or is too old to remember: nothing to correct.
                self.stats.skipped += 1
                log.info("ward simulator: correction %d has no released report", write.seq)
                return
            await self._lab.correct_report(report_id, write.values)
            self.stats.corrections += 1
            self.stats.critical += write.critical

    def _remember(self, seq: int, report_id: str) -> None:
        self._reports[seq] = report_id
        while len(self._reports) > REMEMBERED_REPORTS:
            self._reports.popitem(last=False)
