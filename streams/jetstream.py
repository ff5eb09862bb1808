"""The thin JetStream client: the JSON API over one nats-py connection, nothing else.

nats-py's dataclasses drop fields they do not know, so configs travel as plain JSON dicts here
(full fidelity). Create and update requests ask for pedantic mode: the server then refuses a config
rather than silently adjusting it, so what is declared is what runs.

Each calling thread (the provider's gRPC workers: pulumi/dynamic/__main__.py serves with a pool of 4)
gets its own client: an event loop and a connection that the thread runs only while it waits for its
own call (`JetStreamClient.run`). No hop to a loop thread and back per request: that hop cost ~95 us,
a quarter of a create's round trip on a local server (bench/provider_apply.py). Between calls the
connection is idle; nats-py answers the server's pings and reconnects when the loop runs again.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from stack.urls import redact_url
from streams.connection import ConnectionSettings, is_auth_error

T = TypeVar("T")

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
STREAM_NAME_IN_USE = 10058   # create: a stream of that name exists with another config
INSUFFICIENT_STORAGE = 10047  # create: its maxBytes does not fit what the store has left unreserved
CONSUMER_EXISTS = 10148      # create action: a consumer of that name exists with another config
CONSUMER_MISSING = 10149     # update action: no consumer of that name
STREAM_SUBJECT_OVERLAP = 10065
NO_MESSAGE_FOUND = 10037     # MSG.GET: no message at or after what was asked
REQUEST_TIMEOUT = 10.0


class JetStreamApiError(RuntimeError):
    """The server answered a JetStream API request with an error."""

    def __init__(self, subject: str, error: dict):
        self.code = error.get("code")
        self.err_code = error.get("err_code")
        self.description = error.get("description", "")
        super().__init__(f"{self.description} (JetStream error {self.err_code}, {subject})")


class NatsUnavailable(RuntimeError):
    """NATS or JetStream could not be reached within the ready timeout (`refused`: it refused the credentials)."""

    def __init__(self, message: str, *, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class JetStreamClient:
    def __init__(self, settings: ConnectionSettings):
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._nc: Any = None   # a nats-py Client once connected
        self._connect_lock: asyncio.Lock | None = None

    # -- running coroutines, in the thread this client belongs to
    def run(self, fn: Callable[[JetStreamClient], Awaitable[T]]) -> T:
        return self._loop.run_until_complete(fn(self))

    def close(self) -> None:
        """Close the connection; call when no `run` is in progress (the loop is not running then)."""
        async def _close():
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()
        try:
            self._loop.run_until_complete(asyncio.wait_for(_close(), timeout=5))
        except Exception:  # the server may be gone mid-reconnect: closing is best effort
            pass
        finally:
            self._loop.close()

    # -- connection
    def _unavailable(self, what: str, last: BaseException | None) -> NatsUnavailable:
        s = self.settings
        if last is not None and is_auth_error(last):
            return NatsUnavailable(
                f"NATS at {redact_url(s.url or '')} (from {s.url_source}) refused the credentials ({last}). Check "
                "homelab-nats:natsUser and natsPassword (or natsToken, natsCredentials, natsNkeySeed): `pulumi config "
                "set --secret natsPassword …`", refused=True)
        return NatsUnavailable(
            f"{what} at {redact_url(s.url or '')} (from {s.url_source}) within {s.ready_timeout:g}s"
            f"{f' (last error: {type(last).__name__}: {last})' if last else ''}. If the server is not reachable "
            "from here, forward it (`kubectl port-forward -n nats svc/nats 4222`) and set NATS_URL="
            "nats://127.0.0.1:4222, or set homelab-nats:natsUrl")

    async def _connection(self, deadline: float):
        if self._nc is not None and not self._nc.is_closed:
            return self._nc  # the common case, without the lock
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._nc is not None and not self._nc.is_closed:
                return self._nc
            url = self.settings.require_url()
            last: BaseException | None = None
            delay = 0.1
            connecting = True

            async def on_error(exc: Exception) -> None:
                # nats-py awaits this inside its first-connect retry loop (nats/aio/client.py, connect):
                # raising here ends that loop at once on refused credentials instead of retrying until
                # the deadline. Later errors are the reconnect logic's to handle, quietly.
                if connecting and is_auth_error(exc):
                    raise exc

            while time.monotonic() < deadline:
                try:
                    # nats-py keeps retrying the first connect when reconnects are unlimited: bound it here.
                    self._nc = await asyncio.wait_for(nats.connect(
                        [part.strip() for part in url.split(",")], connect_timeout=max(0.5, min(2.0, deadline - time.monotonic())),
                        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                        error_cb=on_error, name="homelab-nats provider", **self.settings.connect_options()),
                        timeout=max(0.1, deadline - time.monotonic()))
                    connecting = False
                    return self._nc
                except Exception as exc:  # connection refused, DNS, TLS: retried until the deadline
                    last = exc
                    if is_auth_error(exc):
                        break
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 2.0)
            raise self._unavailable("could not connect to NATS", last)

    async def request(self, subject: str, body: dict | None = None, *, retry_until_ready: bool = True) -> dict:
        """One JetStream API request; retried while JetStream is not yet answering (fresh deploy, restart)."""
        payload = json.dumps(body).encode() if body is not None else b""
        return await self.publish(subject, payload, retry_until_ready=retry_until_ready)

    async def publish(self, subject: str, payload: bytes, *, headers: dict | None = None,
                      retry_until_ready: bool = True) -> dict:
        """A request with a raw payload whose answer is JetStream JSON (an API call, or a publish into a stream and
        its ack); an error in the answer raises JetStreamApiError."""
        deadline = time.monotonic() + self.settings.ready_timeout
        last: BaseException | None = None
        delay = 0.1
        while True:
            nc = await self._connection(deadline)
            try:
                msg = await nc.request(subject, payload, timeout=REQUEST_TIMEOUT, headers=headers)
                data = json.loads(msg.data) if msg.data else {}
                if "error" in data:
                    raise JetStreamApiError(subject, data["error"])
                return data
            except (TimeoutError, NoRespondersError, NatsTimeoutError, NatsError) as exc:
                if isinstance(exc, JetStreamApiError):
                    raise
                last = exc
            if not retry_until_ready or time.monotonic() >= deadline:
                raise self._unavailable("JetStream did not answer", last)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- streams
    async def stream_info(self, name: str) -> dict | None:
        try:
            return await self.request(f"$JS.API.STREAM.INFO.{name}")
        except JetStreamApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return None
            raise

    async def create_stream(self, config: dict) -> dict:
        return await self.request(f"$JS.API.STREAM.CREATE.{config['name']}", {**config, "pedantic": True})

    async def update_stream(self, config: dict) -> dict:
        return await self.request(f"$JS.API.STREAM.UPDATE.{config['name']}", {**config, "pedantic": True})

    async def stream_infos(self) -> list[dict]:
        """Every stream's info (config and state), all pages."""
        out: list[dict] = []
        while True:
            page = await self.request("$JS.API.STREAM.LIST", {"offset": len(out)})
            batch = page.get("streams") or []
            out.extend(batch)
            if not batch or len(out) >= page.get("total", 0):
                return out

    async def delete_stream(self, name: str) -> bool:
        try:
            await self.request(f"$JS.API.STREAM.DELETE.{name}")
            return True
        except JetStreamApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return False
            raise

    # -- consumers
    async def consumer_info(self, stream: str, name: str) -> dict | None:
        try:
            return await self.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}")
        except JetStreamApiError as exc:
            if exc.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                return None
            raise

    async def consumer_infos(self, stream: str) -> list[dict]:
        """Every consumer's info on a stream, all pages; [] when the stream is gone."""
        out: list[dict] = []
        while True:
            try:
                page = await self.request(f"$JS.API.CONSUMER.LIST.{stream}", {"offset": len(out)})
            except JetStreamApiError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    return []
                raise
            batch = page.get("consumers") or []
            out.extend(batch)
            if not batch or len(out) >= page.get("total", 0):
                return out

    async def put_consumer(self, stream: str, config: dict, action: str = "") -> dict:
        """action: "create" (fails if it exists differently), "update" (fails if missing), "" (either)."""
        name = config["durable_name"]
        body: dict[str, Any] = {"stream_name": stream, "config": config, "pedantic": True}
        if action:
            body["action"] = action
        return await self.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body)

    async def delete_consumer(self, stream: str, name: str) -> bool:
        try:
            await self.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
            return True
        except JetStreamApiError as exc:
            if exc.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                return False
            raise


_CLIENTS: dict[tuple[ConnectionSettings, int], JetStreamClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(settings: ConnectionSettings) -> JetStreamClient:
    """This thread's client for these settings (a connection per calling thread, at most the provider's
    worker count)."""
    key = (settings, threading.get_ident())
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = JetStreamClient(settings)
        return client


def close_all_clients() -> None:
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()
