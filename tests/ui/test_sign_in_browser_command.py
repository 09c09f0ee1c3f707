"""The site's browser command (`auth.browser`) in the app's sign-in: it is run instead of the
system browser, and when it cannot start the address dialog is shown as for a missing
browser."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QUrl
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.ui.sign_in_dialog import BrowserSignIn

URL = "http://127.0.0.1:8080/oauth/authorize?response_type=code&state=s1&scope=openid"


async def test_the_command_opens_the_page_instead_of_the_system_browser(
    qtbot: QtBot, tmp_path: Path
) -> None:
    out = tmp_path / "opened.txt"
    system: list[QUrl] = []
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    browser = BrowserSignIn(opener=lambda url: system.append(url) or True,
                            command=(sys.executable, "-c", script, str(out)))
    await browser(URL)
    await wait_for(lambda: out.exists() and out.read_text() == URL, 10, "the browser command")
    assert system == []
    assert browser.dialog is None


async def test_a_command_that_cannot_start_shows_the_address(qtbot: QtBot, tmp_path: Path
                                                             ) -> None:
    browser = BrowserSignIn(opener=lambda url: True, command=(str(tmp_path / "absent"),))
    await browser(URL)
    assert browser.dialog is not None and browser.dialog.isVisible()
    assert browser.dialog.address.text() == URL
    browser.close()
