"""Guards the pinned Qt binding against a known defect class: PySide6 6.12.0 dropped a
reference to None/True/False on each void call, so Python 3.11 aborted at interpreter exit
after a few thousand calls (a crash on every app close)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
label = QLabel("x")
for _ in range(5000):
    label.setWordWrap(True)
    app.setQuitOnLastWindowClosed(False)
print("clean exit")
"""


def test_many_void_calls_then_a_clean_interpreter_exit() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "clean exit" in proc.stdout and "Fatal Python error" not in proc.stderr
