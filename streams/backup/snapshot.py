"""The JetStream snapshot and restore protocol, spoken over nats-py (which has no API for it).

The bytes are an opaque, server-made S2 archive: this code only moves them, acks them and reads
the status that ends a snapshot. See shared/reference/snapshot-protocol.md.
"""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats.aio.client
import nats.errors

SNAPSHOT_CHUNK = 128 * 1024
RESTORE_CHUNK = 64 * 1024
CHUNK_TIMEOUT = 10.0       # seconds without a snapshot chunk before giving up (the server gives up after ~5)
RESTORE_REPLY_TIMEOUT = 10.0
RESTORE_FINISH_TIMEOUT = 120.0


class SnapshotError(RuntimeError):
    """A snapshot or restore failed; the message says where and why."""


@dataclass(frozen=True)
class SnapshotMeta:
    """What `backup.json` holds: the stream's config and state when the snapshot began."""
    config: dict
    state: dict

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "state": self.state}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotMeta:
        try:
            doc = json.loads(text)
        except ValueError:
            raise SnapshotError("backup.json is not JSON; is this a `nats stream backup` folder?") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("state"), dict) \
                or not doc["config"].get("name"):
            raise SnapshotError("backup.json has no stream config and state; is this a `nats stream backup` folder?")
        return cls(doc["config"], doc["state"])


async def _api(nc: nats.aio.client.Client, subject: str, body: dict, timeout: float = 10.0) -> dict:
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    data = json.loads(msg.data)
    if "error" in data:
        err = data["error"]
        raise SnapshotError(f"{err.get('description')} (JetStream error {err.get('err_code')}, {subject})")
    return data


# A file store takes one snapshot at a time: before 2.11's v2 snapshots the server refuses a second one while the
# first runs (nats-server 2.10 filestore.go Snapshot, `fs.sips > 0` -> ErrStoreSnapshotInProgress, JetStream error
# 10064; measured on 2.10.26; 2.15.1 streams both). Two backups started together wait for each other instead.
SNAPSHOT_IN_PROGRESS = "snapshot in progress"
SNAPSHOT_WAIT = 600.0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _snapshot_request(nc, stream: str, body: dict, *, wait: float = SNAPSHOT_WAIT, say=_say) -> dict:
    """The SNAPSHOT request, asked again while the server is busy with another snapshot of the stream."""
    loop = asyncio.get_running_loop()
    deadline, delay, said = loop.time() + wait, 0.2, False
    while True:
        try:
            return await _api(nc, f"$JS.API.STREAM.SNAPSHOT.{stream}", body)
        except SnapshotError as exc:
            if SNAPSHOT_IN_PROGRESS not in str(exc) or loop.time() + delay > deadline:
                raise
            if not said:
                say(f"another snapshot of {stream!r} is running on the server; waiting for it")
                said = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def snapshot(nc: nats.aio.client.Client, stream: str,
                   write: Callable[[bytes], Awaitable[None] | None], *, consumers: bool = True,
                   check_msgs: bool = False) -> SnapshotMeta:
    """Snapshot `stream`, handing each chunk to `write` in order (awaited before the chunk is acked,
    so a slow sink slows the server down instead of filling memory). Returns config and state."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue = asyncio.Queue()

    async def on_msg(msg):
        await queue.put(msg)
    sub = await nc.subscribe(inbox, cb=on_msg)  # interest first: the server waits only ~2 s for it
    try:
        body = {"deliver_subject": inbox, "no_consumers": not consumers, "chunk_size": SNAPSHOT_CHUNK}
        if check_msgs:
            body["jsck"] = True
        reply = await _snapshot_request(nc, stream, body)
        meta = SnapshotMeta(reply["config"], reply["state"])
        while True:
            msg = await _next_chunk(nc, queue, stream)
            headers = msg.headers or {}
            status = headers.get("Status") or headers.get("status")
            if not msg.data and not msg.reply:
                if status in (None, "", "204"):
                    return meta
                raise SnapshotError(f"snapshot of {stream!r} failed on the server: {status} "
                                    f"{headers.get('Description', '')}".strip())
            if status and status != "204":
                raise SnapshotError(f"snapshot of {stream!r} failed on the server: {status} "
                                    f"{headers.get('Description', '')}".strip())
            result = write(msg.data)
            if asyncio.iscoroutine(result):
                await result
            if msg.reply:
                await nc.publish(msg.reply, b"")  # flow control: exactly the reply subject, empty body
    finally:
        if not nc.is_closed:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass


async def _next_chunk(nc, queue: asyncio.Queue, stream: str):
    """The next snapshot message; fails fast when the connection is gone, else after CHUNK_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHUNK_TIMEOUT
    while True:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation (Ctrl-C)
            # that arrives as the queue yields an item, and the backup would run on to the end.
            async with asyncio.timeout(min(0.5, max(0.01, deadline - loop.time()))):
                return await queue.get()
        except TimeoutError:
            if nc.is_closed or not nc.is_connected:
                raise SnapshotError(f"snapshot of {stream!r}: lost the connection to the server") from None
            if loop.time() >= deadline:
                raise SnapshotError(f"snapshot of {stream!r}: no data from the server for {CHUNK_TIMEOUT:g}s "
                                    "(server gone or overloaded)") from None


