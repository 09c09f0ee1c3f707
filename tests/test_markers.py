"""The `slow` and `xvfb` markers stay on the tests they describe.

`./dev test -m "not slow"` is the fast inner loop (README.md), so a new fault-injection,
end-to-end, benchmark or screenshot module must carry `slow`, and anything that opens the
private Xvfb display must carry `xvfb` (both declared in pyproject.toml, `--strict-markers`).
Modules are read as source: nothing here imports or runs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Whole modules whose every test takes more than a few seconds.
SLOW_MODULES = (
    "faults/test_fault_*.py",  # live fault injection against real servers
    "e2e/test_*.py",  # whole app processes
    "benchmarks/test_*_smoke.py",  # each benchmark end to end
    "ui/test_alert_benchmark_smoke.py",  # the alert latency benchmark end to end
    "ui/test_screenshots.py",  # every window, both themes, on Xvfb
    "packaging/e2e_installed_package.py",  # builds and installs the real bundle
)
XVFB_FIXTURES = ("xvfb_display", "xvfb_env")
XVFB_HELPERS = {"ui/xvfb.py", "ui/conftest.py", "ui/screens.py"}


def module_marks(path: Path) -> set[str]:
    """Names of the `pytest.mark.<name>` markers in a module's `pytestmark`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute)
                        and sub.value.attr == "mark"):
                    marks.add(sub.attr)
    return marks


def _modules(pattern: str) -> list[Path]:
    return sorted(TESTS.glob(pattern))


@pytest.mark.parametrize("pattern", SLOW_MODULES)
def test_slow_modules_are_marked_slow(pattern: str) -> None:
    modules = _modules(pattern)
    assert modules, f"no module matches tests/{pattern}: update SLOW_MODULES"
    unmarked = [str(m.relative_to(REPO)) for m in modules if "slow" not in module_marks(m)]
    assert not unmarked, f"add `pytestmark = pytest.mark.slow` to: {unmarked}"


def test_modules_that_use_xvfb_are_marked_xvfb() -> None:
    users = [
        m for m in sorted(TESTS.rglob("*.py"))
        if m.relative_to(TESTS).as_posix() not in XVFB_HELPERS
        and any(f in m.read_text(encoding="utf-8") for f in XVFB_FIXTURES)
        and m != Path(__file__).resolve()
    ]
    assert users, "the screenshot tests no longer use the Xvfb fixtures: update this test"
    unmarked = [str(m.relative_to(REPO)) for m in users if "xvfb" not in module_marks(m)]
    assert not unmarked, f"add pytest.mark.xvfb to the pytestmark of: {unmarked}"


def test_module_marks_reads_single_marks_and_lists(tmp_path: Path) -> None:
    single = tmp_path / "single.py"
    single.write_text("import pytest\npytestmark = pytest.mark.slow\n", encoding="utf-8")
    listed = tmp_path / "listed.py"
    listed.write_text("import pytest\npytestmark = [pytest.mark.timeout(9), pytest.mark.xvfb]\n",
                      encoding="utf-8")
    bare = tmp_path / "bare.py"
    bare.write_text("import pytest\n\n@pytest.mark.slow\ndef test_x(): pass\n", encoding="utf-8")
    assert module_marks(single) == {"slow"}
    assert module_marks(listed) == {"timeout", "xvfb"}
    assert module_marks(bare) == set()  # a marked test is not a marked module
