"""A recording FHIR + token server on loopback, for the ward clients' wire-level tests.

The real sandbox FHIR and OAuth servers cannot be told to fail on the third request, revoke
every token mid-run or lose a version race on cue; this small aiohttp server can, and it
records every request so tests can assert exactly what went over the wire. It keeps
resources in memory, assigns ids and versions, and honours If-Match (FHIR R4
http.html#concurrency). The integration test drives the real servers.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote_plus

from aiohttp import web

CLIENT_ID = "lab system"  # a space, to prove form-urlencoding before Basic (RFC 6749 §2.3.1)
CLIENT_SECRET = "s3cret/with+odd:chars"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


@dataclass
class FhirDouble:
    """State and knobs of the double; `base` is set once it listens."""

    base: str = ""
    token_lifetime_s: int = 3600
    minimal_responses: bool = False
    fail_next: list[int] = field(default_factory=list)  # statuses for upcoming FHIR requests
    refuse_all_tokens: bool = False
    # After answering a GET of this type, bump the stored version as if another client had
    # updated the resource right after our read (to lose an If-Match race on cue).
    concurrent_update_after_read: str | None = None
    # Resource types whose stored copy is returned without its id (an unusable reply).
    reply_without_id: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    token_requests: list[Recorded] = field(default_factory=list)
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _fail_after: tuple[int, int] | None = None

    def fail_after(self, successes: int, status: int) -> None:
        """Answer `successes` more FHIR requests normally, then the next one with `status`."""
        self._fail_after = (successes, status)

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def revoke_all(self) -> None:
        self.valid_tokens.clear()

    def of_type(self, rtype: str) -> list[dict]:
        return list(self.resources.get(rtype, {}).values())

    def writes(self, method: str, rtype: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method == method and (rtype is None or r.path.split("/")[2] == rtype)
        ]

    # ---------------------------------------------------------------- handlers
    async def token(self, request: web.Request) -> web.Response:
        form = parse_qs(await request.text())
        self.token_requests.append(
            Recorded(request.method, request.path, dict(request.headers), {"form": form})
        )
        auth = request.headers.get("Authorization", "")
        expected = f"{CLIENT_ID}:{CLIENT_SECRET}"
        try:
            raw = base64.b64decode(auth.removeprefix("Basic ")).decode()
            client_id, _, secret = raw.partition(":")
            decoded = f"{unquote_plus(client_id)}:{unquote_plus(secret)}"
        except ValueError:
            decoded = ""
        if not auth.startswith("Basic ") or decoded != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != ["client_credentials"]:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"tok-{len(self.token_requests)}"
        self.valid_tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    async def fhir(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text()) if request.can_read_body else None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        if self._fail_after is not None:
            left, status = self._fail_after
            self._fail_after = (left - 1, status) if left else None
            if not left:
                self.fail_next.insert(0, status)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return _outcome(status, "transient" if status >= 500 else "invalid")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.refuse_all_tokens or bearer not in self.valid_tokens:
            return _outcome(401, "login")
        rtype = request.match_info["type"]
        rid = request.match_info.get("id")
        store = self.resources.setdefault(rtype, {})
        if request.method == "POST":
            if body is None or body.get("resourceType") != rtype or "id" in body:
                return _outcome(400, "invalid")
            body["id"] = str(next(self._ids))
            body["meta"] = {"versionId": "1"}
            store[body["id"]] = body
            return self._stored(body, 201)
        current = store.get(rid or "")
        if current is None:
            return _outcome(404, "not-found")
        if request.method == "GET":
            response = self._stored(current, 200)
            if rtype == self.concurrent_update_after_read:
                version = str(int(current["meta"]["versionId"]) + 1)
                store[rid] = {**current, "meta": {"versionId": version}}
            return response
        # PUT
        if request.headers.get("If-Match") != f'W/"{current["meta"]["versionId"]}"':
            return _outcome(412, "conflict")
        body["meta"] = {"versionId": str(int(current["meta"]["versionId"]) + 1)}
        store[rid] = body
        return self._stored(body, 200)

    def _stored(self, resource: dict, status: int) -> web.Response:
        headers = {
            "ETag": f'W/"{resource["meta"]["versionId"]}"',
            "Location": f"{self.fhir_base}/{resource['resourceType']}/{resource['id']}"
            f"/_history/{resource['meta']['versionId']}",
        }
        if self.minimal_responses and status == 201:
            return web.Response(status=status, headers=headers)
        if resource["resourceType"] in self.reply_without_id:
            resource = {k: v for k, v in resource.items() if k != "id"}
        return web.Response(
            status=status,
            text=json.dumps(resource),
            content_type="application/fhir+json",
            headers=headers,
        )


def _outcome(status: int, code: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": "pat-SECRET"}],
            }
        ),
        content_type="application/fhir+json",
    )


async def start_double() -> tuple[FhirDouble, web.AppRunner]:
    double = FhirDouble()
    app = web.Application()
    app.router.add_post("/token", double.token)
    app.router.add_route("*", "/fhir/{type}", double.fhir)
    app.router.add_route("*", "/fhir/{type}/{id}", double.fhir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    double.base = f"http://127.0.0.1:{port}"
    return double, runner
