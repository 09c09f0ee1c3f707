"""Sign-in in the system browser (RFC 8252 §6), with a fallback when none can be opened.

Native apps sign in through the user's browser, never an embedded web view (RFC 8252 §8.12).
On a workstation where no browser can be launched (a locked-down kiosk profile, a missing
default handler) WardSync shows the sign-in address in a dialog to open in any browser on this
workstation — the loopback redirect (§7.3) still completes the sign-in — with a button to copy
it and a plain explanation. A site may name the browser program itself (`auth.browser`,
`auth/browser_command.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wardsync.auth.browser_command import open_with_command

log = logging.getLogger(__name__)


class SignInLinkDialog(QDialog):
    """Shows the sign-in address when no browser could be opened automatically."""

    def __init__(self, url: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in to WardSync")
        self.setObjectName("signInLinkDialog")
        layout = QVBoxLayout(self)
        text = QLabel(
            "WardSync could not open a web browser on this workstation. Open the address "
            "below in a browser on this workstation and sign in there; WardSync continues "
            "by itself when you have signed in.", self)
        text.setWordWrap(True)
        self.address = QLineEdit(url, self)
        self.address.setReadOnly(True)
        self.address.setAccessibleName("Sign-in address")
        self.copy_button = QPushButton("Copy address", self)
        self.copy_button.setAccessibleName("Copy the sign-in address")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(text)
        layout.addWidget(self.address)
        layout.addWidget(self.copy_button)
        layout.addWidget(buttons)
        self.resize(640, 200)

    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.address.text())


class BrowserSignIn:
    """An `open_url` for `auth.login.sign_in`: the site's browser command (`auth.browser`)
    when one is set, else the system browser; the address dialog when neither opens."""

    def __init__(self, opener: Callable[[QUrl], bool] = QDesktopServices.openUrl,
                 command: Sequence[str] = ()) -> None:
        self._opener = opener
        self._command = tuple(command)
        self.dialog: SignInLinkDialog | None = None

    async def __call__(self, url: str) -> None:
        if self._command:
            opened = await asyncio.to_thread(open_with_command, self._command, url)
        else:
            opened = self._opener(QUrl(url))
        if opened:
            return
        self.close()
        log.warning("no web browser could be opened: showing the sign-in address")
        self.dialog = SignInLinkDialog(url)
        self.dialog.show()

    def close(self) -> None:
        """Sign-in finished (or was abandoned): the address dialog is no longer needed."""
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
