"""Carrying out the grow and shrink steps (decided by streams/clustering.py, pure) against real servers: read the
facts, take one step, record it, ask again. Used by `python -m streams cluster` (the homelab, around `pulumi up`)
and by `make dev --servers 3` (streams/local/grow.py, the local single server's streams into a local cluster).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from streams import clustering as c
from streams.backup.folder import FolderStore
from streams.backup.service import BackupError, backup_stream, restore_backup, stream_info, stream_names
from streams.connection import close_quietly, connect_once, in_a_cluster

# How long the system account's PING collects answers (every node answers within milliseconds on a LAN).
PING_SECONDS = 1.0
STATE_FILE = "state.json"
SNAPSHOTS = "streams"


class RefusedStep(RuntimeError):
    """A step's condition does not hold; the message says why and what to do."""


class NotYet(TimeoutError):
    """The cluster cannot do it yet: no suitable peers (10005). Right after an election, or while the orphan check
    has not yet removed the standalone server's old copies (they hold their storage reservations for up to 30 s
    after nats-0 joins: clustering.md), an R3 placement finds no room. Asked again, as a timeout is."""


# JSClusterNoPeersErrF (nats-server server/errors.json): "no suitable peers for placement".
NO_SUITABLE_PEERS = 10005


async def connect(url: str, login: dict | None = None):
    """One connection to any node of `url` (comma-separated), as `login` (a user's) or as the environment says."""
    if login is None:
        return await connect_once(url)
    import nats

    return await nats.connect([u.strip() for u in url.split(",")], max_reconnect_attempts=1, connect_timeout=3,
                              allow_reconnect=False, **login)


async def read_facts(nc, system: dict | None, url: str) -> c.Facts:
    """Everything a decision needs, read now: standalone or clustered, the meta group (the leader's view, through
    the system account), every stream's replicas and lag."""
    streams = {}
    for name in await stream_names(nc):
        info = await stream_info(nc, name)
        if info is not None:
            streams[name] = c.StreamFact.of(info)
    if not in_a_cluster(nc):
        return c.Facts(False, streams=streams)
    if system is None:
        raise RefusedStep("the server is in a cluster: the meta group is read as the system user. Set "
                          "NATS_SYSTEM_PASSWORD (kubectl -n nats get secret nats-user-sys -o "
                          "jsonpath='{.data.NATS_PASSWORD}' | base64 -d)")
    leader, peers = await meta_view(url, system)
    return c.Facts(True, leader, peers, streams)


async def meta_view(url: str, system: dict) -> tuple[str | None, dict[str, bool]]:
    """The meta leader and every peer as the leader sees it, from `$SYS.REQ.SERVER.PING.JSZ` (system account). A
    connection per look, on purpose: between looks a node may stop or leave the group (that is what shrink does), and
    a fresh connection goes to whichever node answers."""
    sysc = await connect(url, system)
    try:
        inbox = sysc.new_inbox()
        sub = await sysc.subscribe(inbox)
        await sysc.publish("$SYS.REQ.SERVER.PING.JSZ", b"{}", reply=inbox)
        answers = []
        deadline = time.monotonic() + PING_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                answers.append(json.loads((await sub.next_msg(timeout=left)).data))
            except TimeoutError:
                break
            if meta_from_answers(answers)[0] is not None and len(answers) >= _largest_size(answers):
                break   # the leader has answered, and as many nodes as the meta group counts
        await sub.unsubscribe()
    finally:
        await close_quietly(sysc)
    return meta_from_answers(answers)


def _largest_size(answers: list[dict]) -> int:
    return max(((a.get("data") or {}).get("meta_cluster") or {}).get("cluster_size") or 0 for a in answers)


def meta_from_answers(answers: list[dict]) -> tuple[str | None, dict[str, bool]]:
    """The leader's own answer says which peers are current; without a leader every peer counts as not current. A
    leader whose list of peers is shorter than the group it counts (`cluster_size`: a leader just elected, measured
    after a peer removal) is no answer yet. A removed node still answers, without a meta group."""
    names: dict[str, bool] = {}
    for answer in answers:
        meta = (answer.get("data") or {}).get("meta_cluster") or {}
        names.setdefault(answer["server"]["name"], False)
        for replica in meta.get("replicas") or []:
            names.setdefault(replica["name"], False)
        if meta.get("leader") and meta.get("leader") == answer["server"]["name"]:
            peers = {answer["server"]["name"]: True}
            peers.update({r["name"]: bool(r.get("current")) and not r.get("offline")
                          for r in meta.get("replicas") or []})
            if len(peers) >= (meta.get("cluster_size") or 0):
                return meta["leader"], peers
    return None, names


