"""Every design citation points at a document and section that exist in this repository.

Code, tests and documents cite the design documents by path and section number, e.g.
"docs/architecture.md §3" or "docs/realtime-protocol.md §7" (docs/README.md, "Citing these
documents"). A newcomer must be able to follow each one, so this test fails, naming file and
line, on a cited `.md` file that does not exist, on a section number that is not a heading of
that file (`## 3. Title`, `### 3.2 Title` or `## §3 Title`), and on any citation of the design
notes that live outside the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCAN_DIRS = ("desktop", "tests", "benchmarks", "packaging", "resources", "docs")
SCAN_FILES = ("README.md", "pyproject.toml", "dev")
TEXT_SUFFIXES = frozenset({
    ".py", ".md", ".toml", ".txt", ".in", ".cfg", ".ini", ".sh", ".spec", ".wxs", ".qss",
    ".desktop", ".example",
})
SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", "node_modules"})

# `<path>.md`, optionally followed by section numbers: "x.md §3", "x.md §1, §3", "x.md §3.2".
# The path may not start inside a longer path or URL (the look-behind), so links to other
# sites ("https://host/README.md") are not taken for files of this repository.
CITATION = re.compile(
    r"(?<![\w/.\\-])(?P<path>\w[\w./-]*\.md)\b"
    r"(?P<sections>(?:\s*(?:,|and)?\s*§\d+(?:\.\d+)*)*)"
)
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
# A numbered heading: "## 3. Contracts", "### 3.2 The poke", "## §3 Contracts".
HEADING = re.compile(r"#{1,6}\s+§?(\d+(?:\.\d+)*)\.?(?:\s|$)")
# The design notes the project started from live outside the repository; cite the in-repo
# documents instead (docs/README.md). Spelled in pieces so this file does not cite them.
OUTSIDE = re.compile("|".join((
    r"(?<![\w/.-])" + "ARCHITECTURE" + r"(?:\.md)?\b", r"(?<![\w/.-])" + "STYLE" + r"\.md",
    "(?i:protocol" + r"\s+" + "brief)", "ably-wire-" + "protocol",
)))


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    text: str

    def __str__(self) -> str:
        try:
            shown = self.file.relative_to(REPO)
        except ValueError:
            shown = self.file
        return f"{shown}:{self.line}: {self.text}"


def scanned_files(root: Path = REPO) -> Iterator[Path]:
    """The repository's text files that may cite design documents.

    This module is left out: its tests of the checker hold broken citations on purpose.
    """
    this = Path(__file__).resolve()
    for name in SCAN_FILES:
        if (root / name).is_file():
            yield root / name
    for top in SCAN_DIRS:
        for path in sorted((root / top).rglob("*")):
            if SKIP_DIRS.intersection(path.parts) or not path.is_file() or path == this:
                continue
            if path.suffix in TEXT_SUFFIXES:
                yield path


@cache
def section_numbers(doc: Path) -> frozenset[str]:
    """The section numbers of a Markdown file's headings (outside fenced code blocks)."""
    numbers: set[str] = set()
    fenced = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            numbers.add(m.group(1))
    return frozenset(numbers)


def _resolve(cited: str, citing: Path, root: Path) -> Path | None:
    # Markdown links are relative to the document; everything else to the repository root.
    for base in (citing.parent, root):
        candidate = (base / cited).resolve()
        if candidate.is_file():
            return candidate
    return None


