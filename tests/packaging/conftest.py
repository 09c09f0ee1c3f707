"""Fixtures for the packaging tests: the build tools on sys.path and a placeholder bundle.

The fast tests (run by CI) build the real .deb, .rpm and MSI with the real tools (dpkg-deb,
rpmbuild, wixl) around a small placeholder bundle with the layout PyInstaller produces, and
install the .deb and .rpm into throwaway package databases. The full build of the real
bundle, installed on this machine, is e2e_installed_package.py (packaging/README.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "packaging"))

PLACEHOLDER_EXECUTABLE = "#!/bin/sh\n# stands in for the PyInstaller executable\necho placeholder\n"


def require_tool(name: str) -> str:
    """The path of a command-line tool, or a failure that says how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the tests with ./dev test (as root it "
                    "installs the packaging tools listed in APT_TEST)")
    return path


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command, fail the test with its output if it exits non-zero."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def placeholder_bundle(tmp_path: Path) -> Path:
    """A folder laid out like dist/wardsync: the executable, _internal/ and the real
    resources/ (the packages' layout is what these tests check, not the program)."""
    bundle = tmp_path / "bundle" / "wardsync"
    internal = bundle / "_internal"
    shutil.copytree(REPO / "resources", internal / "resources")
    exe = bundle / "wardsync"
    exe.write_text(PLACEHOLDER_EXECUTABLE, encoding="utf-8")
    exe.chmod(0o700)  # staging must widen this to 0755
    (internal / "libexample.so.1").write_bytes(b"not really a library")
    (internal / "libexample.so").symlink_to("libexample.so.1")
    return bundle