async def api(nc, subject: str, body: dict | None = None) -> dict:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=10)
    data = json.loads(msg.data)
    if "error" in data:
        words = f"{subject}: {data['error'].get('description')} ({data['error'].get('err_code')})"
        raise NotYet(words) if data["error"].get("err_code") == NO_SUITABLE_PEERS else RefusedStep(words)
    return data


async def set_replicas(nc, name: str, replicas: int) -> None:
    info = await stream_info(nc, name)
    if info is None:
        raise RefusedStep(f"stream {name!r} is gone")
    await api(nc, f"$JS.API.STREAM.UPDATE.{name}", {**info["config"], "num_replicas": replicas})


async def settled(read: Callable, ok: Callable[..., bool], timeout: float, what: str) -> c.Facts:
    """Read the facts until `ok(facts)` or the timeout (then say what did not happen)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            facts = await read()
            if ok(facts):
                return facts
        except (TimeoutError, RefusedStep, BackupError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise RefusedStep(f"{what} after {timeout:.0f} s; nothing was lost. Look at `python -m streams cluster "
                              "status`, then run the command again: it goes on from here")
        await asyncio.sleep(0.5)


def load_progress(folder: Path) -> c.GrowProgress:
    path = folder / STATE_FILE
    return c.GrowProgress(**json.loads(path.read_text())) if path.exists() else c.GrowProgress()


def save_progress(folder: Path, progress: c.GrowProgress) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_FILE + ".partial")
    tmp.write_text(json.dumps(asdict(progress), indent=2) + "\n")
    tmp.replace(folder / STATE_FILE)   # whole or not at all


class Patience:
    """A request that times out (a leader moving, an election) may or may not have been applied: the facts are read
    again and the step decided again, until `timeout` passes without progress."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.since: float | None = None

    async def timed_out(self, step: c.Step | None, error: BaseException) -> None:
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.timeout:
            what = f"{step.action} {step.stream or step.node or ''}" if step else "reading the cluster"
            raise RefusedStep(f"{what}: not done after {self.timeout:.0f} s ({error}); "
                              "nothing was lost. Look at `python -m streams cluster status`, then run the command "
                              "again: it goes on from here")
        await asyncio.sleep(0.5)

    def progressed(self) -> None:
        self.since = None


async def drive_grow(url: str, folder: Path, replicas: int, *, system: dict | None, say=print,
                     timeout: float = 120.0, login: dict | None = None) -> c.Step:
    """Grow steps against `url` until the operator's `pulumi up` is due (WAIT_FOR_UP) or the grow is done (DONE);
    the progress and the snapshots are in `folder`. Raises RefusedStep with the refusal's words."""
    store = FolderStore(folder / SNAPSHOTS, one_stream=False)
    progress = load_progress(folder)
    nc = await connect(url, login)
    try:
        step, _ = await _steps(
            nc, url, system, lambda facts: c.grow_next(progress, facts, replicas),
            lambda step, facts, read: _grow_step(nc, step, facts, progress, store, folder, read, say, timeout),
            timeout, say)
        return step
    finally:
        await close_quietly(nc)


async def _steps(nc, url: str, system: dict | None, decide: Callable, act: Callable, timeout: float,
                 say) -> tuple[c.Step, c.Facts]:
    """Read the facts, decide the step, carry it out, until a step says the command stops. A request that times out
    (or is not possible yet) is decided again from fresh facts: it may or may not have been applied."""
    patience = Patience(timeout)

    async def read():
        return await read_facts(nc, system, url)
    while True:
        step = None
        try:
            facts = await read()
            step = decide(facts)
            if await act(step, facts, read):
                return step, facts
        except TimeoutError as exc:   # NotYet too
            await patience.timed_out(step, exc)
            continue
        patience.progressed()


