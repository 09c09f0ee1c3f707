"""A loopback HTTP server that answers each path from a script and records every request.

For the wire-level tests of the FHIR layer's discovery GET and token requests: a real aiohttp
server on 127.0.0.1 that can answer 503, 429, a JSON array or a token with a string
`expires_in` on cue, which the sandbox's real OAuth server never does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    """One scripted response: a status and a JSON body (or `raw` text, sent as it is)."""

    status: int = 200
    body: object = None
    raw: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    text: str


@dataclass
class ScriptedServer:
    """`answers[path]` is consumed one per request; the last one stays for later requests."""

    base: str = ""
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def script(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.method, request.path, dict(request.headers),
                                      await request.text()))
        queue = self.answers.get(request.path)
        if not queue:
            return web.Response(status=404)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        text = answer.raw if answer.raw is not None else json.dumps(answer.body)
        return web.Response(status=answer.status, text=text, content_type="application/json")


@asynccontextmanager
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
