"""Who may manage Subscriptions, on the real sandbox with its real OAuth server."""

from __future__ import annotations

from pathlib import Path

import httpx
from subs_bed import Endpoint, subscription, until

from tests.sandbox_fixtures import demo_sign_in, running_sandbox


async def relay_token(http: httpx.AsyncClient, token_url: str, client: dict[str, str],
                      scope: str) -> httpx.Response:
    return await http.post(token_url, data={"grant_type": "client_credentials", "scope": scope},
                           auth=(client["client_id"], client["client_secret"]))


async def test_desktop_token_cannot_manage_subscriptions_the_relay_can(
        seeded_data_dir: Path, tmp_path: Path) -> None:
    endpoint = Endpoint()
    await endpoint.start()
    try:
        async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as sandbox, \
                httpx.AsyncClient(timeout=10.0) as http:
            info = sandbox.ready_info()
            session = await demo_sign_in(sandbox, http)
            desktop = {"Authorization": f"Bearer {session.tokens.access_token}"}
            resource = subscription(endpoint.url)
            r = await http.post(f"{sandbox.fhir_base}/Subscription", json=resource,
                                headers=desktop)
            assert r.status_code == 403, r.text
            assert 'scope="system/Subscription.c"' in r.headers["WWW-Authenticate"]
            r = await http.get(f"{sandbox.fhir_base}/Subscription", headers=desktop)
            assert r.status_code == 403
            # The desktop client cannot even be granted the scope.
            lab = info["lab_client"]
            r = await relay_token(http, sandbox.token_url, lab, "system/Subscription.c")
            assert r.status_code != 200 or "Subscription" not in r.json().get("scope", "")

            r = await relay_token(http, sandbox.token_url, info["relay_client"],
                                  "system/Subscription.cruds system/Observation.rs")
            assert r.status_code == 200, r.text
            assert "system/Subscription.cruds" in r.json()["scope"].split()
            relay = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = await http.post(f"{sandbox.fhir_base}/Subscription", json=resource,
                                headers=relay)
            assert r.status_code == 201, r.text
            sub_id = r.json()["id"]
            await until(lambda: bool(endpoint.bundles("handshake")), real_limit_s=10)
            await until(lambda: sandbox.subscriptions is not None
                        and sandbox.subscriptions.spec(sub_id) is not None
                        and sandbox.subscriptions.spec(sub_id).status == "active",  # type: ignore[union-attr]
                        real_limit_s=10)
            # The sandbox's own writers (the lab system) trigger notifications.
            lab_token = (await relay_token(http, sandbox.token_url, lab,
                                           "system/Observation.cru")).json()["access_token"]
            obs = {"resourceType": "Observation", "status": "final",
                   "code": {"text": "synthetic"}, "subject": {"reference": "Patient/x"}}
            r = await http.post(f"{sandbox.fhir_base}/Observation", json=obs,
                                headers={"Authorization": f"Bearer {lab_token}"})
            assert r.status_code == 201
            await until(lambda: endpoint.event_numbers() == [1], real_limit_s=10)
            r = await http.get(f"{info['admin_url']}/stats",
                               headers={"Authorization": f"Bearer {info['admin_token']}"})
            stats = r.json()["subscriptions"]["subscriptions"][sub_id]
            assert stats == {"status": "active", "channel": "rest-hook", "events": 1,
                             "delivered": 1}
            await session.aclose()
    finally:
        await endpoint.stop()
