"""From the single local server to a three-node cluster without losing a message: the measured safe order
(../shared/reference/clustering.md), on this machine, for `make dev --servers 3` when the single server's folder holds
data. The same steps as the homelab's `python -m streams cluster grow` (streams/clustering.py decides them,
streams/growth.py carries them out); here the command plays the operator's `pulumi up` itself.

A server that ran standalone and is restarted with a cluster block deletes every stream it holds 30 s after it joins
(nats-server jetstream_cluster.go checkForOrphans). So its data never meets a cluster block: while it is standalone,
every file stream is snapshotted with its consumers into `<workdir>/grow/`; the cluster runs on folders of its own
(`n0` … `n2`); each snapshot is restored into it (sequences, message ids and consumers' ack floors as they were);
replicas then follow the declarations when the catalog is applied. Memory streams cannot be snapshotted: their
messages are lost, and the catalog declares them again. Every step is recorded in `<workdir>/grow/state.json`, so an
interruption at any point resumes where it stopped and loses nothing: the single server's folder is never written to
by the cluster, and is left as it was.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from stack.settings import Settings
from streams import clustering as c
from streams.growth import drive_grow, load_progress
from streams.local.server import local_layout, start_server

GROW_FOLDER = "grow"


def single_server_has_data(workdir: Path) -> bool:
    """Whether the single server's folder holds JetStream data (streams) to carry into a cluster."""
    streams = workdir / "data" / "jetstream" / "$G" / "streams"
    return streams.is_dir() and any(streams.iterdir())


def needs_growing(workdir: Path) -> bool:
    """The single server's folder holds streams and the cluster has not taken them in yet."""
    return single_server_has_data(workdir) and not load_progress(workdir / GROW_FOLDER).finished


def grow(settings: Settings, workdir: Path, cluster_url: str, say=print, *, login: dict | None = None,
         system: dict | None = None) -> c.GrowProgress:
    """Carry out the steps from where the recorded progress stands. While nothing is snapshotted, the single server
    starts on its own folder, standalone, on free loopback ports and without users (it serves nobody but this step);
    then the cluster at `cluster_url` (comma-separated nodes) takes the snapshots, logging in as `login` (the admin,
    with auth on) and reading its meta group as `system`. Replicas stay as restored (R1): the catalog sets them."""
    folder = workdir / GROW_FOLDER
    if load_progress(folder).snapshotted is None:
        standalone = replace(settings, auth=replace(settings.auth, enabled=False))
        with start_server(standalone, local_layout(workdir), workdir) as single:
            asyncio.run(drive_grow(single.client_url, folder, 1, system=None, say=say))
    asyncio.run(drive_grow(cluster_url, folder, 1, system=system, say=say, login=login))
    return load_progress(folder)
