"""The MSI, built by the real wixl from packaging/windows/wardsync.wxs around the placeholder
payload, read back with msiinfo (msitools)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from wardsync_build import msi, project

from tests.packaging.conftest import REPO, require_tool, run

RELEASE = project.current_release("amd64")
# Windows Installer component attribute msidbComponentAttributes64bit.
COMPONENT_64BIT = 256


def _build(tmp_path: Path, name: str, payload: Path | None = None) -> Path:
    require_tool("wixl")
    payload = payload or msi.placeholder_payload(tmp_path / "payload")
    return msi.build_msi(payload, tmp_path / name, RELEASE, work_dir=tmp_path / f"{name}-work")


@pytest.fixture(scope="module")
def msi_file(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("msi"), "out")


def table(msi_path: Path, name: str) -> list[dict[str, str]]:
    """One dict per row of an MSI table (msiinfo export: names, types, key line, rows)."""
    require_tool("msiinfo")
    # `export` writes a table's binary streams (the Icon table's icon) as files under the
    # working directory: keep them next to the MSI, not in the repository.
    lines = run("msiinfo", "export", msi_path, name, cwd=msi_path.parent).stdout.splitlines()
    columns = lines[0].split("\t")
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in lines[3:] if line]


def test_the_expected_tables_are_there(msi_file):
    tables = set(run("msiinfo", "tables", msi_file).stdout.split())
    assert {"Property", "Upgrade", "InstallExecuteSequence", "Shortcut", "Directory",
            "Component", "File", "Feature", "FeatureComponents", "Media", "Icon",
            "Registry"} <= tables


def test_per_machine_with_the_app_version_and_the_fixed_upgrade_code(msi_file):
    props = {r["Property"]: r["Value"] for r in table(msi_file, "Property")}
    assert props["ALLUSERS"] == "1"
    assert props["ProductName"] == "WardSync"
    assert props["ProductVersion"] == project.msi_version(project.read_version())
    assert props["UpgradeCode"] == msi.UPGRADE_CODE
    wxs = (REPO / "packaging" / "windows" / "wardsync.wxs").read_text()
    assert f'UpgradeCode="{msi.UPGRADE_CODE.strip("{}")}"' in wxs
    summary = run("msiinfo", "suminfo", msi_file).stdout
    assert "Template: x64;1033" in summary
    assert re.search(r"^Subject: WardSync clinical workstation ", summary, re.M)


def test_major_upgrade_replaces_older_versions_and_refuses_downgrades(msi_file):
    version = project.msi_version(project.read_version())
    rows = table(msi_file, "Upgrade")
    assert {r["UpgradeCode"] for r in rows} == {msi.UPGRADE_CODE}
    older = [r for r in rows if r["VersionMax"] == version and r["ActionProperty"]
             == "WIX_UPGRADE_DETECTED"]
    newer = [r for r in rows if r["VersionMin"] == version and r["ActionProperty"]
             == "WIX_DOWNGRADE_DETECTED"]
    assert len(older) == 1 and len(newer) == 1
    sequence = {r["Action"]: int(r["Sequence"]) for r in table(msi_file, "InstallExecuteSequence")}
    assert sequence["FindRelatedProducts"] < sequence["InstallValidate"]
    # Old version removed after validation, before the new files go in.
    assert sequence["InstallValidate"] < sequence["RemoveExistingProducts"] < sequence[
        "InstallFiles"]


def test_start_menu_shortcut_to_the_installed_executable(msi_file):
    (shortcut,) = table(msi_file, "Shortcut")
    assert shortcut["Directory_"] == "ProgramMenuFolder"
    assert shortcut["Name"] == "WardSync"
    assert shortcut["Target"] == "[INSTALLDIR]wardsync.exe"
    assert shortcut["Icon_"] == "WardSyncIcon"
    assert [r["Name"] for r in table(msi_file, "Icon")] == ["WardSyncIcon"]


def test_program_files_and_the_policy_template_in_program_data(msi_file):
    dirs = {r["Directory"]: r for r in table(msi_file, "Directory")}
    assert (dirs["INSTALLDIR"]["Directory_Parent"], dirs["INSTALLDIR"]["DefaultDir"]) == (
        "ProgramFiles64Folder", "WardSync")
    assert (dirs["POLICYDIR"]["Directory_Parent"], dirs["POLICYDIR"]["DefaultDir"]) == (
        "CommonAppDataFolder", "WardSync")
    files = table(msi_file, "File")
    policy = [f for f in files if f["Component_"] == "PolicyTemplate"]
    assert [f["FileName"] for f in policy] == ["config.toml.example"]
    assert int(policy[0]["FileSize"]) == project.POLICY_TEMPLATE.stat().st_size
    assert not any(f["FileName"].endswith("config.toml") for f in files)  # IT's own file


def test_every_payload_file_is_installed_by_a_64_bit_component(msi_file, tmp_path):
    payload = msi.placeholder_payload(tmp_path / "payload")
    expected = sorted(p.name for p in payload.rglob("*") if p.is_file())
    components = {r["Component"]: r for r in table(msi_file, "Component")}
    bundle_files = [f for f in table(msi_file, "File")
                    if f["Component_"] not in ("PolicyTemplate", "StartMenuShortcut")]
    assert sorted(f["FileName"].split("|")[-1] for f in bundle_files) == expected
    assert all(int(c["Attributes"]) & COMPONENT_64BIT for c in components.values())
    feature_components = {r["Component_"] for r in table(msi_file, "FeatureComponents")}
    assert feature_components == set(components)


def test_each_build_is_a_new_product_with_stable_components(msi_file, tmp_path):
    again = _build(tmp_path, "again")
    props = [{r["Property"]: r["Value"] for r in table(m, "Property")} for m in (msi_file, again)]
    assert props[0]["ProductCode"] != props[1]["ProductCode"]
    assert props[0]["UpgradeCode"] == props[1]["UpgradeCode"]
    ids = [{r["Component"]: r["ComponentId"] for r in table(m, "Component")}
           for m in (msi_file, again)]
    assert ids[0] == ids[1]


def test_file_names_that_need_xml_escaping_are_harvested(tmp_path):
    payload = msi.placeholder_payload(tmp_path / "payload")
    odd = payload / "_internal" / "R&D <notes>"
    odd.mkdir()
    (odd / 'a "quoted" & spaced.txt').write_text("x")
    built = _build(tmp_path, "odd", payload)
    names = {f["FileName"].split("|")[-1] for f in table(built, "File")}
    assert 'a "quoted" & spaced.txt' in names


def test_a_folder_without_the_windows_executable_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"wardsync\.exe"):
        msi.harvest(tmp_path)


def test_the_placeholder_payload_is_marked_as_such(tmp_path):
    payload = msi.placeholder_payload(tmp_path / "payload")
    assert (payload / "wardsync.exe").read_bytes() == msi.PLACEHOLDER_MARK
    assert (payload / "wardsync-cli.exe").read_bytes() == msi.PLACEHOLDER_MARK
    assert (payload / "_internal" / "resources" / "styles" / "light.qss").is_file()
