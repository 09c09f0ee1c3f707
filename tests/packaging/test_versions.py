"""One version source, mapped to each package format, ordered the way the real tools order
them (dpkg --compare-versions, rpm's vercmp)."""

from __future__ import annotations

import itertools
import subprocess

import pytest
from wardsync_build import project

import wardsync
from tests.packaging.conftest import require_tool, run

# In the order PEP 440 sorts them.
ORDERED = ["0.9.0", "1.0.0.dev1", "1.0.0a1", "1.0.0b2", "1.0.0rc1.dev2", "1.0.0rc1", "1.0.0",
           "1.0.0.post1.dev1", "1.0.0.post1", "1.0.1", "1.2.0"]


def test_the_version_is_read_from_the_one_source_without_importing_the_app():
    assert project.read_version() == wardsync._version.__version__


def test_a_version_file_without_a_version_is_an_error(tmp_path):
    path = tmp_path / "_version.py"
    path.write_text("VERSION = '1.0'\n")
    with pytest.raises(project.VersionError, match="no __version__"):
        project.read_version(path)


@pytest.mark.parametrize(
    ("pep440", "debian", "msi"),
    [
        ("0.1.0", "0.1.0", "0.1.0"),
        ("2.3", "2.3", "2.3.0"),
        ("1.0.0rc1", "1.0.0~rc1", "1.0.0"),
        ("1.0.0.dev3", "1.0.0~~dev3", "1.0.0"),
        ("1.0.0rc1.dev3", "1.0.0~rc1~dev3", "1.0.0"),
        ("1.0.0.post2", "1.0.0+post2", "1.0.0"),
    ],
)
def test_format_versions(pep440, debian, msi):
    assert project.debian_version(pep440) == debian
    assert project.rpm_version(pep440) == debian
    assert project.msi_version(pep440) == msi


@pytest.mark.parametrize("bad", ["1.0-beta", "v1.0", "", "1.0.0+local"])
def test_versions_no_package_format_can_order_are_refused(bad):
    with pytest.raises(project.VersionError):
        project.debian_version(bad)


def test_msi_fields_over_their_limits_are_refused():
    assert project.msi_version("255.255.65535") == "255.255.65535"
    with pytest.raises(project.VersionError, match="MSI"):
        project.msi_version("256.0.0")


def test_dpkg_orders_the_debian_versions_like_pep440():
    require_tool("dpkg")
    for older, newer in itertools.pairwise(ORDERED):
        run("dpkg", "--compare-versions", project.debian_version(older), "lt",
            project.debian_version(newer))


def test_rpm_orders_the_rpm_versions_like_pep440():
    require_tool("rpm")
    for older, newer in itertools.pairwise(ORDERED):
        a, b = project.rpm_version(older), project.rpm_version(newer)
        out = subprocess.run(["rpm", "--eval", f'%{{lua: print(rpm.vercmp("{a}", "{b}"))}}'],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == "-1", (a, b, out)


def test_package_file_names_carry_the_version():
    release = project.Release("1.4.2rc1", "amd64")
    assert release.deb_file == "wardsync_1.4.2~rc1-1_amd64.deb"
    assert release.rpm_file == "wardsync-1.4.2~rc1-1.x86_64.rpm"
    assert release.msi_file == "WardSync-1.4.2rc1-x64.msi"
    assert project.Release("1.0", "arm64").rpm_file == "wardsync-1.0-1.aarch64.rpm"
