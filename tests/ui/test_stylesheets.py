"""Every component stylesheet the widgets ask for exists and parses as rules, so a renamed or
missing file cannot silently strip the alert banner or the lock banner of their colours."""

from __future__ import annotations

import re
from pathlib import Path

from wardsync.infra.paths import resources_dir
from wardsync.ui.stylesheets import component_stylesheet, load_stylesheet

PACKAGE = Path(__file__).resolve().parents[2] / "desktop" / "wardsync"
ASKED = re.compile(r'component_stylesheet\("([a-z0-9-]+)"\)')


def test_every_component_sheet_in_use_exists_and_holds_rules() -> None:
    names = {m for path in PACKAGE.rglob("*.py") for m in ASKED.findall(path.read_text())}
    assert {"record-editor", "alert-banner", "ack-dialog", "conflict-view",
            "presence-avatars"} <= names
    for name in names:
        sheet = component_stylesheet(name)
        assert "{" in sheet and sheet.count("{") == sheet.count("}"), name
    on_disk = {p.stem for p in (resources_dir() / "styles" / "components").glob("*.qss")}
    assert on_disk == names  # no sheet left behind that nothing loads


def test_a_missing_sheet_is_empty_not_an_error() -> None:
    assert component_stylesheet("no-such-component") == ""
    assert load_stylesheet("no-such-theme") == ""
    assert load_stylesheet("light")  # the default theme is shipped
