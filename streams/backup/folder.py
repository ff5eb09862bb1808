"""Backups in a plain folder, as the guide makes them with `nats stream backup STREAM DIR`: DIR holds
`stream.tar.s2` and `backup.json` (`{"config": …, "state": …}`, indented by two), the layout the nats
CLI writes and reads (nats-io/jsm.go snapshots.go, SnapshotToDirectory and RestoreSnapshotFromDirectory,
which natscli 0.4 in nats-box calls). A backup made here restores with `nats stream restore DIR`, and
one the CLI made restores here.

One stream goes to DIR itself; several (or --all) to DIR/<stream>/ each. Nothing is overwritten: a folder
that already holds backup.json is refused. The archive is written as `stream.tar.s2.partial` and renamed,
and backup.json comes last, so an interrupted backup leaves no backup behind (its files are removed).
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from streams.backup.s3 import DATA_NAME, META_NAME, READ_SIZE, BackupRef, StoreError, order_key_from_meta
from streams.backup.snapshot import SnapshotError, SnapshotMeta

PARTIAL = DATA_NAME + ".partial"


class FolderStore:
    """The BackupStore operations `backup_stream`, `restore_backup` and `verify_backup` use, on a folder."""

    def __init__(self, root: Path, *, one_stream: bool):
        self.root, self.one_stream = Path(root), one_stream
        self.warnings: list[str] = []

    def folder(self, stream: str) -> Path:
        return self.root if self.one_stream else self.root / stream

    def url(self, ref: BackupRef) -> str:
        return str(Path(ref.id)) + "/"

    # ------------------------------------------------------------ writing
    def writer(self, stream: str, backup_id: str) -> FolderWriter:
        return FolderWriter(self.folder(stream), stream)

    def delete(self, ref: BackupRef) -> None:
        folder = Path(ref.id)
        for name in (META_NAME, DATA_NAME, PARTIAL):  # backup.json first: from then on it is not a backup
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------ reading
    def find(self, stream: str, at: str | None = None) -> BackupRef:
        if at is not None:
            raise StoreError("--at picks among the backups in a bucket; a folder holds one backup: name the "
                             "folder with --from")
        for folder in (self.root, self.root / stream):
            if (folder / META_NAME).is_file() and (folder / DATA_NAME).is_file():
                ref = BackupRef(stream, str(folder), (folder / DATA_NAME).stat().st_size)
                self.read_meta(ref)  # a backup.json that is not a backup's fails here, naming the file
                return ref
        raise StoreError(f"no backup of {stream!r} in {self.root}: expected {self.root}/{META_NAME} and "
                         f"{DATA_NAME} (as `nats stream backup {stream} {self.root}` writes them) or "
                         f"{self.root}/{stream}/…")

    def read_meta(self, ref: BackupRef) -> SnapshotMeta:
        path = Path(ref.id) / META_NAME
        try:
            return SnapshotMeta.from_json(path.read_bytes())
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        except SnapshotError as exc:
            raise StoreError(f"{path}: {exc}") from None

    async def chunks(self, ref: BackupRef) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        with open(Path(ref.id) / DATA_NAME, "rb") as f:
            while data := await loop.run_in_executor(None, f.read, READ_SIZE):
                yield data


class FolderWriter:
    def __init__(self, folder: Path, stream: str):
        self.folder, self.stream, self.size = folder, stream, 0
        if (folder / META_NAME).exists():
            raise StoreError(f"{folder} already holds a backup ({META_NAME}); refusing to overwrite it: choose "
                             "another folder")
        self.created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)   # as jsm.go makes it
            self.file = open(folder / PARTIAL, "wb")
        except OSError as exc:
            raise StoreError(f"cannot write {folder}: {exc.strerror}") from None

    async def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def complete(self, meta: SnapshotMeta) -> BackupRef:
        try:
            self.file.close()
            os.replace(self.folder / PARTIAL, self.folder / DATA_NAME)
            tmp = self.folder / (META_NAME + ".partial")
            tmp.write_text(meta.to_json())
            os.replace(tmp, self.folder / META_NAME)
        except OSError as exc:
            self.abort()
            raise StoreError(f"cannot write {self.folder}: {exc.strerror}") from None
        return BackupRef(self.stream, str(self.folder), self.size, **order_key_from_meta(meta))

    def abort(self) -> None:
        self.file.close()
        names = [PARTIAL, META_NAME + ".partial"]
        if not (self.folder / META_NAME).exists():
            names.append(DATA_NAME)  # an archive without backup.json is not a backup: take it away too
        for name in names:
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass
        if self.created:
            try:
                self.folder.rmdir()
            except OSError:
                pass
