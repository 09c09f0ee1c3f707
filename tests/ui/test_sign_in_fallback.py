"""Hospital-mode sign-in: the system browser, or the address dialog when none opens; the
refresh token then lives in the real OS keyring and the next start needs no browser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.sandbox_fixtures import running_sandbox
from tests.waiting import wait_for
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.keyring_store import RefreshTokenStore
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import load_settings
from wardsync.station.services import AppServices
from wardsync.ui.sign_in_dialog import BrowserSignIn


async def test_no_browser_shows_the_address_and_the_session_is_kept_in_the_keyring(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with running_sandbox(seeded_data_dir, tmp_path) as sandbox:
        settings = load_settings(
            environ={"WARDSYNC_FHIR_BASE_URL": sandbox.fhir_base},
            policy_path=tmp_path / "none.toml", user_path=tmp_path / "none.toml")
        opened: list[str] = []
        browser = BrowserSignIn(opener=lambda url: opened.append(url.toString()) or False)
        services = AppServices(settings, MemoryMetrics(), demo=False, open_url=browser)
        await services.start_backend()
        store = RefreshTokenStore(f"wardsync-desktop@{sandbox.fhir_base}")
        store.delete()

        async def clinician_uses_the_address() -> None:
            await wait_for(lambda: browser.dialog is not None and browser.dialog.isVisible())
            url = browser.dialog.address.text()
            browser.dialog.copy_button.click()
            assert QApplication.clipboard().text() == url
            async with httpx.AsyncClient() as http:  # "a browser on this workstation"
                await DemoBrowser(http, username="demo.nurse", password="demo")(url)

        helper = asyncio.create_task(clinician_uses_the_address())
        session = await services.sign_in(interactive=True)
        await helper
        browser.close()
        assert opened and opened[0].startswith(f"{sandbox.base_url}/oauth/authorize?")
        assert session.tokens.practitioner_id == "demo-nurse"
        assert store.load() == session.tokens.refresh_token  # sharded into the OS keyring
        await session.aclose()

        # The next start signs in from the keyring without any browser.
        again = await services.sign_in()
        assert again.tokens.practitioner_id == "demo-nurse"
        assert len(opened) == 1
        assert store.load() == again.tokens.refresh_token  # rotated, and saved again
        await again.aclose()
        store.delete()
        await services.aclose()
