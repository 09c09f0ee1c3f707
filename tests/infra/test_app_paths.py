"""Per-user directories, the machine policy path and the resources directory."""

from __future__ import annotations

import stat
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from wardsync.infra import paths

REPO = Path(__file__).resolve().parents[2]


def test_linux_defaults_follow_xdg_under_home():
    dirs = paths.app_dirs(platform="linux", environ={"HOME": "/home/nurse.fake"})
    home = PurePosixPath("/home/nurse.fake")
    assert dirs.config == home / ".config" / "wardsync"
    assert dirs.user_config_file == home / ".config" / "wardsync" / "config.toml"
    assert dirs.data == home / ".local" / "share" / "wardsync"
    assert dirs.cache == home / ".cache" / "wardsync"
    assert dirs.state == home / ".local" / "state" / "wardsync"
    assert dirs.logs == home / ".local" / "state" / "wardsync" / "logs"
    assert dirs.policy_file == PurePosixPath("/etc/wardsync/config.toml")


def test_linux_honours_xdg_variables():
    environ = {
        "HOME": "/home/nurse.fake",
        "XDG_CONFIG_HOME": "/cfg",
        "XDG_DATA_HOME": "/data",
        "XDG_CACHE_HOME": "/cache",
        "XDG_STATE_HOME": "/state",
    }
    dirs = paths.app_dirs(platform="linux", environ=environ)
    assert dirs.config == PurePosixPath("/cfg/wardsync")
    assert dirs.data == PurePosixPath("/data/wardsync")
    assert dirs.cache == PurePosixPath("/cache/wardsync")
    assert dirs.state == PurePosixPath("/state/wardsync")
    assert dirs.logs == PurePosixPath("/state/wardsync/logs")
    # The machine policy is not per user: XDG does not move it.
    assert dirs.policy_file == PurePosixPath("/etc/wardsync/config.toml")


def test_relative_or_empty_xdg_values_are_ignored():
    # XDG Base Directory spec: relative paths are invalid and must be ignored.
    environ = {"HOME": "/home/nurse.fake", "XDG_CONFIG_HOME": "rel/cfg", "XDG_CACHE_HOME": ""}
    dirs = paths.app_dirs(platform="linux", environ=environ)
    assert dirs.config == PurePosixPath("/home/nurse.fake/.config/wardsync")
    assert dirs.cache == PurePosixPath("/home/nurse.fake/.cache/wardsync")


def test_public_functions_use_the_given_environment(tmp_path):
    # CI runs on Linux, so the public functions use the XDG layout here.
    environ = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "c"),
        "XDG_DATA_HOME": str(tmp_path / "d"),
        "XDG_CACHE_HOME": str(tmp_path / "k"),
        "XDG_STATE_HOME": str(tmp_path / "s"),
    }
    assert paths.user_config_dir(environ) == tmp_path / "c" / "wardsync"
    assert paths.user_config_file(environ) == tmp_path / "c" / "wardsync" / "config.toml"
    assert paths.user_data_dir(environ) == tmp_path / "d" / "wardsync"
    assert paths.user_cache_dir(environ) == tmp_path / "k" / "wardsync"
    assert paths.user_state_dir(environ) == tmp_path / "s" / "wardsync"
    assert paths.user_log_dir(environ) == tmp_path / "s" / "wardsync" / "logs"
    assert paths.policy_file(environ) == Path("/etc/wardsync/config.toml")
    assert isinstance(paths.user_config_dir(environ), Path)


def test_windows_uses_appdata_localappdata_and_programdata():
    environ = {
        "APPDATA": "C:\\Users\\nurse\\AppData\\Roaming",
        "LOCALAPPDATA": "C:\\Users\\nurse\\AppData\\Local",
        "ProgramData": "D:\\ProgramData",
    }
    dirs = paths.app_dirs(platform="win32", environ=environ)
    assert dirs.config == PureWindowsPath("C:/Users/nurse/AppData/Roaming/WardSync")
    assert dirs.user_config_file == PureWindowsPath(
        "C:/Users/nurse/AppData/Roaming/WardSync/config.toml"
    )
    assert dirs.data == PureWindowsPath("C:/Users/nurse/AppData/Roaming/WardSync/Data")
    assert dirs.cache == PureWindowsPath("C:/Users/nurse/AppData/Local/WardSync/Cache")
    assert dirs.logs == PureWindowsPath("C:/Users/nurse/AppData/Local/WardSync/Logs")
    assert dirs.policy_file == PureWindowsPath("D:/ProgramData/WardSync/config.toml")


def test_windows_falls_back_to_the_profile_and_c_programdata():
    dirs = paths.app_dirs(
        platform="win32", environ={}, home=PureWindowsPath("C:\\Users\\nurse")
    )
    assert dirs.config == PureWindowsPath("C:/Users/nurse/AppData/Roaming/WardSync")
    assert dirs.state == PureWindowsPath("C:/Users/nurse/AppData/Local/WardSync/State")
    assert dirs.policy_file == PureWindowsPath("C:/ProgramData/WardSync/config.toml")


def test_macos_uses_library():
    dirs = paths.app_dirs(platform="darwin", environ={"HOME": "/Users/nurse"})
    assert dirs.config == PurePosixPath("/Users/nurse/Library/Application Support/WardSync")
    assert dirs.cache == PurePosixPath("/Users/nurse/Library/Caches/WardSync")
    assert dirs.logs == PurePosixPath("/Users/nurse/Library/Logs/WardSync")
    assert dirs.policy_file == PurePosixPath(
        "/Library/Application Support/WardSync/config.toml"
    )


def test_ensure_private_dir_creates_a_directory_only_the_user_can_read(tmp_path):
    target = tmp_path / "a" / "b" / "wardsync"
    assert paths.ensure_private_dir(target) == target
    assert target.is_dir()
    assert stat.S_IMODE(target.stat().st_mode) & 0o077 == 0
    paths.ensure_private_dir(target)  # idempotent


def test_resources_dir_in_a_source_checkout():
    assert paths.resources_dir() == REPO / "resources"


def test_resources_dir_in_a_pyinstaller_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "_internal"
    (bundle / "resources").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert paths.resources_dir() == bundle / "resources"


def test_resources_dir_not_found_names_where_it_looked(tmp_path, monkeypatch):
    # A build without its resources must fail with a message saying where it looked. The
    # checkout candidate is moved away by faking the module location.
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "empty"), raising=False)
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "x" / "y" / "z" / "paths.py"))
    with pytest.raises(FileNotFoundError) as caught:
        paths.resources_dir()
    assert str(tmp_path / "empty" / "resources") in str(caught.value)
