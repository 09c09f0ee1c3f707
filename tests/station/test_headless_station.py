"""The headless composition root: a whole signed-in station (sync stack, alerts, presence,
edits, audit) built without a widget or the Qt package, on plain asyncio against the real
sandbox; and the modules benchmarks and tools build stations from never load PySide6."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.waiting import wait_for
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import WardCensus
from wardsync.infra.settings import Settings, load_settings
from wardsync.sandbox.server import Sandbox
from wardsync.station.services import AppServices, Backend, workstation_config
from wardsync.station.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
QT_MODULES = ("PySide6", "qasync", "shiboken6", "wardsync.ui")
HEADLESS_MODULES = (
    "wardsync.station.services", "wardsync.station.workspace", "wardsync.station.layout_store",
    "wardsync.viewmodels.window_geometry", "wardsync.viewmodels.window_layout",
    "wardsync.viewmodels.edit_session", "wardsync.viewmodels.ward_overview",
    "wardsync.viewmodels.ward_rows", "wardsync.viewmodels.lab_rows",
    "wardsync.viewmodels.record_rows", "wardsync.viewmodels.table_rows",
    "wardsync.viewmodels.banner_facts", "wardsync.viewmodels.clinical_text",
    "wardsync.viewmodels.vital_series", "wardsync.viewmodels.report_history",
)
# The benchmark clients that run headless stations (their windowed modes import Qt lazily).
HEADLESS_BENCHMARK_CLIENTS = (
    "benchmarks.app_process", "benchmarks.load_ward", "benchmarks.common",
    "benchmarks.poke_burst", "benchmarks.poke_to_render", "benchmarks.polling_baseline",
)


def _loaded_after_import(modules: tuple[str, ...]) -> list[str]:
    """Import `modules` in a fresh interpreter; the Qt modules it then holds."""
    code = ("import sys\n"
            f"for name in {modules!r}:\n    __import__(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}\n"
            f"             or any(m == q or m.startswith(q + '.') for q in {QT_MODULES!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)


def test_station_and_view_models_import_without_qt() -> None:
    assert _loaded_after_import(HEADLESS_MODULES) == []


def test_headless_benchmark_clients_import_without_qt() -> None:
    assert _loaded_after_import(HEADLESS_BENCHMARK_CLIENTS) == []


def test_the_probe_sees_qt_when_it_is_imported() -> None:
    """The check above can fail: importing a window module is seen."""
    assert "PySide6" in _loaded_after_import(("wardsync.ui.window_base",))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Built-in defaults only: no policy file, no user file, no WARDSYNC_* variables."""
    return load_settings(environ={}, policy_path=tmp_path / "no-policy.toml",
                         user_path=tmp_path / "no-user.toml")


def test_workstation_config_takes_the_sync_settings_and_the_backend(settings: Settings) -> None:
    polling_only = Backend("https://fhir.example/r4", "ward-7", None, None, demo=False)
    config = workstation_config(settings, polling_only)
    assert (config.fhir_base, config.ward) == ("https://fhir.example/r4", "ward-7")
    assert config.realtime_endpoint is None and config.realtime_token_url is None
    assert config.polling_interval_s == settings["sync.polling_interval_s"]
    assert config.pull_debounce_s == settings["sync.pull_debounce_ms"] / 1000.0
    assert config.vitals_window_h == settings["ui.vitals_window_h"]
    assert config.require_tls == settings["security.require_tls"]


async def test_a_headless_station_syncs_and_switching_user_drops_its_data(
    sandbox: Sandbox, http: httpx.AsyncClient, settings: Settings
) -> None:
    info = sandbox.ready_info()
    services = AppServices(settings, MemoryMetrics(), demo=True)
    services.use_backend(Backend(info["fhir_base"], info["ward"], info["ably_endpoint"],
                                 info["ably_token_url"], demo=True), http=http)
    await services.start_session(schedule=asyncio.get_running_loop().call_soon)
    try:
        ws = services.workstation
        assert ws is not None and services.alerts is not None
        assert services.presence is not None and services.edits is not None
        assert services.user_name  # the demo clinician, signed in through SMART
        space = Workspace(workstation=ws, metrics=services.metrics,
                          user_name=services.user_name, demo=True, ward=info["ward"],
                          alerts=services.alerts)
        census = WardCensus(info["ward"])
        lease = ws.open(census)
        await wait_for(lambda: ws.queries.state(census).status == "ok", what="the census")
        await wait_for(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        assert space.store.of_type("Encounter")
        assert space.new_window_id("ward") == "ward-1" and space.new_window_id("ward") == "ward-2"
        lease.close()
        await services.end_session()
        assert services.workstation is None and services.session is None
        assert not ws.store.of_type("Encounter")  # in-memory clinical data gone with the user
    finally:
        await services.end_session()
    assert not http.is_closed  # the backend's client outlives the session
