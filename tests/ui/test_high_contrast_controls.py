"""High-contrast theme: a checkbox's box is visible (checked and not), and a disabled button
does not look like an enabled one (rendered with the shipped stylesheet, pixels sampled)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QPushButton,
    QStyle,
    QStyleOptionButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from wardsync.ui.stylesheets import load_stylesheet

WHITE = QColor("#ffffff").rgb()
YELLOW = QColor("#ffff00").rgb()


def _colours(image: QImage, x0: int, y0: int, x1: int, y1: int) -> set[int]:
    return {image.pixel(x, y) for y in range(max(y0, 0), min(y1, image.height()))
            for x in range(max(x0, 0), min(x1, image.width()))}


def _themed(qtbot: QtBot, *children: QWidget) -> QWidget:
    host = QWidget()
    qtbot.addWidget(host)
    host.setStyleSheet(load_stylesheet("high-contrast"))
    layout = QHBoxLayout(host)
    for child in children:
        layout.addWidget(child)
    host.resize(500, 60)
    host.show()
    qtbot.waitExposed(host)
    return host


def test_a_checkbox_box_is_visible_checked_or_not(qtbot: QtBot) -> None:
    unchecked, checked = QCheckBox("Mute"), QCheckBox("Follow")
    checked.setChecked(True)
    host = _themed(qtbot, unchecked, checked)
    assert host.isVisible()
    for box, expected in ((unchecked, WHITE), (checked, YELLOW)):
        option = QStyleOptionButton()
        box.initStyleOption(option)
        rect = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, box)
        image = box.grab().toImage()
        seen = _colours(image, rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
        assert expected in seen, (box.text(), [QColor(c).name() for c in seen])


def test_a_disabled_button_does_not_look_enabled(qtbot: QtBot) -> None:
    enabled, disabled = QPushButton("Acknowledge"), QPushButton("Acknowledge")
    disabled.setEnabled(False)
    host = _themed(qtbot, enabled, disabled)
    assert host.isVisible()
    on = _colours(enabled.grab().toImage(), 0, 0, enabled.width(), enabled.height())
    off = _colours(disabled.grab().toImage(), 0, 0, disabled.width(), disabled.height())
    assert WHITE in on  # white border and text
    assert WHITE not in off, [QColor(c).name() for c in off]  # dimmed, not the same white
