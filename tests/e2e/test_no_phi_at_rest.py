"""After a session, the workstation holds no token and no patient identity on disk.

The app runs in demo mode with the whole session's files redirected into a private HOME and
TMPDIR (the sandbox child writes its synthetic database there and must delete it), the metrics
log switched on, and every window loaded. Then every file under HOME, the app's user dirs and
TMPDIR is searched for the session's tokens and for the patients' names and MRNs shown on
screen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.infra.metrics import FileMetrics
from wardsync.infra.paths import app_dirs
from wardsync.infra.settings import load_settings
from wardsync.ui.app import AppController

pytestmark = pytest.mark.slow  # whole app processes on a real sandbox


def all_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


async def test_no_tokens_or_patient_identity_left_on_disk(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    dirs = app_dirs()
    metrics_path = Path(str(dirs.logs)) / "metrics.jsonl"
    metrics = FileMetrics(metrics_path)
    settings = load_settings(environ={}, policy_path=tmp_path / "none.toml",
                             user_path=Path(str(dirs.config)) / "config.toml")

    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    window = controller.open_ward_overview()
    qtbot.addWidget(window)
    await wait_for(lambda: len(window.model.rows) == 24
                   and all(r.news2 is not None for r in window.model.rows))
    session = controller.services.session
    secrets = {session.tokens.access_token, session.tokens.refresh_token}
    shown = [(r.name, r.mrn) for r in window.model.rows]
    sandbox_dir = Path(controller.services.sandbox.info["data_dir"])
    assert sandbox_dir.is_relative_to(tmp)  # the child used our TMPDIR...
    await controller.aclose()
    metrics.close()
    assert not sandbox_dir.exists()  # ...and removed its synthetic database on stop

    needles = {s.encode() for s in secrets if s}
    for name, mrn in shown:
        family = name.split(",", 1)[0].strip()
        needles |= {name.encode(), mrn.encode(), family.encode(), family.title().encode()}
    roots = [home, tmp, *(Path(str(d)) for d in (dirs.config, dirs.data, dirs.cache,
                                                 dirs.state, dirs.logs))]
    files = all_files(*roots)
    assert metrics_path in files and metrics_path.stat().st_size > 0
    for path in files:
        data = path.read_bytes()
        found = [n.decode() for n in needles if n in data]
        assert not found, f"{path} contains {found[:3]}"
    # The metrics log is there and carries references only.
    text = metrics_path.read_text()
    assert '"event":"rendered"' in text and "Observation/" in text