async def _grow_step(nc, step: c.Step, facts: c.Facts, progress: c.GrowProgress, store: FolderStore, folder: Path,
                     read, say, timeout: float) -> bool:
    """One grow step, recorded; True when the command stops here (the `up` is due, or the grow is done)."""
    if step.action == c.SNAPSHOT:
        name = str(step.stream)
        if (store.folder(name) / "backup.json").exists():
            store.delete(store.find(name))   # the stream moved on since: take it again
        meta = store.read_meta(await backup_stream(nc, store, name))
        progress.snapshots[name] = {"messages": meta.state.get("messages", 0),
                                    "last_seq": meta.state.get("last_seq", 0)}
        if progress.snapshotted is not None and name not in progress.snapshotted:
            progress.snapshotted.append(name)
        say(f"grow: snapshotted {name} ({progress.snapshots[name]['messages']} messages, consumers with it) "
            f"into {store.folder(name)}")
    elif step.action == c.SNAPSHOTTED:
        progress.snapshotted = sorted(progress.snapshots)
        progress.memory = sorted(f.name for f in facts.streams.values() if f.storage == "memory")
        for name in progress.memory:
            say(f"grow: memory stream {name} cannot be snapshotted: its messages are lost when the server "
                "restarts; the catalog declares it again")
    elif step.action == c.WAIT_FOR_UP:
        return True
    elif step.action == c.WAIT_HEALTHY:
        await settled(read, lambda f: f.healthy, timeout, f"the cluster is not healthy ({step.detail})")
        return False
    elif step.action in (c.RESTORE, c.REPLACE_EMPTY):
        name = str(step.stream)
        if step.action == c.REPLACE_EMPTY:
            await api(nc, f"$JS.API.STREAM.DELETE.{name}")   # it has never held a message
            say(f"grow: stream {name} was made empty in the cluster before the restore; replaced")
        info = await restore_retrying(nc, store, name, timeout)
        progress.restored.append(name)
        say(f"grow: restored {name} into the cluster ({info['state']['messages']} messages)")
    elif step.action == c.ADOPT:
        progress.restored.append(str(step.stream))
        say(f"grow: {step.stream} was restored before an interruption; it is as the snapshot")
    elif step.action == c.RAISE:
        await set_replicas(nc, str(step.stream), step.replicas)
        say(f"grow: {step.stream} raised to {step.replicas} replicas")
    elif step.action == c.WAIT_CURRENT:
        await settled(read, lambda f, n=step.stream: f.streams[n].current, timeout, step.detail)
        return False
    elif step.action == c.DONE:
        progress.finished = True
    else:
        raise RefusedStep(step.detail)
    save_progress(folder, progress)
    return step.action == c.DONE


async def restore_retrying(nc, store: FolderStore, name: str, timeout: float) -> dict:
    """Right after an election a create can answer "no suitable peers", or not at all (clustering.md): ask again.
    restore_backup removes a half-restored stream before it fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await restore_backup(nc, store, store.find(name))
        except (TimeoutError, BackupError):
            if time.monotonic() > deadline or await stream_info(nc, name) is not None:
                raise
        await asyncio.sleep(1.0)


async def drive_shrink(url: str, keep: str | None, *, system: dict | None, say=print,
                       timeout: float = 120.0) -> tuple[c.Step, c.Facts]:
    """Shrink steps until every stream is R1 on `keep` (default: the first node by name) and it is the only peer."""
    def node(facts: c.Facts) -> str:
        return keep or (facts.nodes[0] if facts.nodes else "")
    nc = await connect(url)
    try:
        return await _steps(
            nc, url, system, lambda facts: c.shrink_next(facts, node(facts)),
            lambda step, facts, read: _shrink_step(nc, url, step, node(facts), system, read, say, timeout),
            timeout, say)
    finally:
        await close_quietly(nc)


async def _shrink_step(nc, url: str, step: c.Step, node: str, system: dict | None, read, say,
                       timeout: float) -> bool:
    """One shrink step; True when it is done."""
    if step.action == c.RAISE:
        await set_replicas(nc, str(step.stream), step.replicas)
        say(f"shrink: {step.stream} raised to {step.replicas} replicas, to have one on {node}")
    elif step.action == c.STEPDOWN:
        await api(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{step.stream}", {"placement": {"preferred": node}})
        await settled(read, lambda f, n=step.stream, k=node: f.streams[n].leader == k, timeout,
                      f"stream {step.stream!r}: its leader did not move to {node}")
        say(f"shrink: {step.stream}'s leader moved to {node}")
    elif step.action == c.LOWER:
        await set_replicas(nc, str(step.stream), 1)
        say(f"shrink: {step.stream} is R1 on {node}")
    elif step.action == c.META_STEPDOWN:
        sysc = await connect(url, system)
        try:
            await api(sysc, "$JS.API.META.LEADER.STEPDOWN", {"placement": {"preferred": step.node}})
        finally:
            await close_quietly(sysc)
        await settled(read, lambda f, k=step.node: f.meta_leader == k, timeout,
                      f"the meta leadership did not move to {step.node}")
        say(f"shrink: the meta leader is {step.node}")
    elif step.action == c.REMOVE_PEER:
        sysc = await connect(url, system)
        try:
            await api(sysc, "$JS.API.SERVER.REMOVE", {"peer": step.node})
        finally:
            await close_quietly(sysc)
        await settled(read, lambda f, n=step.node: n not in f.peers and f.meta_leader is not None,
                      timeout, f"peer {step.node} is still in the meta group")
        say(f"shrink: peer {step.node} removed from the meta group")
    elif step.action in (c.WAIT_HEALTHY, c.WAIT_CURRENT):
        await settled(read, lambda f, s=step, k=node: c.shrink_next(f, k) != s, timeout, step.detail)
    elif step.action != c.DONE:
        raise RefusedStep(step.detail)
    return step.action == c.DONE
