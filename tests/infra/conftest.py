"""Fixtures for settings tests: real TOML files under tmp_path, explicit environments.

Nothing reads the real /etc or the real home directory: every load names its policy and user
file and passes its own `environ` dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from wardsync.infra.settings import Settings, load_settings

LoadSettings = Callable[..., Settings]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "wardsync" / "config.toml"


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "wardsync" / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def load(policy_file: Path, user_file: Path) -> LoadSettings:
    """load(policy=TOML, user=TOML, env={...}, cli={...}) with files written under tmp_path."""

    def _load(
        *,
        policy: str | None = None,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cli: Mapping[str, str] | None = None,
    ) -> Settings:
        if policy is not None:
            write(policy_file, policy)
        if user is not None:
            write(user_file, user)
        return load_settings(
            argv_overrides=dict(cli or {}),
            environ=dict(env or {}),
            policy_path=policy_file,
            user_path=user_file,
        )

    return _load
