"""The metrics log file: JSON lines appended, created for its user only whatever the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from wardsync.infra.metrics import FileMetrics, metrics_from_env


def test_a_new_metrics_log_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "metrics.jsonl"
    old = os.umask(0o000)
    try:
        sink = FileMetrics(path)
    finally:
        os.umask(old)
    sink.emit("poke_received", ref="Observation/obs-1", versionId="2")
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [line] = path.read_text().splitlines()
    record = json.loads(line)
    assert (record["event"], record["ref"], record["versionId"]) == (
        "poke_received", "Observation/obs-1", "2")
    assert {"t_wall", "t_mono_ns"} <= record.keys()


def test_an_existing_log_is_appended_to_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event":"earlier"}\n')
    path.chmod(0o640)  # chosen by an administrator
    sink = metrics_from_env({"WARDSYNC_METRICS_LOG": str(path)})
    assert isinstance(sink, FileMetrics)
    sink.emit("rendered", window="ward-1", refs=["Observation/obs-1"])
    sink.close()
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == [
        "earlier", "rendered"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
