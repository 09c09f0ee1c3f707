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
from typing import Any

from wardsync.core.errors import SignInError
from wardsync.core.metrics import MetricsSink
from wardsync.core.tasks import TaskOwner
from wardsync.fhir.errors import FhirError
from wardsync.infra.config_cli import overrides_from_args
from wardsync.infra.metrics import metrics_from_env
from wardsync.infra.paths import resources_dir
from wardsync.infra.sandbox_process import SandboxStartError
from wardsync.infra.settings import ConfigError, Settings, load_settings
from wardsync.ui.stylesheets import load_stylesheet

log = logging.getLogger(__name__)

FREEZE_AFTER_START_S = 15.0  # by then the first windows have loaded the ward

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


class AppController:
    """Owns the services, the windows, the idle lock and the user session of this process."""

    def __init__(self, settings: Settings, metrics: MetricsSink, *, demo: bool,
                 layouts: Any = None) -> None:
        from PySide6.QtWidgets import QApplication

        from wardsync.station.services import AppServices
        from wardsync.sync.activity import ActivityRecorder, Tee
        from wardsync.ui.idle_lock import IdleMonitor, ScreenLock

        # Windows close through the controller, so the sync stack and the demo server are
        # stopped before the event loop ends (Qt must not quit on the last window by itself).
        app = QApplication.instance()
        if isinstance(app, QApplication):
            app.setQuitOnLastWindowClosed(False)

        self.settings = settings
        self.activity = ActivityRecorder()  # what the Diagnostics window shows
        self.metrics: MetricsSink = Tee(metrics, self.activity)
        self.demo = demo
        self.layouts = layouts
        from wardsync.ui.sign_in_dialog import BrowserSignIn

        self.browser = BrowserSignIn(command=settings["auth.browser"])
        self.services = AppServices(settings, self.metrics, demo=demo, open_url=self.browser,
                                    on_signed_out=self._on_session_signed_out)
        self.windows: list = []
        self.workspace: Any = None
        self.notifier: Any = None
        self.signed_out: SignInError | None = None
        self.all_windows_closed = asyncio.Event()
        self.idle = IdleMonitor(settings["security.idle_lock_min"] * 60.0)
        self.idle.idle_timed_out.connect(self.lock)
        self.screen_lock = ScreenLock()
        self.screen_lock.unlock_requested.connect(self._on_screen_lock_unlock_requested)
        self._tasks = TaskOwner("app", logger=log)
        self._switching = False
        self.unlock_error = ""

    # ------------------------------------------------------------------ lifetime
    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.services.start(schedule=loop.call_soon, progress=progress)
        finally:
            self.browser.close()
        self._make_workspace()
        self.idle.start()

    def _make_workspace(self) -> None:
        from wardsync.station.workspace import Workspace

        ws = self.services.workstation
        assert ws is not None and self.services.backend is not None
        self.workspace = Workspace(
            workstation=ws, metrics=self.metrics, user_name=self.services.user_name,
            demo=self.services.backend.demo, ward=self.services.backend.ward,
            alerts=self.services.alerts, presence=self.services.presence,
            edits=self.services.edits,
        )
        if self.services.alerts is not None:
            from wardsync.ui.alert_notifier import AlertNotifier

            self.notifier = AlertNotifier(
                self.services.alerts, ws.bus, sound_enabled=self.settings["alerts.sound"],
                sound_mutable=self.settings["alerts.sound_mutable"],
                windows=lambda: list(self.windows), open_alerts=self.open_alerts_window,
                sounds_dir=resources_dir() / "sounds",
            )

    async def start_unless_quit(self, progress: Callable[[str], None] | None = None) -> bool:
        """`start`, unless a quit is requested first (SIGTERM while the demo server starts or
        while the sign-in waits for the browser): the start is then cancelled, which closes
        the sign-in listener and its address dialog, and False is returned. The start's own
        errors propagate; nothing is left running either way (docs/style.md §5)."""
        starting = asyncio.ensure_future(self.start(progress))
        quitting = asyncio.ensure_future(self.all_windows_closed.wait())
        try:
            await asyncio.wait((starting, quitting), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (starting, quitting):
                task.cancel()
            await asyncio.wait((starting, quitting))
        if starting.cancelled():
            log.info("quit requested while starting: start abandoned")
            return False
        starting.result()  # the start's error, if it failed
        return True

    def request_quit(self) -> None:
        """Quit promptly whatever the app is doing (SIGTERM from a session logout or an
        upgrade, Ctrl-C): a start or sign-in in progress is cancelled, open dialogs (an error
        message, a choice of user) are dismissed, then everything closes as on Quit, so
        layouts are kept and the sync stack and demo server stop properly."""
        from PySide6.QtWidgets import QApplication, QDialog

        self.all_windows_closed.set()
        self.browser.close()
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QDialog) and widget.isVisible():
                widget.reject()  # ends a modal dialog's own event loop too

    async def aclose(self) -> None:
        self.idle.stop()
        if self.layouts is not None:
            self.layouts.close()  # remember the layout before the windows go
        self._switching = True  # closing everything is not "the user closed the last window"
        for window in list(self.windows):
            window.close()
        self.windows.clear()
        if self.notifier is not None:
            self.notifier.close()
            self.notifier = None
        await self._tasks.cancel_all()
        await self.services.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    # ------------------------------------------------------------------ windows
    def open_ward_overview(self):
        from wardsync.ui.ward_overview import WardOverviewWindow

        assert self.workspace is not None
        window = self._show(WardOverviewWindow.in_workspace(self.workspace))
        if self.services.keyring_message:
            # No OS keyring: tokens are for this session only; say so once, in words.
            window.statusBar().showMessage(self.services.keyring_message, 60000)
        return window

    def open_patient_chart(self, patient_id: str):
        """The chart of this patient (an open one is brought to the front)."""
        from wardsync.ui.patient_chart import PatientChartWindow

        existing = self._find("chart", patient_id=patient_id)
        if existing is not None:
            return self._raise(existing)
        self._audit(patient_id)
        return self._show(PatientChartWindow.in_workspace(self.workspace, patient_id))

    def open_lab_report(self, report_id: str, patient_id: str):
        from wardsync.ui.lab_report import LabReportWindow

        existing = self._find("report", report_id=report_id)
        if existing is not None:
            return self._raise(existing)
        self._audit(patient_id)
        return self._show(LabReportWindow.in_workspace(self.workspace, report_id, patient_id))

    def open_alerts_window(self):
        """The Alerts window (one per app: an open one is brought to the front)."""
        from wardsync.ui.alerts_window import AlertsWindow

        assert self.workspace is not None
        existing = self._find(AlertsWindow.kind)
        if existing is not None:
            return self._raise(existing)
        return self._show(AlertsWindow.in_workspace(self.workspace, notifier=self.notifier))

    def open_diagnostics(self):
        from wardsync.ui.diagnostics import DiagnosticsWindow

        existing = self._find(DiagnosticsWindow.kind)
        if existing is not None:
            return self._raise(existing)
        return self._show(DiagnosticsWindow(self.workspace, self.activity))

    PANELS = ("ward", "alerts", "diagnostics")

    def open_panel(self, panel: str):
        """A window by kind (a second launch's request, a restored layout)."""
        openers = {"ward": self.open_ward_overview, "alerts": self.open_alerts_window,
                   "diagnostics": self.open_diagnostics}
        if panel not in openers:
            raise ValueError(f"unknown panel {panel!r}")
        return openers[panel]()

    def _find(self, kind: str, **attrs: str):
        for window in self.windows:
            if window.kind == kind and all(getattr(window, k, None) == v
                                           for k, v in attrs.items()):
                return window
        return None

    @staticmethod
    def _raise(window):
        window.showNormal()
        window.raise_()
        window.activateWindow()
        return window

    def _audit(self, patient_id: str) -> None:
        if self.services.audit is not None:
            self.services.audit.record_access(patient_id)

    def _show(self, window):
        self.windows.append(window)
        window.closed.connect(self._on_window_closed)
        window.alerts_requested.connect(self.open_alerts_window)
        if hasattr(window, "patient_requested"):
            window.patient_requested.connect(self.open_patient_chart)
        if hasattr(window, "report_requested"):
            window.report_requested.connect(self.open_lab_report)
        if hasattr(window, "patient_selected"):
            window.patient_selected.connect(
                lambda pid, source=window: self.set_patient_context(pid, source))
        self._install_menu(window)
        if self.layouts is not None:
            self.layouts.adopt(window)
        window.show()
        if self.screen_lock.locked:
            self.screen_lock.lock([window], self.services.user_name, self.screen_lock.message)
        return window

    def _install_menu(self, window) -> None:
        """The same menu and shortcuts in every window (keyboard first: no mouse needed)."""
        menu = window.menuBar().addMenu("&WardSync")
        entries = (
            ("New &ward overview", "Ctrl+Shift+N", self.open_ward_overview),
            ("&Alerts", "Ctrl+Shift+A", self.open_alerts_window),
            ("&Diagnostics", "Ctrl+Shift+D", self.open_diagnostics),
            (None, None, None),
            ("&Lock now", "Ctrl+L", self.lock),
            ("&Switch user…", "Ctrl+Shift+U", self._on_menu_switch_user),
            (None, None, None),
            ("&Quit WardSync", "Ctrl+Q", self.quit),
        )
        for text, shortcut, slot in entries:
            if text is None:
                menu.addSeparator()
                continue
            action = menu.addAction(text)
            action.setShortcut(shortcut)
            action.triggered.connect(lambda _checked=False, f=slot: f())
        if window.kind == "chart":
            # FHIRcast-style shared context, per window: a following chart switches to the
            # patient selected on the ward overview.
            follow = window.menuBar().addMenu("&Patient").addAction("&Follow ward selection")
            follow.setCheckable(True)
            follow.setShortcut("Ctrl+Shift+F")
            window.follow_action = follow

    def set_patient_context(self, patient_id: str, source: Any = None) -> None:
        """The selected patient changed: following charts switch, unless an edit is unsaved."""
        for window in list(self.windows):
            follow = getattr(window, "follow_action", None)
            if window is source or follow is None or not follow.isChecked():
                continue
            if window.patient_id == patient_id:
                continue
            busy = unsaved_edit_in(window)
            if busy:
                window.statusBar().showMessage(
                    f"Not following the ward selection: you have an unsaved edit ({busy}). "
                    "Save or discard it first.", 15000)
                continue
            geometry = window.saveGeometry()
            window.close()
            new = self.open_patient_chart(patient_id)
            new.restoreGeometry(geometry)
            new.follow_action.setChecked(True)

    def _on_window_closed(self, window_id: str) -> None:
        closed = [w for w in self.windows if w.window_id == window_id]
        self.windows = [w for w in self.windows if w.window_id != window_id]
        for window in closed:
            self.screen_lock.forget(window)
        if not self.windows and not self._switching:
            self.all_windows_closed.set()

    def quit(self) -> None:
        self.all_windows_closed.set()

    # ------------------------------------------------------------------ shared workstation
    def lock(self, message: str | None = None) -> None:
        """Hide patient data in every window (idle timeout, "Lock now", a session that ended)."""
        from PySide6.QtWidgets import QApplication, QDialog

        for widget in QApplication.topLevelWidgets():
            # An open acknowledgement or edit dialog shows patient data too.
            if isinstance(widget, QDialog) and widget.isVisible():
                widget.reject()
        self.screen_lock.lock(list(self.windows), self.services.user_name, message)

    def _on_screen_lock_unlock_requested(self) -> None:
        self._spawn(self.unlock())

    async def unlock(self, *, username: str | None = None) -> bool:
        """Sign in again: the same user gets the windows back; another user is a user switch.

        `username` picks the demo account (demo mode); in hospital mode the browser decides.
        """
        previous = self.services.session.tokens.fhir_user if self.services.session else None
        try:
            session = await self.services.sign_in(
                username=username or self._demo_username_of(previous), interactive=True)
        except (SignInError, FhirError, OSError) as exc:
            self.unlock_error = getattr(exc, "user_message", "") or str(exc)
            log.warning("unlock failed: %s", type(exc).__name__)
            return False
        finally:
            self.browser.close()
        self.unlock_error = ""
        if previous is not None and session.tokens.fhir_user == previous:
            assert self.services.session is not None
            self.services.session.replace(session.tokens)
            await session.aclose()
            self.signed_out = None
            self.screen_lock.unlock()
            self.idle.note_input()
            if self.services.workstation is not None:
                self.services.workstation.catch_up()  # pulls refused meanwhile run now
            return True
        await self._switch_to(session)
        return True

    def _demo_username_of(self, fhir_user: str | None) -> str:
        from wardsync.station.services import DEMO_USER

        for user in self.services.demo_users:
            name = user.get("username", "")
            if fhir_user and fhir_user.endswith(name.replace("demo.", "demo-")):
                return name
        return DEMO_USER

    def _on_menu_switch_user(self) -> None:
        username = None
        if self.demo and self.services.demo_users:
            from PySide6.QtWidgets import QInputDialog

            names = [u["username"] for u in self.services.demo_users]
            username, ok = QInputDialog.getItem(None, "Switch user", "Sign in as:", names, 0,
                                                False)
            if not ok:
                return
        self._spawn(self.switch_user(username=username))

    async def switch_user(self, *, username: str | None = None) -> None:
        """Clear everything of the current user, then sign in anew."""
        try:
            session = await self.services.sign_in(
                username=username or self._demo_username_of(None), interactive=True)
        finally:
            self.browser.close()
        await self._switch_to(session)

    async def _switch_to(self, session: Any) -> None:
        self._switching = True
        try:
            for window in list(self.windows):
                window.close()  # releases queries, presence and subscriptions
            self.windows.clear()
            self.screen_lock.unlock()
            if self.notifier is not None:
                self.notifier.close()
                self.notifier = None
            await self.services.end_session()
            loop = asyncio.get_running_loop()
            await self.services.start_session(schedule=loop.call_soon, session=session)
            self._make_workspace()
            self.open_ward_overview()
            self.idle.note_input()
        finally:
            self._switching = False

    SESSION_ENDED_TEXT = (
        "Your sign-in has ended (it expired or was revoked). Patient information is hidden "
        "until you sign in again. Nothing is lost: unsaved edits are kept and every window "
        "comes back as it was.")

    def _on_session_signed_out(self, error: SignInError) -> None:
        """The server refused the refresh token: ask for a sign-in, keep everything else."""
        self.signed_out = error
        log.warning("session ended: %s", error.oauth_error or "sign-in required")
        if self.windows and not self.screen_lock.locked:
            self.lock(self.SESSION_ENDED_TEXT)