def restored_replicas(backed_up: int, clustered: bool) -> int:
    """The replicas a restored stream gets: as backed up, except on a standalone server, which refuses more than
    one ("replicas > 1 not supported in non-clustered mode", 10074, measured on 2.15.1 restoring an R3 backup). The
    request's config is the restored stream's identity (nats-server server/stream.go RestoreStream: "The cfg passed
    in will be the new identity for the stream"), so R1 there keeps every message."""
    return backed_up if clustered else min(backed_up, 1)


async def restore(nc: nats.aio.client.Client, meta: SnapshotMeta, chunks: AsyncIterator[bytes],
                  *, name: str | None = None, subjects: list[str] | None = None, replicas: int | None = None) -> dict:
    """Restore a snapshot as stream `name` (default: the backed-up name), with `replicas` when given. Returns the
    stream info.

    On any failure the half-restored stream is removed again and SnapshotError is raised."""
    config = dict(meta.config)
    if name:
        config["name"] = name
    if subjects:
        config["subjects"] = list(subjects)
    if replicas is not None:
        config["num_replicas"] = replicas
    target = config["name"]
    reply = await _api(nc, f"$JS.API.STREAM.RESTORE.{target}", {"config": config, "state": meta.state})
    deliver = reply["deliver_subject"]
    try:
        async for chunk in chunks:
            for start in range(0, len(chunk), RESTORE_CHUNK):
                piece = chunk[start:start + RESTORE_CHUNK]
                r = await nc.request(deliver, piece, timeout=RESTORE_REPLY_TIMEOUT)
                _raise_on_restore_error(target, r.data)
        r = await nc.request(deliver, b"", timeout=RESTORE_FINISH_TIMEOUT)
        _raise_on_restore_error(target, r.data)
        info = json.loads(r.data)
        return info
    except BaseException as exc:
        await _remove_half_restored(nc, target)
        if isinstance(exc, SnapshotError):
            raise
        if isinstance(exc, (asyncio.TimeoutError, nats.errors.Error)):
            raise SnapshotError(f"restore of {target!r} failed: {type(exc).__name__}: {exc}") from exc
        raise


def _raise_on_restore_error(stream: str, data: bytes) -> None:
    if not data:
        return
    if data.startswith(b"-ERR"):
        raise SnapshotError(f"restore of {stream!r} failed: {data.decode(errors='replace').strip()}")
    try:
        doc = json.loads(data)
    except ValueError:
        return
    if isinstance(doc, dict) and "error" in doc:
        raise SnapshotError(f"restore of {stream!r} failed: {doc['error'].get('description')} "
                            f"(JetStream error {doc['error'].get('err_code')})")


async def _remove_half_restored(nc: nats.aio.client.Client, stream: str) -> None:
    try:
        await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
    except Exception:  # the server may be gone too; nothing more to do here
        pass
