"""Backup, restore, prune and verify: the snapshot protocol (`streams.backup.snapshot`) joined to the S3
layout (`streams.backup.s3`). Each operation either completes or leaves nothing half-made:
an interrupted backup has no backup.json (invisible), a failed restore removes the stream it began.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors

from streams.backup.folder import FolderStore
from streams.backup.s3 import BackupRef, BackupStore, new_backup_id
from streams.backup.snapshot import SnapshotError, restore, restored_replicas, snapshot
from streams.connection import close_quietly, in_a_cluster

# Where backups go: an S3 bucket, or a plain folder in the nats CLI's layout (the same operations).
Store = BackupStore | FolderStore

Progress = Callable[[int], None]


class BackupError(RuntimeError):
    """An operation refused or failed; the message names the stream and what to do."""


class MemoryStreamSkipped(BackupError):
    """Memory-storage streams cannot be snapshotted by the server."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop now, clean up, exit 128 + the signal. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` carries on with the next stream."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


async def stream_info(nc, name: str) -> dict | None:
    msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=10)
    data = json.loads(msg.data)
    if "error" in data:
        if data["error"].get("err_code") == 10059:
            return None
        raise BackupError(f"stream {name!r}: {data['error'].get('description')}")
    return data


async def stream_names(nc) -> list[str]:
    msg = await nc.request("$JS.API.STREAM.NAMES", json.dumps({"offset": 0}).encode(), timeout=10)
    return json.loads(msg.data).get("streams") or []


async def backup_stream(nc, store: Store, stream: str, *, progress: Progress | None = None,
                        backup_id: str | None = None) -> BackupRef:
    info = await stream_info(nc, stream)
    if info is None:
        raise BackupError(f"stream {stream!r} does not exist on the server; check the name (python -m streams "
                          "list-backups shows what was backed up before)")
    if info["config"].get("storage") == "memory":
        raise MemoryStreamSkipped(f"stream {stream!r} uses memory storage, which the server cannot snapshot; "
                                  "skipped (it holds short-lived data by design)")
    writer = store.writer(stream, backup_id or new_backup_id())

    async def write(chunk: bytes) -> None:
        await writer.write(chunk)
        if progress:
            progress(len(chunk))
    try:
        meta = await snapshot(nc, stream, write)
    except BaseException:
        writer.abort()
        raise
    completing = asyncio.get_running_loop().run_in_executor(None, writer.complete, meta)
    try:
        return await asyncio.shield(completing)
    except BaseException:
        # Stopped while backup.json was being written: let that finish, then take the backup back, so
        # that a stopped backup never stays visible.
        try:
            store.delete(await completing)
        except BaseException:
            writer.abort()
        raise


async def restore_backup(nc, store: Store, ref: BackupRef, *, name: str | None = None,
                         subjects: list[str] | None = None, progress: Progress | None = None, say=None) -> dict:
    """Restore a backup; a replicated stream's backup into a standalone server comes back R1 (said through `say`)."""
    meta = store.read_meta(ref)
    backed_up = meta.config.get("num_replicas", 1) or 1
    replicas = restored_replicas(backed_up, in_a_cluster(nc))
    if replicas != backed_up and say:
        say(f"{meta.config['name']} was backed up at R{backed_up}; this server runs standalone, so it is restored "
            "at R1 (every message and consumer as backed up)")
    target = name or meta.config["name"]
    if await stream_info(nc, target) is not None:
        raise BackupError(f"stream {target!r} already exists on the server; refusing to restore over it. Restore "
                          "under another name with other subjects (--as NAME --subjects 'restored.>'), or remove "
                          "the stream first if you really mean to replace it")
    if name and name != meta.config["name"] and not subjects:
        raise BackupError(f"restoring {meta.config['name']!r} as {name!r} needs other subjects too (--subjects), "
                          "or the two streams would capture the same messages")

    async def chunks():
        async for chunk in store.chunks(ref):
            if progress:
                progress(len(chunk))
            yield chunk
    try:
        return await restore(nc, meta, chunks(), name=name, subjects=subjects, replicas=replicas)
    except SnapshotError as exc:
        raise BackupError(f"{exc}; the partly restored stream {target!r} was removed") from None


@dataclass(frozen=True)
class PrunePlan:
    delete: tuple[BackupRef, ...]
    keep: tuple[BackupRef, ...]


def plan_prune(backups: list[BackupRef], *, keep: int, max_age: timedelta | None,
               now: datetime | None = None) -> PrunePlan:
    """Per stream: the newest `keep` backups (by the server's account of the stream, `BackupRef.order`)
    always stay; older ones go when older than `max_age` (or, without --max-age, go anyway)."""
    now = now or datetime.now(UTC)
    delete: list[BackupRef] = []
    kept: list[BackupRef] = []
    for stream in sorted({b.stream for b in backups}):
        mine = sorted((b for b in backups if b.stream == stream), key=lambda b: b.order, reverse=True)
        for i, b in enumerate(mine):
            old = max_age is None or now - b.taken_at > max_age
            (delete if i >= keep and old else kept).append(b)
    return PrunePlan(tuple(delete), tuple(kept))


@dataclass
class VerifyReport:
    stream: str
    backup_id: str
    checks: list[tuple[str, object, object]] = field(default_factory=list)  # (what, expected, found)

    @property
    def ok(self) -> bool:
        return all(expected == found for _, expected, found in self.checks)


async def verify_backup(store: Store, ref: BackupRef, *, progress: Progress | None = None) -> VerifyReport:
    """Restore the backup into a scratch local nats-server (never the live one) and compare what the
    server rebuilt with backup.json's state."""
    from stack.settings import load_settings
    from streams.local.server import local_layout, start_server

    meta = store.read_meta(ref)
    report = VerifyReport(ref.stream, ref.id)
    with tempfile.TemporaryDirectory(prefix="nats-verify-") as tmp:
        settings = load_settings({"jetstream": {"memoryStore": "256Mi", "fileStore": "1Ti"}})
        with start_server(settings, local_layout(Path(tmp), server_name="backup-verify"), Path(tmp)) as scratch:
            nc = await nats.connect(scratch.client_url)
            try:
                await restore_backup(nc, store, ref, progress=progress)
                info = await stream_info(nc, meta.config["name"])
                consumers = await _consumer_states(nc, meta.config["name"])
            finally:
                await close_quietly(nc)
    if info is None:
        raise BackupError(f"verify of {ref.stream!r}: the scratch server has no stream after the restore")
    expected, found = meta.state, info["state"]
    for key in ("messages", "bytes", "first_seq", "last_seq", "consumer_count"):
        report.checks.append((key, expected.get(key, 0), found.get(key, 0)))
    report.checks.append(("consumers", expected.get("consumer_count", 0), len(consumers)))
    return report


async def _consumer_states(nc, stream: str) -> dict:
    msg = await nc.request(f"$JS.API.CONSUMER.LIST.{stream}", json.dumps({"offset": 0}).encode(), timeout=10)
    return {c["name"]: c for c in json.loads(msg.data).get("consumers") or []}

