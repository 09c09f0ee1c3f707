"""Screenshots of real windows under Xvfb, saved as test artefacts for people to look at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

from tests.conftest import REPO
from tests.ui.xvfb import xvfb_env


def distinct_colours(image: QImage, step: int = 7) -> int:
    seen = set()
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            seen.add(image.pixel(x, y))
    return len(seen)


def test_ward_overview_screenshots_under_xvfb(xvfb_display: str, artifacts_dir: Path) -> None:
    out = artifacts_dir / "screenshots"
    proc = subprocess.run([sys.executable, "-m", "tests.ui.screens", str(out)], cwd=REPO,
                          env=xvfb_env(xvfb_display), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for theme in ("light", "high-contrast"):
        image = QImage(str(out / f"ward-overview-{theme}.png"))
        assert not image.isNull()
        assert image.width() >= 1200 and image.height() >= 700
        # A real, painted window: many colours (text, bands, status bar), not a blank frame.
        assert distinct_colours(image) > 20
