"""packaging/README.md documents every setting as the code defines it, and the tests it
cites as proof exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wardsync_build import settings_doc

from wardsync.infra.settings import SETTINGS, Setting, choice

REPO = Path(__file__).resolve().parents[2]
README = REPO / "packaging" / "README.md"


def test_the_readme_settings_table_is_up_to_date():
    # Fails when a key is added, renamed or re-described in infra/settings.py without
    # `python packaging/build.py docs`.
    settings_doc.check(README)


def test_every_key_has_one_row_with_its_env_var_and_default():
    text = README.read_text(encoding="utf-8")
    for setting in SETTINGS:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{setting.name}` |")]
        assert len(rows) == 1, setting.name
        assert f"`{setting.env_var}`" in rows[0]


def test_a_changed_setting_makes_the_check_fail(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    extra = Setting("ui.font_scale", choice("small", "large"), "small", "Text size | of <windows>.")
    readme.write_text(
        settings_doc.render(readme.read_text(encoding="utf-8"), (*SETTINGS, extra)),
        encoding="utf-8")
    with pytest.raises(settings_doc.StaleDocError, match=r"build\.py docs"):
        settings_doc.check(readme)
    # The generated row keeps the table intact: the | is escaped, the <...> is not HTML.
    row = next(line for line in readme.read_text().splitlines() if "ui.font_scale" in line)
    assert row.count(" | ") == 4
    assert "Text size \\| of &lt;windows&gt;." in row
    assert "`WARDSYNC_UI_FONT_SCALE`" in row


def test_missing_markers_are_reported(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n", encoding="utf-8")
    with pytest.raises(settings_doc.StaleDocError, match="markers are missing"):
        settings_doc.check(readme)


def test_the_tests_the_readme_cites_for_precedence_and_locking_exist():
    text = README.read_text(encoding="utf-8")
    cited_files = set(re.findall(r"`(tests/[\w/]+\.py)`", text))
    assert {"tests/infra/test_settings_layers.py",
            "tests/infra/test_policy_check.py"} <= cited_files
    defined: set[str] = set()
    for rel in cited_files:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    cited_tests = set(re.findall(r"`(test_\w+)`", text))
    assert "test_locked_keys_ignore_user_env_and_cli_and_report_each_attempt" in cited_tests
    assert cited_tests <= defined, cited_tests - defined


def test_build_docs_check_is_the_command_the_error_names():
    result = subprocess.run([sys.executable, str(REPO / "packaging" / "build.py"), "docs",
                             "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "settings table is up to date" in result.stdout