def check_file(path: Path, root: Path = REPO) -> list[Problem]:
    """Every broken or outside-the-repository design citation in one file."""
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return problems
    for number, line in enumerate(text.splitlines(), start=1):
        for m in OUTSIDE.finditer(line):
            problems.append(Problem(path, number, (
                f"cites {m.group(0)!r}, which is not in the repository: cite "
                "docs/architecture.md, docs/style.md or docs/realtime-protocol.md §n")))
        for m in CITATION.finditer(line):
            cited = m.group("path")
            if OUTSIDE.fullmatch(cited.rsplit("/", 1)[-1]):
                continue  # reported above
            doc = _resolve(cited, path, root)
            if doc is None:
                problems.append(Problem(path, number, f"cites {cited}, which does not exist"))
                continue
            for section in SECTION.findall(m.group("sections")):
                if section not in section_numbers(doc):
                    problems.append(Problem(path, number, (
                        f"cites {cited} §{section}, but {cited} has no heading numbered "
                        f"{section}")))
    return problems


def check(paths: Iterable[Path], root: Path = REPO) -> list[Problem]:
    return [problem for path in paths for problem in check_file(path, root)]


def test_every_design_citation_in_the_repository_resolves() -> None:
    problems = check(scanned_files())
    assert not problems, "broken design citations:\n" + "\n".join(map(str, problems))


def test_the_design_documents_exist_and_are_numbered() -> None:
    # The sections the code cites most; the architecture keeps the numbering it was cited by.
    assert {"1", "2", "3", "4", "5", "6", "7", "8"} <= section_numbers(
        REPO / "docs" / "architecture.md")
    assert {str(n) for n in range(1, 11)} <= section_numbers(
        REPO / "docs" / "realtime-protocol.md")
    assert {"1", "5", "11"} <= section_numbers(REPO / "docs" / "style.md")


# ---------------------------------------------------------------- the checker itself


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## 1. Start\n\n### 1.2 Detail\n\n```\n## 9. not a heading\n```\n"
        "## §3 Other\n", encoding="utf-8")
    return tmp_path


def _cite(repo: Path, text: str, name: str = "module.py") -> list[str]:
    source = repo / name
    source.write_text(text, encoding="utf-8")
    return [p.text for p in check_file(source, repo)]


def test_checker_accepts_citations_of_existing_sections(repo: Path) -> None:
    assert _cite(repo, "# see docs/guide" + ".md §1, §1.2 and §3\n") == []
    assert _cite(repo, "[guide](guide" + ".md)\n", name="docs/other.md") == []
    assert _cite(repo, "see https://example.org/README" + ".md\n") == []


def test_checker_fails_on_a_missing_section(repo: Path) -> None:
    # §9 only appears inside a code block, which is not a heading.
    assert _cite(repo, "# see docs/guide" + ".md §9\n") == [
        "cites docs/guide" + ".md §9, but docs/guide" + ".md has no heading numbered 9"]
    assert len(_cite(repo, "# docs/guide" + ".md §1.3\n")) == 1


def test_checker_fails_on_a_missing_file_and_names_file_and_line(repo: Path) -> None:
    source = repo / "module.py"
    source.write_text("x = 1\n# see docs/nowhere" + ".md §2\n", encoding="utf-8")
    problems = check([source], repo)
    assert [str(p) for p in problems] == [
        f"{source}:2: cites docs/nowhere" + ".md, which does not exist"]


def test_checker_fails_on_the_design_notes_outside_the_repository(repo: Path) -> None:
    for outside in ("ARCHITECTURE" + ".md §3", "ARCHITECTURE" + " §3", "STYLE" + ".md",
                    "the Protocol" + " brief §1"):
        problems = _cite(repo, f"# per {outside}\n")
        assert problems and "not in the repository" in problems[0], outside
    # The in-repository documents of the same names are fine.
    (repo / "docs" / "style.md").write_text("## 1. Layers\n", encoding="utf-8")
    assert _cite(repo, "# per docs/style" + ".md §1\n") == []


def test_the_scan_covers_code_tests_docs_and_packaging() -> None:
    scanned = {p.relative_to(REPO).as_posix() for p in scanned_files()}
    assert {"README.md", "pyproject.toml", "dev", "docs/architecture.md",
            "desktop/wardsync/sync/intake.py", "tests/conftest.py",
            "packaging/README.md", "benchmarks/common.py"} <= scanned
