"""From the single local server to a three-node cluster without losing a message: the measured safe order
(../shared/reference/clustering.md), on this machine, for `make dev --servers 3` when the single server's folder holds
data.

A server that ran standalone and is restarted with a cluster block deletes every stream it holds 30 s after it joins
(nats-server jetstream_cluster.go checkForOrphans). So its data never meets a cluster block: while it is standalone,
every file stream is snapshotted with its consumers into `<workdir>/grow/`; the cluster starts on folders of its own
(`n0` … `n2`); each snapshot is restored into it (sequences, message ids and consumers' ack floors as they were);
replicas then follow the declarations when the catalog is applied. Memory streams cannot be snapshotted: their
messages are lost, and the catalog declares them again.

`next_step` is pure (the progress recorded in `<workdir>/grow/state.json` in, the step to take out); `grow` carries
the steps out, recording each, so an interruption at any point resumes where it stopped and loses nothing: the
single server's folder is never written to by the cluster, and is left as it was.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import nats
import nats.errors

from stack.settings import Settings
from streams.backup.folder import FolderStore
from streams.backup.service import BackupError, backup_stream, restore_backup, stream_info, stream_names
from streams.local.server import local_layout, start_server

GROW_FOLDER = "grow"
SNAPSHOT, RESTORE, DONE = "snapshot", "restore", "done"


@dataclass
class GrowState:
    """What has been done, in order: the single server's file streams snapshotted (their names), then restored."""
    snapshotted: list[str] | None = None     # None until every file stream is in the grow folder
    memory: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> GrowState:
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(path)   # written whole or not at all


def next_step(state: GrowState) -> tuple[str, str | None]:
    """The next step and the stream it is for: snapshot (all of them at once, while standalone), restore one, done."""
    if state.snapshotted is None:
        return SNAPSHOT, None
    for name in state.snapshotted:
        if name not in state.restored:
            return RESTORE, name
    return DONE, None


def single_server_has_data(workdir: Path) -> bool:
    """Whether the single server's folder holds JetStream data (streams) to carry into a cluster."""
    streams = workdir / "data" / "jetstream" / "$G" / "streams"
    return streams.is_dir() and any(streams.iterdir())


def needs_growing(workdir: Path) -> bool:
    """The single server's folder holds streams and the cluster has not taken them in yet."""
    state = GrowState.load(workdir / GROW_FOLDER / "state.json")
    return single_server_has_data(workdir) and next_step(state)[0] != DONE


def grow(settings: Settings, workdir: Path, cluster_url: str, say=print, *,
         login: tuple[str, str] | None = None) -> GrowState:
    """Carry out the steps from where the recorded state stands. The snapshot step starts the single server on its
    own folder, standalone, on free loopback ports and without users (it serves nobody but this step); the restore
    steps use the cluster at `cluster_url` (comma-separated nodes), logging in as `login` when auth is on."""
    path = workdir / GROW_FOLDER / "state.json"
    state = GrowState.load(path)
    store = FolderStore(workdir / GROW_FOLDER / "streams", one_stream=False)
    if next_step(state)[0] == SNAPSHOT:
        standalone = replace(settings, auth=replace(settings.auth, enabled=False))
        with start_server(standalone, local_layout(workdir), workdir) as single:
            state.snapshotted, state.memory = asyncio.run(_snapshot_all(single.client_url, store, say))
        state.save(path)
    while (step := next_step(state))[0] == RESTORE:
        name = str(step[1])
        asyncio.run(_restore(cluster_url, store, name, say, login))
        state.restored.append(name)
        state.save(path)
    return state


async def _snapshot_all(url: str, store: FolderStore, say) -> tuple[list[str], list[str]]:
    nc = await nats.connect(url)
    try:
        file_streams, memory = [], []
        for name in sorted(await stream_names(nc)):
            info = await stream_info(nc, name)
            if info is None:
                continue
            if info["config"].get("storage") == "memory":
                memory.append(name)
                say(f"grow: memory stream {name} cannot be snapshotted; its messages are lost, the catalog makes it "
                    "again")
                continue
            if (store.folder(name) / "backup.json").exists():
                file_streams.append(name)   # snapshotted before an interruption
                continue
            await backup_stream(nc, store, name)
            say(f"grow: snapshotted {name} ({info['state']['messages']} messages, its consumers with it)")
            file_streams.append(name)
        return file_streams, memory
    finally:
        await nc.close()


# Right after an election a new cluster may answer a create with "no suitable peers", or not at all
# (clustering.md, measured): a restore is asked again for this long. restore_backup removes a half-restored stream.
RESTORE_RETRY_SECONDS = 60.0


async def _restore(url: str, store: FolderStore, name: str, say, login: tuple[str, str] | None) -> None:
    credentials = {"user": login[0], "password": login[1]} if login else {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESTORE_RETRY_SECONDS
    while True:
        nc = await nats.connect(url.split(","), **credentials)
        try:
            if await stream_info(nc, name) is not None:   # restored before an interruption: nothing to do
                return
            info = await restore_backup(nc, store, store.find(name))
            say(f"grow: restored {name} into the cluster ({info['state']['messages']} messages)")
            return
        except (TimeoutError, BackupError, nats.errors.Error):
            if loop.time() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(1.0)
