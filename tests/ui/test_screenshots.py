"""Screenshots of real windows under Xvfb, saved as test artefacts for people to look at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage

from tests.conftest import REPO
from tests.ui.xvfb import xvfb_env

pytestmark = [pytest.mark.xvfb, pytest.mark.slow]

THEMES = ("light", "high-contrast")
CHART_TABS = ("vitals", "labs", "problems", "medicines", "tasks")


def distinct_colours(image: QImage, step: int = 7) -> int:
    seen = set()
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            seen.add(image.pixel(x, y))
    return len(seen)


@pytest.fixture(scope="module")
def screenshots(xvfb_display: str, artifacts_dir: Path) -> Path:
    """Runs every window once per theme on the Xvfb display (one run for all shots)."""
    out = artifacts_dir / "screenshots"
    proc = subprocess.run([sys.executable, "-m", "tests.ui.screens", str(out)], cwd=REPO,
                          env=xvfb_env(xvfb_display), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_painted_window(path: Path, min_width: int, min_height: int) -> QImage:
    image = QImage(str(path))
    assert not image.isNull(), f"{path.name} missing"
    assert image.width() >= min_width and image.height() >= min_height, path.name
    # A real, painted window: many colours (text, bands, status bar), not a blank frame.
    assert distinct_colours(image) > 20, f"{path.name} looks blank"
    return image


@pytest.mark.parametrize("theme", THEMES)
def test_ward_overview_screenshots_under_xvfb(screenshots: Path, theme: str) -> None:
    assert_painted_window(screenshots / f"ward-overview-{theme}.png", 1200, 700)
    # At the default width too (never-truncated cells are measured in test_ward_columns.py).
    assert_painted_window(screenshots / f"ward-overview-1100-{theme}.png", 1100, 600)


@pytest.mark.parametrize("theme", THEMES)
def test_patient_chart_and_lab_report_screenshots_under_xvfb(screenshots: Path,
                                                             theme: str) -> None:
    tabs = [assert_painted_window(screenshots / f"patient-chart-{tab}-{theme}.png", 1200, 800)
            for tab in CHART_TABS]
    # Each tab shows something different, not the same frame five times.
    assert len({image.bits().tobytes() for image in tabs}) == len(CHART_TABS)
    assert_painted_window(screenshots / f"lab-report-{theme}.png", 1000, 700)


@pytest.mark.parametrize("theme", THEMES)
def test_diagnostics_screenshots_under_xvfb(screenshots: Path, theme: str) -> None:
    assert_painted_window(screenshots / f"diagnostics-{theme}.png", 1200, 800)


def _share_of(image: QImage, colour: str) -> float:
    """Fraction of sampled pixels that are exactly `colour` (#rrggbb)."""
    want = QColor(colour).rgb()
    total = hits = 0
    for y in range(0, image.height(), 3):
        for x in range(0, image.width(), 3):
            total += 1
            hits += image.pixel(x, y) == want
    return hits / total


@pytest.mark.parametrize("theme", THEMES)
def test_alert_banner_dialog_and_alerts_window_screenshots_under_xvfb(screenshots: Path,
                                                                       theme: str) -> None:
    from wardsync.ui.stylesheets import component_stylesheet

    banner_style = component_stylesheet("alert-banner")
    assert "#bf360c" in banner_style and "#7a0000" in banner_style
    open_banner = assert_painted_window(screenshots / f"alert-banner-{theme}.png", 1200, 700)
    escalated = assert_painted_window(screenshots / f"alert-banner-escalated-{theme}.png",
                                      1200, 700)
    # The banner is there, in its colour, whatever the theme; escalation changes it.
    assert _share_of(open_banner, "#bf360c") > 0.01
    assert _share_of(escalated, "#7a0000") > 0.01 and _share_of(escalated, "#bf360c") < 0.001
    for name in ("ack-dialog", "ack-dialog-refused"):
        dialog = assert_painted_window(screenshots / f"{name}-{theme}.png", 500, 350)
        assert _share_of(dialog, "#bf360c") > 0.005  # the red heading band
    assert_painted_window(screenshots / f"alerts-window-{theme}.png", 1200, 450)


@pytest.mark.parametrize("theme", THEMES)
def test_presence_avatars_locked_task_and_conflict_view_screenshots_under_xvfb(
        screenshots: Path, theme: str) -> None:
    from wardsync.ui.conflict_view import OVERLAP_BACKGROUND
    from wardsync.ui.stylesheets import component_stylesheet

    avatars = assert_painted_window(screenshots / f"presence-avatars-{theme}.png", 1200, 800)
    locked = assert_painted_window(screenshots / f"task-locked-{theme}.png", 1200, 800)
    # The avatar discs are there (two people), whatever the theme.
    assert _share_of(avatars, "#1a5fb4") + _share_of(avatars, "#26734d") \
        + _share_of(avatars, "#8f3f71") + _share_of(avatars, "#a3480f") \
        + _share_of(avatars, "#4b4b9c") + _share_of(avatars, "#00646e") \
        + _share_of(avatars, "#6b4423") > 0.0002
    # The lock banner's amber is on the locked task's screen and not on the plain chart.
    assert "#fff4ce" in component_stylesheet("record-editor")
    assert _share_of(locked, "#fff4ce") > 0.003 and _share_of(avatars, "#fff4ce") < 0.0005
    conflict = assert_painted_window(screenshots / f"conflict-view-{theme}.png", 700, 350)
    assert _share_of(conflict, OVERLAP_BACKGROUND) > 0.002  # the "both changed" line
