"""The one realtime connection of a workstation process (the only module importing `ably`).

Every window shares this connection. Channels are reference-counted: the first lease attaches,
the last release detaches after a grace period, so a panel closed and reopened (or a record
shown in two windows one after the other) does not churn attach/detach (Medplum's
SubscriptionManager does the same for its one socket).

Authentication is token-only through `auth_callback`: the workstation exchanges its FHIR access
token for a short-lived Ably token at the hospital relay (the sandbox stands in for it), so the
Ably API key never reaches a workstation. No `client_id` option is set: the clientId comes from
the token via CONNECTED.connectionDetails (the "clientId trap", docs/realtime-protocol.md §8).

Two SDK behaviours are hooked so that nothing fails silently inside it:

- A MESSAGE frame is checked message by message before the SDK decodes it. ably 3.1.4 decodes
  a frame's messages all at once and, if one has a bad `encoding` (JSON or base64 that does
  not parse, an encoding it does not know), drops the whole frame, logging its content; a good
  poke in the same frame was lost until the next gap check. Here the undecodable messages are
  taken out and reported to the channel's listeners as `UndecodableMessage` (the poke intake
  counts them as rejected), and the rest of the frame is delivered.
- An attach the SDK starts in the background (`asyncio.create_task(channel.attach())` when a
  suspended channel is retried after reconnecting, or a presence enter on a detached channel)
  raises into a task nobody awaits when it times out: "Task exception was never retrieved".
  Such failures are counted in `sdk_errors` and logged; the SDK retries the channel itself.
  An attach that a caller awaits still raises to that caller.

A link that drops again and again right after it connects (a frame the SDK refuses, e.g. over
its 1 MiB websocket limit; a middlebox resetting it) would make the SDK reconnect at once
every time (docs/realtime-protocol.md §3): a reconnect storm, with a catch-up from FHIR after
each. The reaction is bounded: after `flap_limit` drops of an established link within
`flap_window_s` the connection closes and stays closed for a pause that doubles from
`flap_pause_s` up to FLAP_PAUSE_CAP_S (reset once a link stays up for the window), reporting
"disconnected" so the workstation polls meanwhile; then it connects and re-attaches every
leased channel (docs/security/realtime-and-local.md §3).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ably import AblyRealtime
from ably.transport.websockettransport import ProtocolMessageAction
from ably.types.channelstate import ChannelState, ChannelStateChange
from ably.types.connectionstate import ConnectionStateChange
from ably.types.message import Message
from ably.util.exceptions import AblyException

from wardsync.core.net import is_loopback_host
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer, TimerHandle, wait_for

log = logging.getLogger(__name__)

CHANNEL_RELEASE_GRACE_S = 5.0
_EPOCH = datetime(1970, 1, 1)
# SDK retry settings (milliseconds, the SDK's unit). A ward must not wait the SDK's default
# 15 s to retry a dropped link; the polling watchdog covers longer outages.
DISCONNECTED_RETRY_MS = 2000
SUSPENDED_RETRY_MS = 5000
REALTIME_REQUEST_TIMEOUT_MS = 5000
# How often the link is checked for the silence the SDK's idle timer acts on (RTN23a).
SILENCE_CHECK_S = 0.25
# The SDK's idle timer fires 100 ms after its limit; report only once it surely has.
SILENCE_MARGIN_MS = 300
# An unstable link (see the module docstring): drops within the window before a pause.
FLAP_LIMIT = 5
FLAP_WINDOW_S = 30.0
FLAP_PAUSE_S = 5.0
FLAP_PAUSE_CAP_S = 120.0
CLOSE_TIMEOUT_S = 5.0

TokenProvider = Callable[[], Awaitable[dict[str, Any]]]
PresenceListener = Callable[[], None]
MessageListener = Callable[[Any], None]
StateListener = Callable[[str, str], None]
ContinuityListener = Callable[[str], None]


def ably_options(endpoint: str) -> dict[str, Any]:
    """Client options for `host:port` (loopback: plain ws; anything else: TLS).

    `endpoint` gets a trailing slash so ONE client serves both websocket and REST with the
    port in the host (ably 3.1.4 ignores `port` for realtime; docs/realtime-protocol.md §1).
    """
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    loopback = is_loopback_host(host)
    return {"endpoint": endpoint.rstrip("/") + "/", "tls": not loopback}


@dataclass
class _Channel:
    name: str
    channel: Any
    listeners: list[MessageListener] = field(default_factory=list)
    leases: int = 0
    attached_once: bool = False
    release_timer: TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class UndecodableMessage:
    """Given to a channel's listeners in place of a message the SDK could not decode (a bad
    or unknown `encoding`). Carries a reason code only, never the content."""

    reason: str = "bad_encoding"


# What decoding one wire message can raise in ably 3.1.4 (types/mixins.py `decode`): JSON or
# base64 that does not parse (ValueError, binascii.Error), bytes that are not UTF-8
# (UnicodeDecodeError), fields of the wrong type (TypeError, AttributeError), delta errors.
_DECODE_ERRORS = (AblyException, ValueError, TypeError, AttributeError, RecursionError)


def decodes(wire: object) -> bool:
    """True if the SDK decodes this wire message completely: it parses, and no encoding step
    is left over (the SDK passes an unknown encoding through with the data still encoded)."""
    if not isinstance(wire, dict):
        return False
    try:
        # No cipher and no delta context: WardSync channels use neither (docs/architecture.md
        # §3.3), so this is exactly the decoding the SDK is about to do.
        decoded = Message.from_encoded(wire)
    except _DECODE_ERRORS:
        return False
    return not decoded.encoding


class RealtimeError(Exception):
    """A realtime operation the SDK refused or that failed (its code and message, no data)."""


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One presence member as the SDK holds it (RTP2): who, on which connection, their data."""

    client_id: str | None
    connection_id: str | None
    data: Any
    timestamp_ms: int = 0  # the hub's timestamp of the member's latest message (0: none)


