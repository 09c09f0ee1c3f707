"""The patient identity banner at the top of every window about one patient.

Name ("FAMILY, Given"), date of birth with age, sex, MRN, bed and allergies, always in the
same place and order (NHS Common User Interface patient banner), so a clinician working
across several monitors can always tell whose record a window shows. The content comes from
`banner_facts`; fields that change are highlighted for a few seconds.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from wardsync.ui.chart_widgets.grouped_table import HIGHLIGHT_S
from wardsync.viewmodels.banner_facts import BannerFacts

FIELDS = ("name", "born", "sex", "mrn", "location", "allergies")


class PatientBanner(QFrame):
    """Shows one patient's identity; `show_facts` updates the fields that changed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("patientBanner")
        self.setAccessibleName("Patient identity")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.labels: dict[str, QLabel] = {}
        names = {"name": "Patient name", "born": "Date of birth and age", "sex": "Sex",
                 "mrn": "Medical record number", "location": "Bed and ward",
                 "allergies": "Allergies"}
        for field in FIELDS:
            label = QLabel("", self)
            label.setObjectName(f"banner{field.capitalize()}")
            label.setAccessibleName(names[field])
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[field] = label
        self.labels["allergies"].setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.labels["name"])
        top.addSpacing(self.fontMetrics().averageCharWidth() * 3)
        for field in ("born", "sex", "mrn"):
            top.addWidget(self.labels[field])
        top.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.labels["location"])
        bottom.addSpacing(self.fontMetrics().averageCharWidth() * 3)
        bottom.addWidget(self.labels["allergies"], 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(bottom)
        self.facts: BannerFacts | None = None
        self._highlight_timer = QTimer(self)
        self._highlight_timer.setSingleShot(True)
        self._highlight_timer.timeout.connect(self._on_highlight_timer_timeout)
        self.highlighted: set[str] = set()

    def texts(self) -> dict[str, str]:
        """Field name -> text shown."""
        return {f: label.text() for f, label in self.labels.items()}

    def show_facts(self, facts: BannerFacts) -> set[str]:
        """Show `facts`; returns the fields whose text changed."""
        before = self.facts
        changed = set()
        for field in FIELDS:
            text = str(getattr(facts, field))
            if field == "mrn" and facts.mrn not in ("—", ""):
                text = f"MRN {facts.mrn}"
            label = self.labels[field]
            if label.text() != text:
                label.setText(text)
                changed.add(field)
        allergies = self.labels["allergies"]
        if allergies.property("level") != facts.allergy_level:
            allergies.setProperty("level", facts.allergy_level)
            self._repolish(allergies)
        self.setAccessibleDescription(facts.accessible_summary)
        self.facts = facts
        # Highlight what changed on a patient already shown, not the first fill or a field
        # that goes from "loading" to its value.
        real = {f for f in changed if before is not None and before.refs
                and not str(getattr(before, f)).startswith(("Loading", "Allergies: not loaded",
                                                            "Bed: not loaded", "—"))}
        if real:
            self.highlighted |= real
            for field in real:
                self.labels[field].setProperty("highlighted", "true")
                self._repolish(self.labels[field])
            self._highlight_timer.start(int(HIGHLIGHT_S * 1000))
        return changed

    @staticmethod
    def _repolish(label: QLabel) -> None:
        label.style().unpolish(label)
        label.style().polish(label)

    def _on_highlight_timer_timeout(self) -> None:
        for field in self.highlighted:
            self.labels[field].setProperty("highlighted", "false")
            self._repolish(self.labels[field])
        self.highlighted.clear()
