"""The line above a panel that says it is loading, or why it is empty.

A fetch that answers within `LOADING_HINT_AFTER_MS` shows nothing (no flicker); a slower one
shows "Loading lab results…"; a failure shows what failed and that it is being retried
("Lab results could not be loaded: server not reachable — retrying"), never an empty panel
that looks like "no results". `QueryStatusLine` reads this from the query states of the keys
its panel depends on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QWidget

from wardsync.core.queries import QueryKey
from wardsync.sync.pull import QueryCache

LOADING_HINT_AFTER_MS = 300  # a fetch slower than this shows a loading message


class PanelMessage(QLabel):
    """An info or error line (styled by the `severity` property in the .qss themes)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panelMessage")
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.severity = ""
        self.hide()

    def show_message(self, text: str, severity: str) -> None:
        """Show `text` as "info" or "error" (screen readers get it as the accessible name)."""
        if text == self.text() and severity == self.severity and not self.isHidden():
            return
        self.severity = severity
        self.setText(text)
        self.setAccessibleName(text)
        self.setProperty("severity", severity)
        self.style().unpolish(self)
        self.style().polish(self)
        self.show()

    def clear_message(self) -> None:
        self.severity = ""
        self.setText("")
        self.hide()

    @property
    def shown_text(self) -> str:
        """The message on screen, "" when hidden."""
        return "" if self.isHidden() else self.text()


class LoadingDelay:
    """Becomes `due` `LOADING_HINT_AFTER_MS` after `start`, then calls `on_due` once."""

    def __init__(self, parent: QWidget, on_due: Callable[[], None]) -> None:
        self._on_due = on_due
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.due = False

    def start(self, after_ms: int = LOADING_HINT_AFTER_MS) -> None:
        self.due = False
        self._timer.start(after_ms)

    def stop(self) -> None:
        self._timer.stop()

    def _on_timer_timeout(self) -> None:
        self.due = True
        self._on_due()


class QueryStatusLine(PanelMessage):
    """The loading / error line of a panel fed by `keys` (its window calls `refresh` when
    their query states or its data change).

    `what` names the panel's content for sentences ("Lab results"); `has_data` says whether
    the panel shows anything yet (an error above held data says it may be out of date).
    """

    def __init__(self, queries: Callable[[], QueryCache], what: str,
                 keys: Sequence[QueryKey], has_data: Callable[[], bool],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._queries = queries
        self.what = what
        self.keys = tuple(keys)
        self._has_data = has_data
        self._delay = LoadingDelay(self, self.refresh)
        self._delay.start()

    def statuses(self) -> list[tuple[str, str]]:
        """(status, user message) of each open key of this panel."""
        out: list[tuple[str, str]] = []
        cache = self._queries()
        for key in self.keys:
            try:
                st = cache.state(key)
            except KeyError:
                continue  # not opened (yet) or already released
            out.append((st.status, st.user_message))
        return out

    def refresh(self) -> None:
        statuses = self.statuses()
        errors = [msg for status, msg in statuses if status == "error"]
        has_data = self._has_data()
        if errors:
            text = f"{self.what} could not be loaded: {errors[0] or 'error'} — retrying"
            if has_data:
                text += " (showing what was loaded before, may be out of date)"
            self.show_message(text, "error")
        elif any(status == "loading" for status, _ in statuses) and not has_data:
            if self._delay.due:
                self.show_message(f"Loading {self.what.lower()}…", "info")
        else:
            self.clear_message()
