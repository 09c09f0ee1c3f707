"""The metrics log: `WARDSYNC_METRICS_LOG=<path>` appends one JSON object per line.

Contract (docs/architecture.md §3.4): every line has `event`, `t_wall` (epoch seconds, float) and
`t_mono_ns`; resource events carry `ref` and `versionId`. Only references, states and numbers
are written, never clinical content, so the file can be shared with IT for diagnosis.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from wardsync.core.metrics import MetricsSink, NullMetrics

METRICS_ENV = "WARDSYNC_METRICS_LOG"
METRICS_FILE_MODE = 0o600


class FileMetrics:
    """Appends JSON lines to a file; safe to call from several threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by this user only (a second user on a shared workstation has no
        # business reading it; IT gets it when the user hands it over), whatever the umask.
        # A file that already exists keeps its mode: an administrator may have chosen it.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, METRICS_FILE_MODE)
        # Line-buffered text append: each event reaches the file as one write, so a reader
        # tailing it from another process sees whole lines.
        self._file = open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t_wall": time.time(), "t_mono_ns": time.monotonic_ns()}
        record.update(fields)
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def metrics_from_env(environ: dict[str, str] | None = None) -> MetricsSink:
    """The sink named by WARDSYNC_METRICS_LOG, or one that discards everything."""
    path = (environ if environ is not None else os.environ).get(METRICS_ENV)
    return FileMetrics(path) if path else NullMetrics()