class ChannelLease:
    """A claim on a channel; `close()` releases it (detach after the grace period).

    The presence helpers wrap the SDK's `channel.presence` (RTP8-RTP11) so callers outside
    this module neither import `ably` nor handle its exception type: failures become
    `RealtimeError`. Entering needs the clientId that the realtime token carries (RTP8j).
    """

    def __init__(self, conn: SyncConnection, name: str, listener: MessageListener | None):
        self._conn = conn
        self.name = name
        self._listener = listener
        self._closed = False

    @property
    def channel(self) -> Any:
        return self._conn.channel(self.name)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn._release(self.name, self._listener)

    # ------------------------------------------------------------------ presence
    async def enter_presence(self, data: Any) -> None:
        """Enter (RTP8) or re-enter with `data`; resolves when the hub acknowledged it."""
        await self._presence_call("enter", data)

    async def update_presence(self, data: Any) -> None:
        """Replace this client's presence data (RTP9; enters if not yet present)."""
        await self._presence_call("update", data)

    async def leave_presence(self) -> None:
        """Leave the channel's presence (RTP10)."""
        await self._presence_call("leave", None)

    async def _presence_call(self, action: str, data: Any) -> None:
        if self._closed:
            raise RealtimeError(f"presence {action} on a released channel")
        try:
            presence = self.channel.presence
        except KeyError as exc:
            raise RealtimeError("realtime connection is closed") from exc
        try:
            await getattr(presence, action)(data)
        except AblyException as exc:
            raise RealtimeError(f"presence {action} failed: {exc.code} {exc.message}") from exc

    def presence_members(self) -> list[PresenceEntry]:
        """The members the SDK holds now (no waiting for a SYNC; see `presence_synced`)."""
        try:
            members = self.channel.presence.members.list()
        except KeyError:
            return []
        return [PresenceEntry(m.client_id, m.connection_id, m.data, _epoch_ms(m.timestamp))
                for m in members]

    @property
    def presence_synced(self) -> bool:
        """True once the attach-time presence SYNC completed (RTP18, RTP19a)."""
        try:
            return bool(self.channel.presence.sync_complete)
        except KeyError:
            return False

    async def subscribe_presence(self, listener: PresenceListener) -> Callable[[], None]:
        """Call `listener()` after every presence event on this channel (RTP6); returns
        the function that unsubscribes it."""

        def on_event(_message: Any) -> None:
            listener()

        presence = self.channel.presence
        try:
            await presence.subscribe(on_event)
        except AblyException as exc:
            raise RealtimeError(f"presence subscribe failed: {exc.code} {exc.message}") from exc

        def unsubscribe() -> None:
            presence.unsubscribe(on_event)

        return unsubscribe


