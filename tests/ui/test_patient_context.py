"""Linked windows: a chart that follows the ward selection switches patient, unless it holds
an unsaved edit, in which case it stays and says why."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from tests.ui.app_harness import demo_app
from tests.ui.test_presence_harness import select_task
from tests.waiting import wait_for
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import Settings
from wardsync.ui.app import AppController
from wardsync.viewmodels.ward_rows import OPEN_TASK

pytestmark = pytest.mark.slow  # several windows of a live app


def charts(controller: AppController) -> list:
    return [w for w in controller.windows if w.kind == "chart"]


async def test_a_following_chart_switches_patient_unless_an_edit_is_unsaved(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    async with demo_app(qtbot, settings, metrics) as (controller, ward):
        rows = ward.model.rows
        first = controller.open_patient_chart(rows[0].patient_id)
        qtbot.addWidget(first)
        other = controller.open_patient_chart(rows[1].patient_id)  # not following
        qtbot.addWidget(other)
        first.follow_action.setChecked(True)

        ward.table.selectRow(3)
        [follower] = [w for w in charts(controller) if w.follow_action.isChecked()]
        qtbot.addWidget(follower)
        assert follower.patient_id == rows[3].patient_id
        assert other.patient_id == rows[1].patient_id  # only following windows move
        assert len(charts(controller)) == 2

        # Start editing one of this patient's open tasks, then pick another bed.
        store = controller.workspace.store
        ref = f"Patient/{follower.patient_id}"
        await wait_for(lambda: any(
            t.get("for", {}).get("reference") == ref and t.get("status") in OPEN_TASK
            for t in store.of_type("Task")), what="the patient's tasks")
        task = next(t for t in store.of_type("Task")
                    if t.get("for", {}).get("reference") == ref and t["status"] in OPEN_TASK)
        await select_task(follower, f"Task/{task['id']}")
        editor = follower.task_editor
        editor.edit_button.click()
        await wait_for(lambda: editor.mode == "editing", what="editing")
        ward.table.selectRow(6)
        assert follower in controller.windows and follower.patient_id == rows[3].patient_id
        assert "unsaved edit" in follower.statusBar().currentMessage()
