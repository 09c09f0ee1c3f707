"""Names, versions and paths every installer shares, from the one version source.

`wardsync._version.__version__` (a PEP 440 version) is read without importing the
application, and turned into each package format's own version syntax here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGING_DIR = REPO / "packaging"
VERSION_FILE = REPO / "desktop" / "wardsync" / "_version.py"
POLICY_TEMPLATE = PACKAGING_DIR / "policy" / "config.toml.example"
SPEC_FILE = PACKAGING_DIR / "wardsync.spec"
ICONS_DIR = REPO / "resources" / "icons"
# Build outputs (ignored by git: build/ and dist/ are in .gitignore).
BUILD_DIR = REPO / "build" / "packaging"
DIST_DIR = REPO / "dist"

PACKAGE_NAME = "wardsync"
PRODUCT_NAME = "WardSync"
SUMMARY = "Clinical workstation: live ward, patient and lab views over FHIR R4"
DESCRIPTION = (
    "WardSync keeps ward overview, patient chart, lab and alert windows fresh from the\n"
    "hospital's FHIR R4 server, with one realtime connection per workstation carrying\n"
    "change notifications (no patient data). With no server configured it runs on an\n"
    "embedded sandbox with synthetic data for demonstration and training."
)
VENDOR = "WardSync"
MAINTAINER = "WardSync IT packaging <it-packaging@wardsync.invalid>"
LICENSE = "Proprietary"
# Debian package revision / RPM release of this packaging of the upstream version.
PACKAGE_REVISION = "1"

# PEP 440 pre-release and development parts, in the order they sort.
_PEP440 = re.compile(
    r"^(?P<release>\d+(?:\.\d+)*)"
    r"(?:(?P<pre_sep>[-_.]?)(?P<pre>a|b|rc)(?P<pre_n>\d+))?"
    r"(?:\.post(?P<post>\d+))?"
    r"(?:\.dev(?P<dev>\d+))?$"
)
MSI_FIELD_LIMITS = (255, 255, 65535)  # ProductVersion: major.minor.build (MSI SDK)


class VersionError(ValueError):
    """The version cannot be expressed in a package format."""


def read_version(path: Path = VERSION_FILE) -> str:
    """`__version__` from `_version.py`, parsed (not imported: no app code runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise VersionError(f"{path}: no __version__ = '...' assignment")


def _parse(version: str) -> re.Match[str]:
    match = _PEP440.match(version)
    if match is None:
        raise VersionError(f"{version!r} is not a release, pre-release, post or dev version")
    return match


def debian_version(version: str) -> str:
    """Upstream part of a Debian version: pre-releases and dev builds sort before the
    release with `~` (Debian Policy 5.6.12), post-releases after it with `+`."""
    m = _parse(version)
    out = m["release"]
    if m["pre"]:
        out += f"~{m['pre']}{m['pre_n']}"
    if m["post"]:
        out += f"+post{m['post']}"
    if m["dev"]:
        # A dev build comes before everything else of its version: `~~` sorts before `~a1`
        # when the version has no pre- or post-release part of its own.
        out += f"~dev{m['dev']}" if m["pre"] or m["post"] else f"~~dev{m['dev']}"
    return out


def rpm_version(version: str) -> str:
    """RPM Version tag: the same as Debian's (rpm >= 4.10 sorts `~` first too); no `-`."""
    return debian_version(version)


def msi_version(version: str) -> str:
    """MSI ProductVersion: major.minor.build, numbers only (MSI SDK "ProductVersion").

    Windows Installer ignores a fourth field when comparing, so pre-releases cannot be
    ordered; they get the release's numbers and IT must uninstall them by hand.
    """
    parts = [int(p) for p in _parse(version)["release"].split(".")]
    parts = [*parts, 0, 0, 0][:3]
    for value, limit in zip(parts, MSI_FIELD_LIMITS, strict=True):
        if value > limit:
            raise VersionError(f"{version!r}: MSI versions allow at most {MSI_FIELD_LIMITS}")
    return ".".join(str(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Release:
    """The version in every format, and the artefact file names built from it."""

    version: str
    deb_arch: str = "amd64"

    @property
    def deb_version(self) -> str:
        return f"{debian_version(self.version)}-{PACKAGE_REVISION}"

    @property
    def rpm_arch(self) -> str:
        return {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686"}.get(
            self.deb_arch, self.deb_arch)

    @property
    def deb_file(self) -> str:
        # Debian's name_version_arch.deb (dpkg-name), without the epoch.
        return f"{PACKAGE_NAME}_{self.deb_version}_{self.deb_arch}.deb"

    @property
    def rpm_file(self) -> str:
        return (f"{PACKAGE_NAME}-{rpm_version(self.version)}-{PACKAGE_REVISION}"
                f".{self.rpm_arch}.rpm")

    @property
    def msi_file(self) -> str:
        return f"{PRODUCT_NAME}-{self.version}-x64.msi"


def current_release(deb_arch: str = "amd64") -> Release:
    """The release described by the repository's `_version.py`."""
    return Release(read_version(), deb_arch)
