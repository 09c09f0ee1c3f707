"""Where WardSync keeps its per-user files, its bundled resources and the machine policy.

WardSync never writes clinical data to disk: patient data lives only in memory and is pulled
from the FHIR server again after a restart or a user switch. The per-user directories below
hold window layouts, preferences, the user's `config.toml`, caches of non-clinical assets and
logs (which carry references and states only, never clinical content). That is why they can
use the ordinary per-user locations of each operating system:

- Linux and other Unix: the XDG Base Directory specification, honouring `XDG_CONFIG_HOME`,
  `XDG_DATA_HOME`, `XDG_CACHE_HOME` and `XDG_STATE_HOME` (relative values are ignored, as
  the specification requires).
- Windows: `%APPDATA%` (roaming, so layouts follow a clinician between shared workstations)
  for config and data; `%LOCALAPPDATA%` for cache, state and logs.
- macOS: `~/Library/Application Support`, `~/Library/Caches` and `~/Library/Logs`.

The machine policy file (docs/architecture.md §7) is `/etc/wardsync/config.toml` on Linux,
`%ProgramData%\\WardSync\\config.toml` on Windows and
`/Library/Application Support/WardSync/config.toml` on macOS.

Every function takes an optional `environ` (and `app_dirs` an optional `platform` and
`home`) so tests and tools can compute the paths of another user or OS without touching the
real environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

APP_ID = "wardsync"  # directory name on Linux (XDG names are lower-case by convention)
APP_NAME = "WardSync"  # directory name on Windows and macOS
CONFIG_FILE_NAME = "config.toml"
# Only the user may read layouts and logs on a shared workstation.
PRIVATE_DIR_MODE = 0o700

LINUX_POLICY_FILE = PurePosixPath("/etc/wardsync/config.toml")
MACOS_POLICY_FILE = PurePosixPath("/Library/Application Support/WardSync/config.toml")
WINDOWS_PROGRAM_DATA_FALLBACK = "C:\\ProgramData"


@dataclass(frozen=True, slots=True)
class AppDirs:
    """The per-user directories and the machine policy file for one platform and user."""

    config: PurePath
    data: PurePath
    cache: PurePath
    state: PurePath
    logs: PurePath
    policy_file: PurePath

    @property
    def user_config_file(self) -> PurePath:
        """The user layer of the settings: `<config dir>/config.toml`."""
        return self.config / CONFIG_FILE_NAME


def _platform_family(platform: str) -> str:
    if platform.startswith("win"):
        return "windows"
    if platform == "darwin":
        return "macos"
    return "xdg"


def _xdg_dir(environ: Mapping[str, str], var: str, fallback: PurePath) -> PurePath:
    # XDG Base Directory spec: "If an implementation encounters a relative path in any of
    # these variables it should consider the path invalid and ignore it."
    value = environ.get(var, "")
    if value and PurePosixPath(value).is_absolute():
        return PurePosixPath(value)
    return fallback


def app_dirs(
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: PurePath | None = None,
) -> AppDirs:
    """Compute the directories for `platform` (default `sys.platform`) and `environ`.

    Returns pure paths of the platform's flavour (`PureWindowsPath` for Windows), so the
    layout of any OS can be computed and tested anywhere. Nothing is created.
    """
    env = os.environ if environ is None else environ
    family = _platform_family(sys.platform if platform is None else platform)
    if family == "windows":
        win_home = PureWindowsPath(home) if home is not None else PureWindowsPath(
            env.get("USERPROFILE") or str(Path.home())
        )
        roaming = PureWindowsPath(env.get("APPDATA") or win_home / "AppData" / "Roaming")
        local = PureWindowsPath(env.get("LOCALAPPDATA") or win_home / "AppData" / "Local")
        program_data = PureWindowsPath(env.get("ProgramData") or WINDOWS_PROGRAM_DATA_FALLBACK)
        return AppDirs(
            config=roaming / APP_NAME,
            data=roaming / APP_NAME / "Data",
            cache=local / APP_NAME / "Cache",
            state=local / APP_NAME / "State",
            logs=local / APP_NAME / "Logs",
            policy_file=program_data / APP_NAME / CONFIG_FILE_NAME,
        )
    posix_home = PurePosixPath(home) if home is not None else PurePosixPath(
        env.get("HOME") or str(Path.home())
    )
    if family == "macos":
        library = posix_home / "Library"
        return AppDirs(
            config=library / "Application Support" / APP_NAME,
            data=library / "Application Support" / APP_NAME / "Data",
            cache=library / "Caches" / APP_NAME,
            state=library / "Application Support" / APP_NAME / "State",
            logs=library / "Logs" / APP_NAME,
            policy_file=MACOS_POLICY_FILE,
        )
    state = _xdg_dir(env, "XDG_STATE_HOME", posix_home / ".local" / "state") / APP_ID
    return AppDirs(
        config=_xdg_dir(env, "XDG_CONFIG_HOME", posix_home / ".config") / APP_ID,
        data=_xdg_dir(env, "XDG_DATA_HOME", posix_home / ".local" / "share") / APP_ID,
        cache=_xdg_dir(env, "XDG_CACHE_HOME", posix_home / ".cache") / APP_ID,
        # The XDG spec names $XDG_STATE_HOME as the place for logs ("actions history").
        state=state,
        logs=state / "logs",
        policy_file=LINUX_POLICY_FILE,
    )


def user_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the user's `config.toml` on this machine."""
    return Path(app_dirs(environ=environ).config)


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The user settings file, `<user config dir>/config.toml`."""
    return Path(app_dirs(environ=environ).user_config_file)


def user_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Window layouts and other per-user preferences (never clinical data)."""
    return Path(app_dirs(environ=environ).data)


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Re-creatable non-clinical files (for example, rendered icons)."""
    return Path(app_dirs(environ=environ).cache)


def user_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """State that should survive restarts but is not worth roaming (for example, window state)."""
    return Path(app_dirs(environ=environ).state)


def user_log_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Application logs (references and states only, never clinical content)."""
    return Path(app_dirs(environ=environ).logs)


def policy_file(environ: Mapping[str, str] | None = None) -> Path:
    """The machine policy `config.toml` an administrator deploys for every user."""
    return Path(app_dirs(environ=environ).policy_file)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the current user only; return it.

    On a shared workstation another user must not read someone's layouts or logs. An
    existing directory keeps its mode: an administrator may have chosen it deliberately.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    """The `resources/` directory: icons, stylesheets, sounds, seed data, terminology.

    In a PyInstaller build the data files are unpacked next to the executable and
    `sys._MEIPASS` names that bundle directory (PyInstaller docs, "Run-time information");
    the spec file copies `resources/` there. In a source checkout it is the repository's
    top-level `resources/`, three levels above this package's `infra/` directory.

    Raises FileNotFoundError naming every place that was looked at.
    """
    candidates: list[Path] = []
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        candidates.append(Path(bundle) / "resources")
        # A macOS .app keeps data under Contents/Resources, beside the executable's folder.
        candidates.append(Path(sys.executable).resolve().parent.parent / "Resources" / "resources")
    # desktop/wardsync/infra/paths.py -> parents[3] is the repository root.
    candidates.append(Path(__file__).resolve().parents[3] / "resources")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"WardSync resources directory not found (looked in: {looked})")
