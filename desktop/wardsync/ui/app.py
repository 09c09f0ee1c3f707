"""Application bootstrap: settings, the Qt application on the qasync loop, the first window.

`AppController` is the testable core (tests drive it on the pytest-qt application);
`run_app` adds what only a real launch needs: the display check, the Qt event loop, and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from wardsync.core.errors import SignInError
from wardsync.core.metrics import MetricsSink
from wardsync.fhir.errors import FhirError
from wardsync.infra.config_cli import overrides_from_args
from wardsync.infra.metrics import metrics_from_env
from wardsync.infra.paths import resources_dir
from wardsync.infra.sandbox_process import SandboxStartError
from wardsync.infra.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

NO_DISPLAY_HELP = """\
wardsync: no display found (DISPLAY and WAYLAND_DISPLAY are unset), so no window can open.
  On a server or over SSH, run it on a virtual screen:   xvfb-run -a wardsync
  Or without any screen (checks only):                  QT_QPA_PLATFORM=offscreen wardsync
"""


def has_display(environ: dict[str, str] | None = None, platform: str = sys.platform) -> bool:
    env = os.environ if environ is None else environ
    if not platform.startswith("linux"):
        return True  # Windows and macOS always have a window system
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
                or env.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal", "vnc")))


def load_stylesheet(theme: str) -> str:
    path = resources_dir() / "styles" / f"{theme}.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("theme %s not found at %s", theme, path)
        return ""


class AppController:
    """Owns the services and the windows of this process."""

    def __init__(self, settings: Settings, metrics: MetricsSink, *, demo: bool) -> None:
        from PySide6.QtWidgets import QApplication

        from wardsync.ui.services import AppServices

        # Windows close through the controller, so the sync stack and the demo server are
        # stopped before the event loop ends (Qt must not quit on the last window by itself).
        app = QApplication.instance()
        if app is not None:
            app.setQuitOnLastWindowClosed(False)

        self.settings = settings
        self.metrics = metrics
        self.demo = demo
        self.services = AppServices(settings, metrics, demo=demo,
                                    on_signed_out=self._on_session_signed_out)
        self.windows: list = []
        self.workspace = None
        self.notifier = None
        self.signed_out: SignInError | None = None
        self.all_windows_closed = asyncio.Event()

    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        from wardsync.ui.workspace import Workspace

        loop = asyncio.get_running_loop()
        await self.services.start(schedule=loop.call_soon, progress=progress)
        ws = self.services.workstation
        assert ws is not None and self.services.backend is not None
        self.workspace = Workspace(
            workstation=ws, metrics=self.metrics, user_name=self.services.user_name,
            demo=self.services.backend.demo, ward=self.services.backend.ward,
            alerts=self.services.alerts,
        )
        if self.services.alerts is not None:
            from wardsync.ui.alert_notifier import AlertNotifier

            self.notifier = AlertNotifier(
                self.services.alerts, ws.bus, sound_enabled=self.settings["alerts.sound"],
                sound_mutable=self.settings["alerts.sound_mutable"],
                windows=lambda: list(self.windows), open_alerts=self.open_alerts_window,
                sounds_dir=resources_dir() / "sounds",
            )

    def open_ward_overview(self):
        from wardsync.ui.ward_overview import WardOverviewWindow

        assert self.workspace is not None
        return self._show(WardOverviewWindow(self.workspace))

    def open_alerts_window(self):
        """The Alerts window (one per app: an open one is brought to the front)."""
        from wardsync.ui.alerts_window import AlertsWindow

        assert self.workspace is not None
        for window in self.windows:
            if window.kind == AlertsWindow.kind:
                window.showNormal()
                window.raise_()
                window.activateWindow()
                return window
        return self._show(AlertsWindow(self.workspace, notifier=self.notifier))

    def _show(self, window):
        self.windows.append(window)
        window.closed.connect(self._on_window_closed)
        window.alerts_requested.connect(self.open_alerts_window)
        window.show()
        return window

    def _on_window_closed(self, window_id: str) -> None:
        self.windows = [w for w in self.windows if w.window_id != window_id]
        if not self.windows:
            self.all_windows_closed.set()

    def _on_session_signed_out(self, error: SignInError) -> None:
        self.signed_out = error
        log.warning("session ended: %s", error.oauth_error or "sign-in required")

    async def aclose(self) -> None:
        for window in list(self.windows):
            window.close()
        self.windows.clear()
        if self.notifier is not None:
            self.notifier.close()
        await self.services.aclose()


def _settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(argv_overrides=overrides_from_args(args))


def run_app(args: argparse.Namespace) -> int:
    """`wardsync` with no sub-command: the desktop application."""
    if not has_display():
        sys.stderr.write(NO_DISPLAY_HELP)
        return 2
    try:
        settings = _settings_from(args)
    except ConfigError as exc:
        sys.stderr.write(f"wardsync: configuration error: {exc}\n")
        return 2
    logging.basicConfig(level=settings["logging.level"], stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "ably", "websockets"):
        # Per-request lines say nothing a clinician or IT needs; errors still show.
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    for warning in settings.warnings:
        log.warning("settings: %s", warning)

    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("WardSync")
    app.setOrganizationName("WardSync")
    app.setStyleSheet(load_stylesheet(settings["ui.theme"]))
    metrics = metrics_from_env(
        {"WARDSYNC_METRICS_LOG": str(settings["metrics.log"])} if settings["metrics.log"]
        else None)
    demo = bool(args.demo or not settings["fhir.base_url"])
    controller = AppController(settings, metrics, demo=demo)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    exit_code = 0

    def request_quit(signum: int, frame: object) -> None:
        # SIGTERM (session logout, service stop) and Ctrl-C close the app properly: the
        # sync stack disconnects and the demo server stops.
        loop.call_soon_threadsafe(controller.all_windows_closed.set)

    signal.signal(signal.SIGTERM, request_quit)
    signal.signal(signal.SIGINT, request_quit)
    # Python runs signal handlers only when it gets control; a light timer makes sure it
    # does even while Qt is idle.
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)

    async def main() -> None:
        nonlocal exit_code
        try:
            await controller.start()
        except (SandboxStartError, SignInError, FhirError, OSError) as exc:
            message = getattr(exc, "user_message", None) or str(exc)
            QMessageBox.critical(None, "WardSync could not start", message)
            exit_code = 1
            await controller.aclose()
            return
        controller.open_ward_overview()
        await controller.all_windows_closed.wait()
        await controller.aclose()

    with loop:
        loop.run_until_complete(main())
    return exit_code
