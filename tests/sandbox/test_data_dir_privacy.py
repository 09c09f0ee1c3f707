"""`--data-dir` is private from the first byte: every file the sandbox and its relay create
there (databases and their WAL files, secrets) is 0600 in a 0700 directory, created so, never
`chmod`-ed after being written. A second local user on a shared machine reads nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sandbox_fixtures import SEED, demo_sign_in, fast_hub_config
from wardsync.infra.private_file import (
    SharedDirectoryError,
    create_private_file,
    ensure_private_data_dir,
)
from wardsync.sandbox.server import Sandbox, SandboxConfig

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

EXPECTED_FILES = {"fhir.sqlite3", "oauth.sqlite3", "subscriptions.sqlite3", "secrets.json",
                  "relay/relay.sqlite3", "relay/escalations.sqlite3", "relay/client-secret",
                  "relay/ably-key"}


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: whatever a file is created with is what others get."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def chmod_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path chmod-ed while the test runs (the calls still happen)."""
    calls: list[Path] = []
    real = os.chmod

    def recording_chmod(path: os.PathLike[str] | str | int, mode: int, **kw: object) -> None:
        if not isinstance(path, int):
            calls.append(Path(os.fsdecode(path)))
        real(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chmod", recording_chmod)
    return calls


def _modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def test_every_file_in_a_new_data_dir_is_private_from_creation(
    tmp_path: Path, permissive_umask: None, chmod_calls: list[Path]
) -> None:
    """Attack: another local user reads fhir.sqlite3, oauth.sqlite3 (refresh-token families)
    or secrets.json. With umask 000 they used to be created 0666/0644."""
    data = tmp_path / "fresh" / "data"
    sandbox = Sandbox(SandboxConfig(data_dir=data, simulator=False, seed=SEED, patients=4,
                                    hub_config=fast_hub_config()))
    await sandbox.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            session = await demo_sign_in(sandbox, http)  # writes the OAuth database
            await session.aclose()
        modes = _modes(data)  # while running: WAL and shared-memory files exist too
    finally:
        await sandbox.stop()
    assert set(modes) >= EXPECTED_FILES, sorted(modes)
    assert any(name.endswith("-wal") for name in modes), "the WAL files are checked too"
    loose = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert loose == {}
    # Private when created, not made private afterwards.
    assert [p for p in chmod_calls if not p.is_dir()] == []


def test_an_existing_data_dir_is_made_private_before_anything_is_written(tmp_path: Path) -> None:
    loose = tmp_path / "sandbox-data"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert ensure_private_data_dir(loose) == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_a_shared_sticky_directory_is_refused_as_a_data_dir(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    with pytest.raises(SharedDirectoryError, match="another user"):
        ensure_private_data_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777, "left as it was"


def test_an_existing_file_is_left_alone_and_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("someone else's")
    link = tmp_path / "db.sqlite3"
    link.symlink_to(target)
    assert create_private_file(link) == link  # exists (as a link): not opened, not written
    assert target.read_text() == "someone else's"
    new = create_private_file(tmp_path / "new.sqlite3")
    assert stat.S_IMODE(new.stat().st_mode) == 0o600 and new.stat().st_size == 0