def unsaved_edit_in(window: Any) -> str:
    """What is being edited in `window` and not yet saved ("" when nothing is)."""
    from wardsync.ui.chart_widgets.record_editor import RecordEditor

    for editor in window.findChildren(RecordEditor):
        if editor.mode != "view":
            return f"{editor.what} {editor.mode}"
    return ""


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

    from wardsync.ui.gc_guard import MainThreadGarbageCollector
    from wardsync.ui.layouts import LayoutKeeper
    from wardsync.ui.single_instance import forward_or_listen, session_instance

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName("WardSync")
    app.setOrganizationName("WardSync")
    app.setStyleSheet(load_stylesheet(settings["ui.theme"]))
    # A second launch opens a window in the running process: one realtime connection per
    # workstation, whatever is clicked.
    instance = session_instance()  # None: no private place for the socket, run standalone
    pending_panels: list[str] = []
    controller_ref: list[AppController] = []

    def on_second_launch(message: dict) -> None:
        panel = str(message.get("panel", "ward"))
        if panel not in AppController.PANELS:
            raise ValueError(f"unknown panel {panel!r}")
        if controller_ref and controller_ref[0].workspace is not None:
            controller_ref[0].open_panel(panel)
        else:
            pending_panels.append(panel)  # still starting: open it when ready

    if instance is not None and forward_or_listen(instance, {"cmd": "open", "panel": "ward"},
                                                  on_second_launch):
        ok = bool((instance.last_reply or {}).get("ok", True))
        instance.close()
        return 0 if ok else 1
    collector = MainThreadGarbageCollector(app)
    collector.start()
    metrics = metrics_from_env(
        {"WARDSYNC_METRICS_LOG": str(settings["metrics.log"])} if settings["metrics.log"]
        else None)
    demo = bool(args.demo or not settings["fhir.base_url"])
    controller = AppController(settings, metrics, demo=demo, layouts=LayoutKeeper())
    controller_ref.append(controller)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    exit_code = 0

    def request_quit(signum: int, frame: object) -> None:
        # SIGTERM (session logout, service stop) and Ctrl-C close the app properly in every
        # state, including while it waits for sign-in: the sync stack disconnects and the
        # demo server stops.
        loop.call_soon_threadsafe(controller.request_quit)

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
            started = await controller.start_unless_quit()
        except (SandboxStartError, SignInError, FhirError, OSError) as exc:
            message = getattr(exc, "user_message", None) or str(exc)
            log.error("could not start (%s)", type(exc).__name__)
            if not controller.all_windows_closed.is_set():
                # Modal; a quit request dismisses it (`AppController.request_quit`).
                QMessageBox.critical(None, "WardSync could not start", message)
            exit_code = 1
            await controller.aclose()
            return
        if not started:
            await controller.aclose()
            return
        restored = controller.layouts.restore({
            "ward": controller.open_ward_overview, "alerts": controller.open_alerts_window,
            "diagnostics": controller.open_diagnostics})
        if not any(getattr(w, "kind", "") == "ward" for w in restored):
            controller.open_ward_overview()
        for panel in pending_panels:
            controller.open_panel(panel)
        loop.call_later(FREEZE_AFTER_START_S, collector.freeze_startup_objects)
        await controller.all_windows_closed.wait()
        await controller.aclose()

    try:
        with loop:
            loop.run_until_complete(main())
    finally:
        if instance is not None:
            instance.close()
        collector.stop()
    return exit_code
