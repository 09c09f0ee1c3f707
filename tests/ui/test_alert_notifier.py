"""How an alert reaches someone not looking at a window: the tray/sound/taskbar decision, the
sound fallback without QtMultimedia, the site's mute policy, and the app wiring (demo app:
alert center started with the workstation, demo escalation window, Alerts window)."""

from __future__ import annotations

import asyncio

import pytest
from pytestqt.qtbot import QtBot

from tests.conftest import REPO
from tests.ui.test_alert_ui import garbage_collected_on_the_gui_thread  # noqa: F401 (autouse)
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import Settings
from wardsync.station.services import DEMO_ESCALATION_AFTER_MIN
from wardsync.sync.alerts import ALERT_WRITE_SCOPES
from wardsync.ui.alert_notifier import (
    ALERT_BEEPS,
    ESCALATION_BEEPS,
    AlertSound,
    plan_notification,
)
from wardsync.ui.app import AppController

SOUNDS = REPO / "resources" / "sounds"


def test_a_raised_alert_plays_the_alert_tone_and_names_beds_only() -> None:
    plan = plan_notification(["Bed 04"], [], tray_available=True, sound_enabled=True,
                             muted=False)
    assert plan is not None
    assert (plan.sound, plan.beeps, plan.tray_title) == ("alert", ALERT_BEEPS,
                                                         "Critical lab result")
    assert plan.tray_text == "Bed 04 — open WardSync to acknowledge with read-back."
    assert plan.ask_attention


def test_an_escalation_is_louder_and_says_the_paging_chain_was_asked() -> None:
    plan = plan_notification(["Bed 02"], ["Bed 04", "Bed 04", "Bed 09"], tray_available=True,
                             sound_enabled=True, muted=False)
    assert plan is not None
    assert (plan.sound, plan.beeps) == ("escalation", ESCALATION_BEEPS)
    assert plan.tray_title == "Critical result ESCALATED"
    assert "Bed 04, Bed 09" in plan.tray_text and "paging chain" in plan.tray_text


def test_several_alerts_are_counted_and_an_unknown_bed_is_still_announced() -> None:
    plan = plan_notification(["Bed 01", ""], [], tray_available=True, sound_enabled=True,
                             muted=False)
    assert plan is not None and plan.tray_title == "2 critical lab results"
    plan = plan_notification([""], [], tray_available=True, sound_enabled=True, muted=False)
    assert plan is not None and plan.tray_text.startswith("a patient on the ward")


def test_without_a_tray_the_windows_ask_for_attention_instead() -> None:
    plan = plan_notification(["Bed 04"], [], tray_available=False, sound_enabled=True,
                             muted=False)
    assert plan is not None and plan.tray_title is None and plan.ask_attention
    assert plan.sound == "alert"


@pytest.mark.parametrize(("enabled", "muted"), [(False, False), (True, True), (False, True)])
def test_site_policy_or_a_permitted_mute_silences_the_sound(enabled: bool, muted: bool) -> None:
    plan = plan_notification(["Bed 04"], ["Bed 05"], tray_available=True,
                             sound_enabled=enabled, muted=muted)
    assert plan is not None and plan.sound is None and plan.beeps == 0
    assert plan.tray_title is not None  # silence never hides the alert itself


def test_nothing_new_means_no_notification() -> None:
    assert plan_notification([], [], tray_available=True, sound_enabled=True,
                             muted=False) is None


def test_the_sound_falls_back_to_the_bell_when_qtmultimedia_cannot_load(qtbot: QtBot) -> None:
    try:
        from PySide6.QtMultimedia import QSoundEffect  # noqa: F401
    except ImportError:
        expected = "beep"  # this machine: no libpulse
    else:
        expected = "qtmultimedia"
    assert AlertSound(SOUNDS).backend == expected
    assert AlertSound(None).backend == "beep"
    assert {p.name for p in SOUNDS.glob("*.wav")} == {"critical-alert.wav",
                                                      "critical-escalation.wav"}


async def demo_controller(settings: Settings) -> AppController:
    controller = AppController(settings, MemoryMetrics(), demo=True)
    await controller.start()
    return controller


async def test_the_demo_app_starts_alerts_with_the_workstation_and_opens_one_alerts_window(
    qtbot: QtBot, settings: Settings
) -> None:
    tasks_before = asyncio.all_tasks()
    controller = await demo_controller(settings)
    try:
        services = controller.services
        assert services.alerts is not None and controller.workspace is not None
        assert controller.workspace.alerts is services.alerts
        assert services.alerts.escalation_after_s == DEMO_ESCALATION_AFTER_MIN * 60
        assert services.alerts.clinician.practitioner_ref == "Practitioner/demo-clinician"
        assert controller.notifier is not None and not controller.notifier.sound_mutable
        granted = set(services.session.tokens.scope)  # type: ignore[union-attr]
        assert set(ALERT_WRITE_SCOPES) <= granted
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        assert ward.alert_banner is not None
        ward.alerts_requested.emit()  # the banner's "All alerts"
        alerts = [w for w in controller.windows if w.kind == "alerts"]
        assert len(alerts) == 1
        qtbot.addWidget(alerts[0])
        assert controller.open_alerts_window() is alerts[0]  # brought forward, not duplicated
    finally:
        await controller.aclose()
    await asyncio.sleep(0.1)
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    leftover.discard(asyncio.current_task())
    assert not leftover, f"tasks left running: {leftover}"
