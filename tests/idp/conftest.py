"""A real Keycloak for the whole test session (tests/idp/keycloak.py), started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.idp.keycloak import Keycloak, running_keycloak


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keycloak]:
    log_file = tmp_path_factory.mktemp("keycloak") / "keycloak.log"
    with running_keycloak(log_file) as kc:
        print(f"\nKeycloak ready in {kc.boot_s:.1f} s at {kc.base_url}")
        yield kc
