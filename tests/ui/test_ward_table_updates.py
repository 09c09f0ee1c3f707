"""The ward table's model repaints only what changed: a vital sign, an alert count or an
ended highlight is a `dataChanged` on its row or cell, never a reset of the whole table (a
reset, or a whole-table `dataChanged`, makes every open overview ask `data()` of every cell)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex

from wardsync.core.news2 import News2
from wardsync.ui.ward_overview import ALERT_COLUMN, COLUMNS, HIGHLIGHT_S, WardTableModel
from wardsync.viewmodels.ward_rows import WardRow

NEWS = News2(scores={}, missing=())


def _row(n: int, **extra: object) -> WardRow:
    return WardRow(f"Encounter/e{n}", f"Patient/p{n}", f"Bed {n}", f"Patient {n}", "70 F",
                   f"MRN{n}", **extra)  # type: ignore[arg-type]


class Spy:
    """Every dataChanged range and every reset the model emits."""

    def __init__(self, model: WardTableModel) -> None:
        self.changed: list[tuple[int, int, int, int]] = []
        self.resets = 0
        model.dataChanged.connect(self._on_data_changed)
        model.modelReset.connect(self._on_reset)

    def _on_data_changed(self, top: QModelIndex, bottom: QModelIndex, roles: object = None
                         ) -> None:
        self.changed.append((top.row(), top.column(), bottom.row(), bottom.column()))

    def _on_reset(self) -> None:
        self.resets += 1


def _model(rows: int = 24) -> tuple[WardTableModel, Spy]:
    model = WardTableModel()
    model.replace_all([_row(n) for n in range(1, rows + 1)])
    return model, Spy(model)


def test_a_vital_sign_repaints_its_row_only(qapp: object) -> None:
    model, spy = _model()
    model.update_rows({"Patient/p7": _row(7, heart_rate=135.0, news2=NEWS)})
    assert spy.resets == 0
    assert spy.changed == [(6, 0, 6, len(COLUMNS) - 1)]
    assert model.index(6, 5).data() == "135"


def test_a_new_row_that_shows_the_same_cells_repaints_nothing(qapp: object) -> None:
    model, spy = _model()
    model.rows[6].news2 = NEWS
    same = _row(7, news2=NEWS, refs={"Task/t9": "2"})  # e.g. a task that is not open
    model.update_rows({"Patient/p7": same})
    assert model.rows[6] is same, "the row holds the new versions"
    assert spy.changed == [] and spy.resets == 0
    assert "Patient/p7" not in model._changed_at, "nothing to highlight"


def test_an_alert_repaints_one_cell_and_says_so(qapp: object) -> None:
    model, spy = _model()
    assert model.set_alert_counts({"p3": 1}) is True
    assert spy.changed == [(2, ALERT_COLUMN, 2, ALERT_COLUMN)]
    assert model.set_alert_counts({"p3": 1}) is False, "nothing moved: no repaint, no fit"
    assert spy.changed == [(2, ALERT_COLUMN, 2, ALERT_COLUMN)]
    assert spy.resets == 0


def test_an_ended_highlight_repaints_its_rows_not_the_table(qapp: object) -> None:
    model, spy = _model()
    model.rows[3].news2 = NEWS  # it had vitals: the update is highlighted
    model.update_rows({"Patient/p4": _row(4, heart_rate=80.0)})
    first = model._changed_at["Patient/p4"]
    model._changed_at["Patient/p10"] = first + 1.0  # a later update of another bed
    spy.changed.clear()
    left = model.expire_highlights(now=first + HIGHLIGHT_S)
    assert spy.changed == [(3, 0, 3, len(COLUMNS) - 1)], "only the bed whose highlight ended"
    assert left == 1.0, "the next highlight ends a second later"
    assert model.expire_highlights(now=first + HIGHLIGHT_S + 1.0) is None
    assert spy.changed[-1] == (9, 0, 9, len(COLUMNS) - 1)
    assert spy.resets == 0
