"""Getting a clinician's attention when an alert is raised or escalates: tray, sound, taskbar.

One `AlertNotifier` per app (windows have their banners; this is what reaches someone who is
not looking at a window). What to do is decided by a pure function, `plan_notification`, so
the decision is tested on machines without a tray or a sound device:

- Tray: a `QSystemTrayIcon` message when the desktop has a system tray. It names the bed
  only: desktop notifications can appear on a locked screen and stay in the notification
  history, so no name, MRN or value goes there. Clicking it opens the Alerts window. Without
  a tray (offscreen, bare X servers, some kiosks) every window asks for attention instead
  (`QApplication.alert`: taskbar flash / urgency hint), which is also done with a tray.
- Sound: on by default and only a site can turn it off (`alerts.sound`); a user may mute it
  from the Alerts window only if the site allows it (`alerts.sound_mutable`, off by default).
  An escalation is louder: the escalation tone at full volume, or several bells. Playback uses
  QtMultimedia's `QSoundEffect` with resources/sounds/*.wav when that module loads; it needs
  libpulse on Linux, which this machine lacks, so the fallback is `QApplication.beep()` (the
  platform bell), repeated `ESCALATION_BEEPS` times for an escalation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, QUrl
from PySide6.QtWidgets import QApplication, QStyle, QSystemTrayIcon, QWidget

from wardsync.core.alerts import AlertChanges, AlertsChanged
from wardsync.sync.alerts import AlertCenter

log = logging.getLogger(__name__)

ALERT_BEEPS = 1
ESCALATION_BEEPS = 3
BEEP_SPACING_MS = 350
TRAY_MESSAGE_MS = 15_000
ALERT_SOUND = "critical-alert.wav"
ESCALATION_SOUND = "critical-escalation.wav"


@dataclass(frozen=True, slots=True)
class NotificationPlan:
    """What to do for one batch of alert changes."""

    sound: str | None  # "alert" | "escalation" | None (silent)
    beeps: int  # bells to ring when no sound file can be played
    tray_title: str | None  # None: no tray message
    tray_text: str
    ask_attention: bool  # flash the windows in the taskbar


def _beds(beds: Iterable[str]) -> str:
    named = [b for b in dict.fromkeys(beds) if b]
    return ", ".join(named) if named else "a patient on the ward"


def plan_notification(
    raised_beds: list[str], escalated_beds: list[str], *, tray_available: bool,
    sound_enabled: bool, muted: bool,
) -> NotificationPlan | None:
    """Decide how to notify raised / escalated alerts (beds only: never names or values)."""
    if not raised_beds and not escalated_beds:
        return None
    escalation = bool(escalated_beds)
    audible = sound_enabled and not muted
    sound = ("escalation" if escalation else "alert") if audible else None
    beeps = (ESCALATION_BEEPS if escalation else ALERT_BEEPS) if audible else 0
    if escalation:
        title = "Critical result ESCALATED"
        text = (f"Not acknowledged in time — {_beds(escalated_beds)}. The paging chain has "
                "been asked. Open WardSync to acknowledge.")
    else:
        count = len(raised_beds)
        title = "Critical lab result" if count == 1 else f"{count} critical lab results"
        text = f"{_beds(raised_beds)} — open WardSync to acknowledge with read-back."
    return NotificationPlan(sound, beeps, title if tray_available else None, text, True)


class AlertSound:
    """Plays the alert tones, with the platform bell when QtMultimedia is unavailable."""

    def __init__(self, sounds_dir: Path | None, parent: QObject | None = None) -> None:
        self.backend = "beep"
        self.played: list[str] = []  # what was played, in order (tests and diagnostics)
        self._effects: dict[str, Any] = {}
        self._pending_beeps = 0
        self._beeps = QTimer(parent)
        self._beeps.setInterval(BEEP_SPACING_MS)
        self._beeps.timeout.connect(self._on_beeps_timeout)
        if sounds_dir is not None:
            self._load_effects(sounds_dir, parent)

    def _load_effects(self, sounds_dir: Path, parent: QObject | None) -> None:
        try:
            from PySide6.QtMultimedia import QSoundEffect
        except ImportError as exc:  # Linux without libpulse: the bell will do
            log.info("alert sounds use the system bell (QtMultimedia unavailable: %s)", exc)
            return
        for kind, name, volume in (("alert", ALERT_SOUND, 0.8), ("escalation",
                                                                 ESCALATION_SOUND, 1.0)):
            path = sounds_dir / name
            if not path.is_file():
                log.warning("alert sound %s is missing; using the system bell", path)
                self._effects.clear()
                return
            effect = QSoundEffect(parent)
            effect.setSource(QUrl.fromLocalFile(str(path)))
            effect.setVolume(volume)
            self._effects[kind] = effect
        self.backend = "qtmultimedia"

    def play(self, kind: str, beeps: int) -> None:
        self.played.append(kind)
        effect = self._effects.get(kind)
        if effect is not None:
            effect.play()
            return
        if beeps <= 0:
            return
        QApplication.beep()
        self._pending_beeps = beeps - 1
        if self._pending_beeps > 0:
            self._beeps.start()

    def _on_beeps_timeout(self) -> None:
        if self._pending_beeps <= 0:
            self._beeps.stop()
            return
        QApplication.beep()
        self._pending_beeps -= 1

    def stop(self) -> None:
        self._beeps.stop()
        self._pending_beeps = 0


class AlertNotifier(QObject):
    """Tray message, sound and taskbar attention for alerts raised or escalated."""

    def __init__(
        self, alerts: AlertCenter, bus: Any, *, sound_enabled: bool, sound_mutable: bool,
        windows: Callable[[], list[QWidget]], open_alerts: Callable[[], object] | None = None,
        sounds_dir: Path | None = None, tray_available: bool | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._alerts = alerts
        self.sound_enabled = sound_enabled
        self.sound_mutable = sound_mutable
        self.muted = False
        self._windows = windows
        self._open_alerts = open_alerts
        self.tray_available = (QSystemTrayIcon.isSystemTrayAvailable()
                               if tray_available is None else tray_available)
        self.sound = AlertSound(sounds_dir, self)
        self.plans: list[NotificationPlan] = []  # executed plans (tests, diagnostics)
        self.tray: QSystemTrayIcon | None = None
        if self.tray_available:
            self.tray = QSystemTrayIcon(self._icon(), self)
            self.tray.setToolTip("WardSync — critical result alerts")
            self.tray.messageClicked.connect(self._on_tray_message_clicked)
            self.tray.show()
        else:
            log.info("no system tray: alerts use window banners, the taskbar and sound")
        self._sub = bus.subscribe(AlertsChanged, self._on_bus_alerts_changed)

    @staticmethod
    def _icon() -> Any:
        app = QApplication.instance()
        icon = app.windowIcon() if isinstance(app, QApplication) else None
        if icon is None or icon.isNull():
            icon = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        return icon

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute the sound; muting needs the site's permission (sound_mutable)."""
        if muted and not self.sound_mutable:
            raise PermissionError("the site does not allow muting critical alert sounds")
        self.muted = muted

    def _beds(self, ids: Iterable[Any]) -> list[str]:
        beds = []
        for alert_id in ids:
            record = self._alerts.get(alert_id)
            if record is not None and record.active:
                beds.append(self._alerts.patient(record.patient_id).bed)
        return beds

    def notify(self, changes: AlertChanges) -> NotificationPlan | None:
        """Act on one batch of changes; returns what was done (None: nothing to notify)."""
        raised = self._beds(changes.raised)
        escalated = self._beds(changes.escalated)
        if not raised and not escalated:
            return None
        plan = plan_notification(raised, escalated, tray_available=self.tray is not None,
                                 sound_enabled=self.sound_enabled, muted=self.muted)
        if plan is None:
            return None
        self.plans.append(plan)
        if plan.sound is not None:
            self.sound.play(plan.sound, plan.beeps)
        if plan.tray_title is not None and self.tray is not None:
            icon = (QSystemTrayIcon.MessageIcon.Critical if changes.escalated
                    else QSystemTrayIcon.MessageIcon.Warning)
            self.tray.showMessage(plan.tray_title, plan.tray_text, icon, TRAY_MESSAGE_MS)
        if plan.ask_attention:
            for window in self._windows():
                QApplication.alert(window, 0)
        return plan

    def _on_bus_alerts_changed(self, events: list[AlertsChanged]) -> None:
        changes = AlertChanges()
        for event in events:
            changes += event.changes
        self.notify(changes)

    def _on_tray_message_clicked(self) -> None:
        if self._open_alerts is not None:
            self._open_alerts()

    def close(self) -> None:
        """Stop listening and remove the tray icon (app shutdown, user switch)."""
        self._sub.close()
        self.sound.stop()
        if self.tray is not None:
            self.tray.hide()
