"""`python -m streams backup | list-backups | restore | prune | verify`.

Exit codes a cron job can trust: 0 everything asked for was done; 1 something failed (the others
were still done, and each failure is printed); 2 the command itself was wrong (usage, config).
S3 comes from the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION) or --endpoint/--region; the keys are read from the environment
only (never flags, which other users can see in the process list) and are never printed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import nats.errors
from tqdm import tqdm

from stack.rules import is_server_owned
from stack.units import UnitError, parse_duration
from streams.backup.folder import FolderStore
from streams.backup.s3 import BackupStore, StoreError, s3_client
from streams.backup.service import (
    BackupError,
    Interrupted,
    MemoryStreamSkipped,
    backup_stream,
    plan_prune,
    restore_backup,
    stream_info,
    stream_names,
    verify_backup,
)
from streams.cli.target import NoTarget, s3_endpoint, target_from_args
from streams.connection import CannotConnect, close_quietly, connect_once, describe_failure

OK, FAILED, USAGE = 0, 1, 2


def _common(p: argparse.ArgumentParser, *, server: bool = True, folder: str | None = None) -> None:
    if folder:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--bucket", help="S3 bucket holding the backups")
        where.add_argument(f"--{folder}", dest="folder", type=Path, metavar="DIR",
                           help="a plain folder instead, in the `nats stream backup` layout (one stream: DIR "
                                "itself; several: DIR/STREAM/)")
    else:
        p.add_argument("--bucket", required=True, help="S3 bucket holding the backups")
    p.add_argument("--prefix", default="nats", help="key prefix inside the bucket (default: nats)")
    p.add_argument("--endpoint", help="S3 endpoint (default: AWS_ENDPOINT_URL, else the backups.endpoint of an explicit "
                                      "--stack; never assumed)")
    p.add_argument("--region", help="S3 region (default: AWS_REGION, else us-east-1)")
    p.add_argument("--stack", help="a stack whose cluster (and S3 store) to use: Pulumi.<STACK>.yaml; without it, "
                                   "--server, NATS_URL or the running make dev")
    if server:
        p.add_argument("--server", help="NATS URL (default: NATS_URL, else the running make dev of this checkout)")


def add_parsers(sub) -> None:
    p = sub.add_parser("backup", help="snapshot streams into S3", description=(
        "Snapshot each STREAM (consumers included) and upload it to "
        "s3://BUCKET/PREFIX/STREAM/TIMESTAMP/{stream.tar.s2,backup.json}, the `nats stream backup` layout. "
        "backup.json is written last, so an interrupted backup stays invisible. Memory streams are skipped."))
    p.add_argument("streams", nargs="*", metavar="STREAM")
    p.add_argument("--all", action="store_true", help="every file-backed stream on the server")
    _common(p, folder="to")
    p.set_defaults(run=cmd_backup)

    p = sub.add_parser("list-backups", help="list complete backups", description=(
        "List complete backups (those with backup.json), oldest first, with their size."))
    p.add_argument("stream", nargs="?", metavar="STREAM")
    _common(p, server=False)
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("restore", help="restore a stream from S3", description=(
        "Restore STREAM from its newest complete backup (or --at TIMESTAMP). Refuses if a stream of that name "
        "exists; restore beside it with --as NAME --subjects SUBJECT[,SUBJECT]. A failed restore removes the "
        "partly restored stream."))
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("--at", metavar="TIMESTAMP", help="which backup (as list-backups prints it)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="restore under another stream name")
    p.add_argument("--subjects", help="comma-separated subjects for the restored stream (with --as)")
    _common(p, folder="from")
    p.set_defaults(run=cmd_restore)

    p = sub.add_parser("prune", help="delete old backups", description=(
        "Per stream, keep the newest --keep backups; delete older ones that are also older than --max-age."))
    p.add_argument("--keep", type=int, required=True, help="newest backups to keep per stream (at least 1)")
    p.add_argument("--max-age", help="only delete backups older than this (nats CLI units: 14d, 2w, 36h)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    p.add_argument("--incomplete-older-than", default="1d", metavar="AGE",
                   help="also abort unfinished multipart uploads under the prefix begun before this (default 1d; "
                        "younger ones may be a backup still running)")
    _common(p, server=False)
    p.set_defaults(run=cmd_prune)

    p = sub.add_parser("verify", help="restore a backup into a scratch server and compare", description=(
        "Restore the backup into a scratch local nats-server (never the live one) and compare messages, bytes, "
        "first and last sequence and consumers with the state recorded in backup.json."))
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("--at", metavar="ID", help="which backup (default: the newest)")
    _common(p, server=False, folder="from")
    p.set_defaults(run=cmd_verify)


def _store(args, streams: int = 1):
    """The S3 store for --bucket, or the folder store for --to/--from DIR; says which on stderr."""
    if getattr(args, "folder", None) is not None:
        print(f"folder: {args.folder}", file=sys.stderr, flush=True)
        return FolderStore(args.folder, one_stream=streams == 1)
    try:
        endpoint = s3_endpoint(args.endpoint, dict(os.environ), args.stack)
    except NoTarget as exc:
        raise StoreError(str(exc)) from None
    print(f"S3: {endpoint}, bucket {args.bucket}", file=sys.stderr, flush=True)
    return BackupStore(s3_client(endpoint, args.region), args.bucket, args.prefix)


def _bar(desc: str, total: int | None = None) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=None, leave=False)


class _Stop:
    """Ctrl-C and SIGTERM during an async command: the first one cancels the command's task (and makes the
    next progress callback raise, in case a cancellation gets lost), so that cleanup runs and the command
    exits 128 + the signal number without a traceback."""

    def __init__(self, what: str):
        self.what = what   # what the stop leaves behind, said after "stopped by SIGxxx: "
        self.signum: int | None = None
        self.task: asyncio.Task | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def progress(self, update):
        def call(n: int) -> None:
            self.check()
            update(n)
        return call

    def _on_signal(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            if self.task is not None:
                self.task.cancel()

    def run(self, coro_fn) -> int:
        async def main() -> int:
            loop = asyncio.get_running_loop()
            self.task = asyncio.current_task()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
            try:
                return await coro_fn()
            except (asyncio.CancelledError, Interrupted):
                if self.signum is None:
                    raise
                return 128 + self.signum
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
        code = asyncio.run(main())
        if self.signum is not None:
            print(f"stopped by {signal.Signals(self.signum).name}: {self.what}", file=sys.stderr)
            return 128 + self.signum
        return code


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _warn_skipped(store: BackupStore) -> None:
    """What the last listing skipped (folders that are not backups), one line each."""
    for warning in store.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    store.warnings = []


def cmd_backup(args) -> int:
    if not args.streams and not args.all:
        _fail("name one or more streams, or --all")
        return USAGE
    if not _announce_target(args):
        return USAGE
    try:
        store = _store(args, streams=0 if args.all else len(args.streams))
        if isinstance(store, BackupStore):
            store.check_bucket()
    except StoreError as exc:
        _fail(str(exc))
        return FAILED
    stop = _Stop("the backup in progress was abandoned and nothing of it kept (its multipart upload aborted, or "
                 "its files removed; no backup.json written)")
    return stop.run(lambda: _backup_all(args, store, stop))


def _announce_target(args) -> bool:
    """Resolve the NATS server (streams/cli/target.py) and say which it is, first; False when none is named."""
    try:
        args.target = target_from_args(args)
    except NoTarget as exc:
        _fail(str(exc))
        return False
    print(args.target.line(), file=sys.stderr, flush=True)
    return True


async def _connect(args):
    """The NATS connection for a command, or None after saying why (fail fast: no reconnects)."""
    try:
        return await connect_once(args.target.nats_url)
    except CannotConnect as exc:
        _fail(str(exc))
        return None


async def _backup_all(args, store: BackupStore, stop: _Stop) -> int:
    nc = await _connect(args)
    if nc is None:
        return FAILED
    status = OK
    try:
        names = list(args.streams)
        if args.all:   # the server's own MQTT streams only when named (stack/rules.py is_server_owned)
            found = await stream_names(nc)
            skipped = [n for n in found if is_server_owned(n) and n not in names]
            names += [n for n in found if n not in names and n not in skipped]
            if skipped:
                print(f"--all leaves out the server's own streams {', '.join(skipped)} (MQTT sessions and retained "
                      "messages, which it makes again); name one to back it up", file=sys.stderr)
        for name in names:
            try:
                info = await stream_info(nc, name)
            except Exception as exc:
                _fail(f"backup of {name!r} failed: {describe_failure(nc, exc)}")
                status = FAILED
                continue
            total = info["state"].get("bytes") if info else None
            with _bar(f"backup {name}", total) as bar:
                try:
                    ref = await backup_stream(nc, store, name, progress=stop.progress(bar.update))
                except MemoryStreamSkipped as exc:
                    print(f"skipped: {exc}")
                    continue
                except (BackupError, StoreError) as exc:
                    _fail(f"backup of {name!r} failed: {exc}")
                    status = FAILED
                    continue
                except Exception as exc:
                    _fail(f"backup of {name!r} failed: {describe_failure(nc, exc)}")
                    status = FAILED
                    continue
            print(f"{store.url(ref)} ({ref.size} bytes)")
    finally:
        await close_quietly(nc)
    return status


def cmd_list(args) -> int:
    try:
        store = _store(args)
        backups = store.list(args.stream)
    except StoreError as exc:
        _fail(str(exc))
        return FAILED
    _warn_skipped(store)
    for ref in backups:
        print(f"{ref.stream}\t{ref.id}\t{ref.size}")
    return OK


def cmd_restore(args) -> int:
    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    if subjects and not args.as_name:
        _fail("--subjects goes with --as NAME")
        return USAGE
    if not _announce_target(args):
        return USAGE
    try:
        store = _store(args)
    except StoreError as exc:
        _fail(str(exc))
        return FAILED
    try:
        ref = store.find(args.stream, args.at)
    except StoreError as exc:
        _fail(str(exc))
        return FAILED
    finally:
        _warn_skipped(store)

    stop = _Stop(f"the partly restored stream {args.as_name or args.stream!r} was removed")

    async def go() -> int:
        nc = await _connect(args)
        if nc is None:
            return FAILED
        try:
            with _bar(f"restore {args.stream}", ref.size) as bar:
                info = await restore_backup(nc, store, ref, name=args.as_name, subjects=subjects,
                                            progress=stop.progress(bar.update),
                                            say=lambda text: print(text, file=sys.stderr))
        except (BackupError, StoreError) as exc:
            _fail(str(exc))
            return FAILED
        except nats.errors.Error as exc:
            _fail(f"restore of {args.stream!r} failed: {describe_failure(nc, exc)}")
            return FAILED
        finally:
            await close_quietly(nc)
        state = info.get("state", {})
        print(f"restored {info['config']['name']} from {store.url(ref)}: {state.get('messages', 0)} messages, "
              f"{state.get('bytes', 0)} bytes, {state.get('consumer_count', 0)} consumers")
        return OK
    return stop.run(go)


def cmd_prune(args) -> int:
    if args.keep < 1:
        _fail("--keep must be at least 1 (the newest backup always stays)")
        return USAGE
    try:
        max_age = timedelta(microseconds=parse_duration(args.max_age) / 1000) if args.max_age else None
    except UnitError as exc:
        _fail(f"--max-age: {exc}")
        return USAGE
    try:
        stale_age = timedelta(microseconds=parse_duration(args.incomplete_older_than) / 1000)
    except UnitError as exc:
        _fail(f"--incomplete-older-than: {exc}")
        return USAGE
    try:
        store = _store(args)
        plan = plan_prune(store.list(), keep=args.keep, max_age=max_age)
        _warn_skipped(store)
        for ref in plan.delete:
            if not args.dry_run:
                store.delete(ref)
            print(f"{'would delete' if args.dry_run else 'deleted'} {store.url(ref)}")
        for upload in store.stale_uploads(stale_age):
            if not args.dry_run:
                store.abort_upload(upload)
            print(f"{'would abort' if args.dry_run else 'aborted'} the unfinished upload "
                  f"s3://{store.bucket}/{upload['Key']} (begun {upload['Initiated']:%Y-%m-%d %H:%M} UTC)")
    except StoreError as exc:
        _fail(str(exc))
        return FAILED
    return OK


def cmd_verify(args) -> int:
    try:
        store = _store(args)
        ref = store.find(args.stream, args.at)
        _warn_skipped(store)
        with _bar(f"verify {args.stream}", ref.size) as bar:
            report = asyncio.run(verify_backup(store, ref, progress=bar.update))
    except (StoreError, BackupError) as exc:
        _fail(str(exc))
        return FAILED
    for what, expected, found in report.checks:
        mark = "ok  " if expected == found else "FAIL"
        print(f"{mark} {what}: backup.json {expected}, restored {found}")
    print(f"{'verified' if report.ok else 'MISMATCH'}: {store.url(ref)}")
    return OK if report.ok else FAILED