def _epoch_ms(stamp: Any) -> int:
    """The SDK keeps presence timestamps as naive UTC datetimes (types/presence.py)."""
    if not isinstance(stamp, datetime):
        return 0
    return int((stamp - _EPOCH).total_seconds() * 1000)


class SyncConnection:
    """ONE AblyRealtime per process, shared by every window."""

    def __init__(
        self,
        *,
        endpoint: str,
        token_provider: TokenProvider,
        on_state: StateListener | None = None,
        on_continuity_lost: ContinuityListener | None = None,
        channel_grace_s: float = CHANNEL_RELEASE_GRACE_S,
        use_binary_protocol: bool = True,
        disconnected_retry_ms: int = DISCONNECTED_RETRY_MS,
        suspended_retry_ms: int = SUSPENDED_RETRY_MS,
        request_timeout_ms: int = REALTIME_REQUEST_TIMEOUT_MS,
        timer: Timer | None = None,
        flap_limit: int = FLAP_LIMIT,
        flap_window_s: float = FLAP_WINDOW_S,
        flap_pause_s: float = FLAP_PAUSE_S,
    ) -> None:
        # The silence check compares `timer.wall()` with the SDK's own activity stamps (epoch
        # milliseconds): in production both are the system clock.
        self._timer: Timer = timer or SYSTEM_TIMER
        self._token_provider = token_provider
        self._on_state = on_state
        self._on_continuity_lost = on_continuity_lost
        self._grace_s = channel_grace_s
        self._channels: dict[str, _Channel] = {}
        self._tasks = TaskOwner("realtime connection", logger=log, timer=self._timer)
        self.state = "initialized"
        self.reason = ""
        self.token_requests = 0
        self.undecodable = 0  # messages taken out of frames before the SDK could drop them
        self.sdk_errors: Counter[str] = Counter()  # background SDK failures, by kind and code
        self._closed = False
        self._flap_limit = flap_limit
        self._flap_window_s = flap_window_s
        self._flap_pause_s = flap_pause_s
        self._next_pause_s = flap_pause_s
        self._drops: list[float] = []
        self._connected_at: float | None = None
        self._paused = False
        self.pauses = 0  # how often an unstable link was paused
        self.client = AblyRealtime(
            auth_callback=self._auth_callback,
            use_binary_protocol=use_binary_protocol,
            disconnected_retry_timeout=disconnected_retry_ms,
            suspended_retry_timeout=suspended_retry_ms,
            realtime_request_timeout=request_timeout_ms,
            **ably_options(endpoint),
        )
        self.client.connection.on(self._on_connection_state)
        self._hook_channel_messages()
        self._tasks.spawn(self._watch_silence(), name="realtime silence watch")

    # ------------------------------------------------------------------ auth
    async def _auth_callback(self, token_params: dict[str, Any]) -> dict[str, Any]:
        # Must be a coroutine function: ably 3.1.4 treats a plain function's result as an
        # error (docs/realtime-protocol.md §8).
        self.token_requests += 1
        return await self._token_provider()

    @property
    def client_id(self) -> str | None:
        client_id: str | None = self.client.auth.client_id
        return client_id

    @property
    def connection_id(self) -> str | None:
        return self.client.connection.connection_manager.connection_id

    # ------------------------------------------------------------------ state
    def _on_connection_state(self, change: ConnectionStateChange) -> None:
        state = str(getattr(change.current, "value", change.current))
        reason = ""
        if change.reason is not None:
            reason = f"{getattr(change.reason, 'code', '')} {getattr(change.reason, 'message', '')}"
        if self._paused and state in ("closing", "closed"):
            return  # our own pause (`_pause` reported it)
        previous = self.state
        self.state, self.reason = state, reason.strip()
        log.info("realtime connection %s %s", state, self.reason)
        if state == "connected" and previous != "connected":
            self._connected_at = self._timer.monotonic()
        elif previous == "connected" and state in ("disconnected", "suspended", "connecting"):
            self._note_drop()
        if self._on_state is not None:
            self._on_state(state, self.reason)

    def _note_drop(self) -> None:
        """An established link dropped: past the limit within the window, pause."""
        now = self._timer.monotonic()
        if self._connected_at is not None and now - self._connected_at >= self._flap_window_s:
            # It had been up for a whole window: a dropped link, not an unstable one.
            self._drops.clear()
            self._next_pause_s = self._flap_pause_s
        self._drops = [t for t in self._drops if now - t < self._flap_window_s] + [now]
        if len(self._drops) >= self._flap_limit and not self._paused and not self._closed:
            pause_s, self._next_pause_s = (self._next_pause_s,
                                           min(self._next_pause_s * 2, FLAP_PAUSE_CAP_S))
            self._paused = True
            self.pauses += 1
            self._tasks.spawn(self._pause(pause_s), name="realtime pause after flapping")

    async def _pause(self, pause_s: float) -> None:
        log.warning("realtime link dropped %d times within %.0f s: reconnecting in %.0f s",
                    len(self._drops), self._flap_window_s, pause_s)
        self.state, self.reason = "disconnected", f"unstable link: retrying in {pause_s:.0f} s"
        if self._on_state is not None:
            self._on_state(self.state, self.reason)
        try:
            await wait_for(self._timer, self.client.connection.close(), CLOSE_TIMEOUT_S)
        except (AblyException, TimeoutError) as exc:
            log.info("closing the unstable link: %s", type(exc).__name__)
        await self._timer.sleep(pause_s)
        self._drops.clear()
        self._paused = False
        if self._closed:
            return
        self.client.connection.connect()
        # Connecting after CLOSED resets every channel (RTN11b): attach the leased ones again;
        # each comes back without continuity, so the workstation catches up (RTL2f).
        for entry in list(self._channels.values()):
            self._tasks.spawn(self._reattach(entry), name="realtime channel re-attach")

    async def _reattach(self, entry: _Channel) -> None:
        try:
            await entry.channel.attach()
        except AblyException as exc:
            log.warning("re-attaching %s failed (%s); the SDK retries", entry.name, exc.code)

    def _link_silent(self) -> bool:
        """True once the SDK's idle timer has given the current transport up (RTN23a)."""
        transport = getattr(self.client.connection.connection_manager, "transport", None)
        last_ms: float | None = getattr(transport, "last_activity", None)
        limit_ms: float | None = getattr(transport, "max_idle_interval", None)
        if not last_ms or not limit_ms:
            return False
        return self._timer.wall() * 1000 - last_ms > limit_ms + SILENCE_MARGIN_MS

    async def _watch_silence(self) -> None:
        # RTN23a: no activity for maxIdleInterval + realtimeRequestTimeout means the transport
        # is gone. ably 3.1.4's idle timer decides that on time but reports DISCONNECTED only
        # after awaiting the websocket close handshake, which on a silently dead link waits
        # the websockets close_timeout (10 s; websockettransport.py disconnect -> dispose).
        # Report the state the SDK has already decided on, from the numbers its timer uses,
        # so the status and the polling fallback do not wait those extra 10 s.
        while True:
            await self._timer.sleep(SILENCE_CHECK_S)
            if self.state == "connected" and self._link_silent():
                self.state, self.reason = "disconnected", "80003 no activity from realtime"
                log.info("realtime link silent past maxIdleInterval: treating it as dropped")
                self._note_drop()
                if self._on_state is not None:
                    self._on_state(self.state, self.reason)

    def _channel_state_listener(self, name: str) -> Callable[[ChannelStateChange], None]:
        def on_change(change: ChannelStateChange) -> None:
            entry = self._channels.get(name)
            if entry is None or change.current != ChannelState.ATTACHED:
                return
            if entry.attached_once and not change.resumed:
                # RTL2f: ATTACHED without RESUMED means messages may have been missed while
                # the channel was away (new connection, hub restart): catch up from FHIR.
                log.info("channel %s re-attached without continuity", name)
                if self._on_continuity_lost is not None:
                    self._on_continuity_lost(name)
            entry.attached_once = True

        return on_change

    # ------------------------------------------------------------------ SDK hooks
    def _hook_channel_messages(self) -> None:
        """Route every channel frame through `_screen_messages` first (one instance
        attribute of this client's `Channels`; the connection manager calls it per frame)."""
        channels = self.client.channels
        deliver = channels._on_channel_message

        def on_channel_message(msg: dict[str, Any]) -> None:
            if msg.get("action") == ProtocolMessageAction.MESSAGE:
                msg = self._screen_messages(msg)
            deliver(msg)

        channels._on_channel_message = on_channel_message  # type: ignore[method-assign]

    def _screen_messages(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The frame without its undecodable messages, each reported to the listeners."""
        wires = msg.get("messages")
        good = [w for w in wires if decodes(w)] if isinstance(wires, list) else []
        bad = len(wires) - len(good) if isinstance(wires, list) else 1
        if not bad:
            return msg
        self.undecodable += bad
        name = msg.get("channel")
        log.warning("realtime: %d undecodable message(s) on %s taken out of a frame", bad, name)
        if isinstance(name, str) and name in self._channels:
            dispatch = self._dispatcher(name)
            for _ in range(bad):
                dispatch(UndecodableMessage())
        return {**msg, "messages": good}

    def _guard_background_attach(self, name: str, channel: Any) -> None:
        """Replace `channel.attach` so an attach nobody awaits cannot fail unseen."""
        attach = channel.attach  # the SDK's own bound method

        async def guarded_attach() -> None:
            try:
                await attach()
            except AblyException as exc:
                task = asyncio.current_task()
                started_here = task is not None and getattr(
                    task.get_coro(), "cr_code", None) is guarded_attach.__code__
                if not started_here:
                    raise  # a caller awaits this attach: the failure is theirs to handle
                # The SDK created a task for this very coroutine and keeps no reference to
                # it; the channel stays suspended and the SDK retries it (RTL13b).
                self.sdk_errors[f"background_attach:{exc.code}"] += 1
                log.warning("realtime channel %s: background attach failed (%s %s)",
                            name, exc.code, exc.message)

        channel.attach = guarded_attach

    # ------------------------------------------------------------------ channels
    def channel(self, name: str) -> Any:
        return self._channels[name].channel

    async def acquire(self, name: str, listener: MessageListener | None = None) -> ChannelLease:
        """Lease channel `name` (attaching it if needed); `listener` gets each Message."""
        if self._closed:
            raise RuntimeError("realtime connection is closed")
        entry = self._channels.get(name)
        if entry is None:
            channel = self.client.channels.get(name)
            self._guard_background_attach(name, channel)
            entry = _Channel(name, channel)
            self._channels[name] = entry
            channel.on(self._channel_state_listener(name))
            await channel.subscribe(self._dispatcher(name))
        elif entry.release_timer is not None:
            entry.release_timer.cancel()
            entry.release_timer = None
        entry.leases += 1
        if listener is not None:
            entry.listeners.append(listener)
        return ChannelLease(self, name, listener)

    def _dispatcher(self, name: str) -> Callable[[Any], None]:
        def dispatch(message: Any) -> None:
            entry = self._channels.get(name)
            for listener in list(entry.listeners if entry else ()):
                try:
                    listener(message)
                except Exception:
                    log.exception("message listener failed on %s", name)

        return dispatch

    def _release(self, name: str, listener: MessageListener | None) -> None:
        entry = self._channels.get(name)
        if entry is None:
            return
        if listener is not None and listener in entry.listeners:
            entry.listeners.remove(listener)
        entry.leases -= 1
        if entry.leases <= 0 and not self._closed:
            entry.release_timer = self._timer.call_later(
                self._grace_s, lambda: self._detach_now(name))

    def _detach_now(self, name: str) -> None:
        entry = self._channels.get(name)
        if entry is None or entry.leases > 0:
            return
        del self._channels[name]
        self._tasks.spawn(self._detach(entry), name="realtime channel detach")

    async def _detach(self, entry: _Channel) -> None:
        try:
            entry.channel.unsubscribe()
            await entry.channel.detach()
            self.client.channels.release(entry.name)
        except Exception:
            log.exception("detaching %s failed", entry.name)

    @property
    def channel_names(self) -> list[str]:
        return list(self._channels)

    # ------------------------------------------------------------------ lifetime
    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for entry in self._channels.values():
            if entry.release_timer is not None:
                entry.release_timer.cancel()
        self._channels.clear()
        await self._tasks.aclose()
        await self.client.close()
