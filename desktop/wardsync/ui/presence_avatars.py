"""The avatar stack: who else (at other workstations) has this record open, and who is editing.

Each avatar is a coloured disc with the person's initials and their role written under it; the
tooltip (and the accessible text) gives the full name, the role, what they are doing and since
when: "Nurse Demo Nightingale (Nurse) — editing the task since 14:05". Someone editing gets a
thick dark ring and a pencil mark, so it is not told by colour alone. More than
`MAX_AVATARS` people fold into a "+N" disc whose tooltip names the rest.

The colours are set here, not in the theme files, so the stack reads the same in every theme;
the disc colours are dark enough for white initials (WCAG AA, 4.5:1 and more).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

from wardsync.core.presence import Member
from wardsync.ui.stylesheets import component_stylesheet

MAX_AVATARS = 5
DISC_PX = 30
AVATAR_W_PX = 64
AVATAR_H_PX = 50
# Dark, distinct disc colours (white text on each passes WCAG AA).
DISC_COLOURS = ("#1a5fb4", "#26734d", "#8f3f71", "#a3480f", "#4b4b9c", "#00646e", "#6b4423")
EDITING_RING = "#111111"
# Text colours come from the theme (the high-contrast one is white on black).

COMPONENT_WORDS = {"task": "the task", "note": "the note"}


def clock_time(epoch_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(epoch_ms / 1000))


def disc_colour(key: str) -> str:
    """A stable colour per person (same on every workstation: hashed from the clientId)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return DISC_COLOURS[digest[0] % len(DISC_COLOURS)]


def describe(member: Member) -> str:
    """ "Nurse Demo Nightingale (Nurse) — viewing since 14:02" (or editing what, since when).

    The name and role are the ones verified for the member's clientId (core/presence.py),
    never those in its presence data."""
    data = member.data
    who = f"{member.name} ({member.role})"
    if data is None:
        return f"{who} — present (details could not be read)"
    if data.claims:
        claim = min(data.claims, key=lambda c: c.claimed_at_ms)
        what = COMPONENT_WORDS.get(claim.component, claim.component)
        return f"{who} — editing {what} since {clock_time(claim.claimed_at_ms)}"
    return f"{who} — viewing since {clock_time(data.since_ms)}"


class Avatar(QWidget):
    """One person: initials in a disc, role underneath."""

    def __init__(self, member: Member | None, overflow: Sequence[Member] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("presenceAvatar")
        self.setFixedSize(QSize(AVATAR_W_PX, AVATAR_H_PX))
        self.member = member
        if member is not None:
            self.text = member.initials
            self.role = member.role
            self.editing = member.state == "editing"
            self.colour = QColor(disc_colour(member.client_id))
            description = describe(member)
        else:
            self.text, self.role, self.editing = f"+{len(overflow)}", "more", False
            self.colour = QColor("#5f6b77")
            description = "Also here: " + "; ".join(describe(m) for m in overflow)
        self.setToolTip(description)
        self.setAccessibleName(description)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        disc = QRectF((self.width() - DISC_PX) / 2, 2, DISC_PX, DISC_PX)
        painter.setBrush(self.colour)
        if self.editing:
            painter.setPen(QPen(QColor(EDITING_RING), 3))
        else:
            painter.setPen(QPen(QColor("#ffffff"), 1.5))
        painter.drawEllipse(disc)
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(9.5)
        painter.setFont(font)
        painter.setPen(QColor("#ffffff"))
        painter.drawText(disc, Qt.AlignmentFlag.AlignCenter, self.text)
        if self.editing:
            # A pencil badge: editing is said by shape as well as by the ring.
            badge = QRectF(disc.right() - 8, disc.bottom() - 11, 13, 13)
            painter.setBrush(QColor("#ffd54f"))
            painter.setPen(QPen(QColor(EDITING_RING), 1.2))
            painter.drawEllipse(badge)
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "✎")
        small = QFont(self.font())
        small.setPointSizeF(7.5)
        painter.setFont(small)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(QRectF(0, disc.bottom() + 2, self.width(), 14),
                         Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, self.role)
        painter.end()


class PresenceAvatars(QWidget):
    """"Also here:" and one avatar per other clinician (views call `show_members`)."""

    def __init__(self, caption: str = "Also here:", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("presenceAvatars")
        self.setStyleSheet(component_stylesheet("presence-avatars"))
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(0)
        self.caption = QLabel(caption, self)
        self.caption.setObjectName("presenceCaption")
        self.nobody = QLabel("nobody else", self)
        self.nobody.setObjectName("presenceNobody")
        self._layout.addWidget(self.caption)
        self._layout.addSpacing(6)
        self._layout.addWidget(self.nobody)
        self.avatars: list[Avatar] = []
        self._shown: tuple[object, ...] | None = None
        self.setAccessibleName("Other clinicians with this record open: none")

    def show_members(self, members: Sequence[Member], *, checking: bool = False) -> None:
        """Show these members (others only); `checking` while the first sync is under way."""
        key = (checking, *((m.key, describe(m)) for m in members))
        if key == self._shown:
            return
        self._shown = key
        for avatar in self.avatars:
            self._layout.removeWidget(avatar)
            avatar.deleteLater()
        self.avatars = []
        shown = list(members[:MAX_AVATARS]) if len(members) <= MAX_AVATARS else \
            list(members[:MAX_AVATARS - 1])
        for member in shown:
            self.avatars.append(Avatar(member, parent=self))
        if len(shown) < len(members):
            self.avatars.append(Avatar(None, members[len(shown):], parent=self))
        for avatar in self.avatars:
            self._layout.addWidget(avatar)
        self.nobody.setText("checking…" if checking and not members else "nobody else")
        self.nobody.setVisible(not members)
        names = "; ".join(describe(m) for m in members) or "none"
        self.setAccessibleName(f"Other clinicians with this record open: {names}")
        self.setToolTip(names if members else "")

    @property
    def descriptions(self) -> list[str]:
        """What each avatar says (tests and screen readers)."""
        return [a.accessibleName() for a in self.avatars]
