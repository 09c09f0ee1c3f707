"""The loopback redirect receiver for native-app sign-in (RFC 8252 §7.3).

A one-shot HTTP listener on 127.0.0.1 and an ephemeral port; the authorization server redirects
the system browser to `http://127.0.0.1:<port>/callback?code=...&state=...`. Only the first
request with a matching `state` completes the sign-in (RFC 6749 §10.12 CSRF protection); the
browser is shown a page telling the user to return to WardSync.

The `state` is checked when the request arrives, before anything is completed: any local
process can reach a loopback port (RFC 8252 §8.3), so a request with a wrong or missing
`state`, even one carrying `error=access_denied`, is answered 400 and the sign-in in progress
carries on waiting for the browser. The expected state is given with `expect_state` before
the browser is opened, so a response cannot arrive before the listener knows what to accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
from urllib.parse import parse_qs, urlsplit

from wardsync.core.errors import SignInError

CALLBACK_PATH = "/callback"
MAX_REQUEST_LINE = 8192

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>WardSync</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


class LoopbackRedirect:
    """`async with LoopbackRedirect() as r: ... code = await r.wait_for_code(state)`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        # RFC 8252 §7.3/§8.3: a loopback IP literal, never a name that may resolve elsewhere.
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("the loopback redirect needs a loopback IP literal") from None
        if not address.is_loopback:
            raise ValueError("the loopback redirect needs a loopback IP literal")
        self._host = host
        self._uri_host = f"[{address.compressed}]" if address.version == 6 else str(address)
        self._server: asyncio.Server | None = None
        self._result: asyncio.Future[dict[str, str]] | None = None
        self._state: str | None = None
        self.port = 0
        self.refused = 0  # callback requests refused for a wrong or missing state

    @property
    def redirect_uri(self) -> str:
        return f"http://{self._uri_host}:{self.port}{CALLBACK_PATH}"

    async def __aenter__(self) -> LoopbackRedirect:
        self._result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._handle, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._result is not None and not self._result.done():
            self._result.cancel()

    def expect_state(self, state: str) -> None:
        """Accept only a callback carrying this `state` (call before opening the browser)."""
        if not state:
            raise ValueError("the authorization request has no state")
        if self._state is not None and self._state != state:
            raise ValueError("a different sign-in is already waiting on this listener")
        self._state = state

    def _state_matches(self, params: dict[str, str]) -> bool:
        got = params.get("state")
        return (self._state is not None and got is not None
                and hmac.compare_digest(got.encode(), self._state.encode()))

    async def wait_for_code(self, state: str, timeout_s: float = 300.0) -> str:
        assert self._result is not None, "use as an async context manager"
        self.expect_state(state)
        try:
            params = await asyncio.wait_for(asyncio.shield(self._result), timeout_s)
        except TimeoutError:
            raise SignInError("sign-in was not completed in the browser in time") from None
        if params.get("state") != state:
            raise SignInError("sign-in response did not match this request (state)")
        if "error" in params:
            raise SignInError(f"sign-in refused: {params['error']}", oauth_error=params["error"])
        if not params.get("code"):
            raise SignInError("sign-in response carried no code")
        return params["code"]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            # Drain headers; the request has no body (it is a browser GET).
            while True:
                header = await asyncio.wait_for(reader.readline(), 10)
                if header in (b"\r\n", b"\n", b""):
                    break
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return
        parts = line.decode("latin-1", "replace").split()
        target = urlsplit(parts[1]) if len(parts) >= 2 and parts[0] == "GET" else None
        if target is None or target.path != CALLBACK_PATH or len(line) > MAX_REQUEST_LINE:
            await self._reply(writer, 404, "Not found", "This address is used by WardSync.")
            return
        params = {k: v[0] for k, v in parse_qs(target.query).items()}
        if not self._state_matches(params):
            # RFC 6749 §10.12: a response that does not carry this request's state is not
            # ours, whoever sent it; it neither completes nor aborts the sign-in.
            self.refused += 1
            await self._reply(writer, 400, "Not this sign-in",
                              "This response does not belong to the sign-in in progress. "
                              "Finish signing in from the WardSync window.")
            return
        if self._result is not None and not self._result.done():
            self._result.set_result(params)
            if "error" in params:
                await self._reply(writer, 200, "Sign-in cancelled", "You can close this tab.")
            else:
                await self._reply(
                    writer, 200, "Signed in to WardSync",
                    "You can close this tab and return to WardSync.",
                )
        else:
            await self._reply(writer, 400, "Already signed in", "You can close this tab.")

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=title, text=text).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            .encode() + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
