"""`python -m streams cluster status|grow|shrink`: the road from the standalone server to a JetStream cluster and
back, one checked step at a time (the steps and their order: streams/clustering.py, pure; this module reads the
facts, carries out one step, records it and asks again).

The system user (peer removal, the meta group's view) logs in with NATS_SYSTEM_USER (default sys) and
NATS_SYSTEM_PASSWORD: on the cluster, from the Secret nats-user-sys; for a running `make dev --servers 3` of this
checkout, from its folder by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from streams import clustering as c
from streams.backup.folder import FolderStore
from streams.backup.service import BackupError, backup_stream, restore_backup, stream_info, stream_names
from streams.cli.target import LOCAL, NoTarget, running_devs, target_from_args
from streams.connection import CannotConnect, close_quietly, connect_once
from streams.jetstream import JetStreamApiError

# After a step, how long to wait for the cluster to settle (an election, replicas catching up) before giving up.
SETTLE_SECONDS = 120.0
# How long the system account's PING collects answers (every node answers within milliseconds on a LAN).
PING_SECONDS = 1.0
WAITING_FOR_UP = 3   # the exit code while the operator's `pulumi up` is due


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="grow the standalone server into a cluster, or shrink it back",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="cluster_command", required=True, metavar="STEP")
    for name, helptext in (("status", "the meta leader, its peers, every stream's replicas and lag"),
                           ("grow", "snapshot the standalone server's streams, then (after `pulumi up`) restore them "
                                    "into the cluster and raise their replicas"),
                           ("shrink", "move every stream to one node at R1 and remove the other peers, before "
                                      "`pulumi up` with replicas: 1")):
        q = steps.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--server", help="NATS URL (default: NATS_URL, else the running make dev of this checkout)")
        q.add_argument("--stack", help="the stack whose cluster to use: Pulumi.<STACK>.yaml")
        q.add_argument("--timeout", type=float, default=SETTLE_SECONDS,
                       help=f"seconds to wait for the cluster to settle after a step (default {SETTLE_SECONDS:.0f})")
        if name == "grow":
            q.add_argument("--folder", type=Path, help="where the snapshots and the progress go (default: "
                                                       ".local/<stack>/cluster-grow)")
            q.add_argument("--replicas", type=int, default=3, help="the streams' replicas in the cluster (default 3)")
        if name == "shrink":
            q.add_argument("--keep", help="the node that stays (default: the first by name, nats-0)")
        q.set_defaults(run=run)


def run(args) -> int:
    try:
        target = target_from_args(args)
    except NoTarget as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(target.line(), file=sys.stderr, flush=True)
    system = system_login(target.nats_url, dict(os.environ))
    try:
        return asyncio.run(_COMMANDS[args.cluster_command](args, target, system))
    except (CannotConnect, BackupError, JetStreamApiError, RefusedStep) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


class RefusedStep(RuntimeError):
    """A step's condition does not hold; the message says why and what to do."""


def system_login(nats_url: str, environ: dict) -> dict | None:
    """The system user's login: NATS_SYSTEM_USER / NATS_SYSTEM_PASSWORD, else the running make dev's own."""
    if environ.get("NATS_SYSTEM_PASSWORD"):
        return {"user": environ.get("NATS_SYSTEM_USER", "sys"), "password": environ["NATS_SYSTEM_PASSWORD"]}
    for dev in running_devs():
        if dev.nats_url == nats_url:
            passwords = Path(dev.folder) / "auth" / "passwords.json"
            if passwords.exists():
                return {"user": "sys", "password": json.loads(passwords.read_text())["sys"]}
    return None


async def _connect(url: str, login: dict | None = None):
    if login is None:
        return await connect_once(url)
    import nats

    return await nats.connect([u.strip() for u in url.split(",")], max_reconnect_attempts=1, connect_timeout=3,
                              allow_reconnect=False, **login)


async def read_facts(nc, system_login_: dict | None, url: str) -> c.Facts:
    """Everything a decision needs, read now: standalone or clustered, the meta group (leader's view, through the
    system account), every stream's replicas and lag."""
    streams = {}
    for name in await stream_names(nc):
        info = await stream_info(nc, name)
        if info is not None:
            streams[name] = c.StreamFact.of(info)
    if not nc._server_info.get("cluster"):   # the server's INFO names its cluster when it is in one
        return c.Facts(False, streams=streams)
    if system_login_ is None:
        raise RefusedStep("the server is in a cluster: the meta group is read as the system user. Set "
                          "NATS_SYSTEM_PASSWORD (kubectl -n nats get secret nats-user-sys -o "
                          "jsonpath='{.data.NATS_PASSWORD}' | base64 -d)")
    leader, peers = await meta_view(url, system_login_)
    return c.Facts(True, leader, peers, streams)


async def meta_view(url: str, login: dict) -> tuple[str | None, dict[str, bool]]:
    """The meta leader and every peer as the leader sees it (current and online), from `$SYS.REQ.SERVER.PING.JSZ`."""
    sysc = await _connect(url, login)
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
        await sub.unsubscribe()
    finally:
        await close_quietly(sysc)
    return meta_from_answers(answers)


def meta_from_answers(answers: list[dict]) -> tuple[str | None, dict[str, bool]]:
    """The leader's own answer says which peers are current; without a leader every peer counts as not current."""
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
            return meta["leader"], peers
    return None, names


async def _api(nc, subject: str, body: dict | None = None) -> dict:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=10)
    data = json.loads(msg.data)
    if "error" in data:
        raise RefusedStep(f"{subject}: {data['error'].get('description')} ({data['error'].get('err_code')})")
    return data


async def _set_replicas(nc, name: str, replicas: int) -> None:
    info = await stream_info(nc, name)
    if info is None:
        raise RefusedStep(f"stream {name!r} is gone")
    config = {**info["config"], "num_replicas": replicas}
    await _api(nc, f"$JS.API.STREAM.UPDATE.{name}", config)


async def _settled(read, ok, timeout: float, what: str) -> c.Facts:
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


def _print_status(facts: c.Facts) -> None:
    if not facts.clustered:
        print("standalone (no cluster block)")
    else:
        print(f"meta leader: {facts.meta_leader or 'none'}")
        for name, ok in sorted(facts.peers.items()):
            print(f"  peer {name}: {'current' if ok else 'NOT CURRENT'}")
    for fact in sorted(facts.streams.values(), key=lambda f: f.name):
        where = f"leader {fact.leader}, on {', '.join(fact.peers)}" if facts.clustered else fact.storage
        health = "current" if fact.current else f"{fact.lag} messages behind"
        print(f"stream {fact.name}: R{fact.replicas}, {fact.messages} messages, {where}; {health}")


async def cmd_status(args, target, system) -> int:
    nc = await connect_once(target.nats_url)
    try:
        facts = await read_facts(nc, system, target.nats_url)
    finally:
        await close_quietly(nc)
    _print_status(facts)
    return 0 if not facts.clustered or facts.healthy else 1


def _grow_folder(args, target) -> Path:
    return args.folder or LOCAL / target.stack / "cluster-grow"


def _load_progress(path: Path) -> c.GrowProgress:
    return c.GrowProgress(**json.loads(path.read_text())) if path.exists() else c.GrowProgress()


def _save_progress(path: Path, progress: c.GrowProgress) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(asdict(progress), indent=2) + "\n")
    tmp.replace(path)   # whole or not at all


async def cmd_grow(args, target, system) -> int:
    folder = _grow_folder(args, target)
    state = folder / "state.json"
    store = FolderStore(folder / "streams", one_stream=False)
    progress = _load_progress(state)
    print(f"grow: progress in {state}", file=sys.stderr)
    nc = await connect_once(target.nats_url)
    try:
        async def read():
            return await read_facts(nc, system, target.nats_url)
        while True:
            facts = await read()
            step = c.grow_next(progress, facts, args.replicas)
            if step.action == c.SNAPSHOT:
                name = str(step.stream)
                if (store.folder(name) / "backup.json").exists():
                    store.delete(store.find(name))   # the stream moved on since: take it again
                ref = await backup_stream(nc, store, name)
                meta = store.read_meta(ref)
                progress.snapshots[name] = {"messages": meta.state.get("messages", 0),
                                            "last_seq": meta.state.get("last_seq", 0)}
                if progress.snapshotted is not None and name not in progress.snapshotted:
                    progress.snapshotted.append(name)
                print(f"grow: snapshotted {name} ({progress.snapshots[name]['messages']} messages, consumers with it) "
                      f"into {store.folder(name)}")
            elif step.action == c.SNAPSHOTTED:
                progress.snapshotted = sorted(progress.snapshots)
                progress.memory = sorted(f.name for f in facts.streams.values() if f.storage == "memory")
                for name in progress.memory:
                    print(f"grow: memory stream {name} cannot be snapshotted: its messages are lost when the server "
                          "restarts; the catalog declares it again")
            elif step.action == c.WAIT_FOR_UP:
                _save_progress(state, progress)
                print(f"grow: every file stream is snapshotted in {folder / 'streams'}. Stop the writers, then:\n"
                      "  pulumi config set homelab-nats:replicas 3\n"
                      "  pulumi config set --path homelab-nats:cluster.standaloneStreams snapshotted\n"
                      "  pulumi up\n"
                      "and run this command again: it restores the streams into the cluster. (Until the `up`, "
                      "running it again takes any stream that moved on again.)")
                return WAITING_FOR_UP
            elif step.action == c.WAIT_HEALTHY:
                print(f"grow: waiting for the cluster ({step.detail})", file=sys.stderr)
                await _settled(read, lambda f: f.healthy, args.timeout, f"the cluster is not healthy ({step.detail})")
            elif step.action in (c.RESTORE, c.REPLACE_EMPTY):
                name = str(step.stream)
                if step.action == c.REPLACE_EMPTY:
                    await _api(nc, f"$JS.API.STREAM.DELETE.{name}")   # it has never held a message
                    print(f"grow: stream {name} was made empty in the cluster before the restore; replaced")
                info = await _restore_retrying(nc, store, name, args.timeout)
                progress.restored.append(name)
                print(f"grow: restored {name} into the cluster ({info['state']['messages']} messages)")
            elif step.action == c.ADOPT:
                progress.restored.append(str(step.stream))
                print(f"grow: {step.stream} was restored before an interruption; it is as the snapshot")
            elif step.action == c.RAISE:
                await _set_replicas(nc, str(step.stream), step.replicas)
                print(f"grow: {step.stream} raised to {step.replicas} replicas")
            elif step.action == c.WAIT_CURRENT:
                await _settled(read, lambda f, n=step.stream: f.streams[n].current, args.timeout, step.detail)
            elif step.action == c.DONE:
                print(f"grow: done: {len(progress.snapshotted or [])} streams restored at R{args.replicas}, every "
                      f"replica current. Set replicas: {args.replicas} on the catalog's streams and run `pulumi up` "
                      f"(it changes nothing on the server). The snapshots stay in {folder / 'streams'} until you "
                      "remove them.")
                _save_progress(state, progress)
                return 0
            else:
                raise RefusedStep(step.detail)
            _save_progress(state, progress)
    finally:
        await close_quietly(nc)


async def _restore_retrying(nc, store: FolderStore, name: str, timeout: float) -> dict:
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


async def cmd_shrink(args, target, system) -> int:
    nc = await connect_once(target.nats_url)
    try:
        async def read():
            return await read_facts(nc, system, target.nats_url)
        while True:
            facts = await read()
            keep = args.keep or (facts.nodes[0] if facts.nodes else "")
            step = c.shrink_next(facts, keep)
            if step.action == c.RAISE:
                await _set_replicas(nc, str(step.stream), step.replicas)
                print(f"shrink: {step.stream} raised to {step.replicas} replicas, to have one on {keep}")
            elif step.action == c.STEPDOWN:
                await _api(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{step.stream}", {"placement": {"preferred": keep}})
                await _settled(read, lambda f, n=step.stream, k=keep: f.streams[n].leader == k, args.timeout,
                               f"stream {step.stream!r}: its leader did not move to {keep}")
                print(f"shrink: {step.stream}'s leader moved to {keep}")
            elif step.action == c.LOWER:
                await _set_replicas(nc, str(step.stream), 1)
                print(f"shrink: {step.stream} is R1 on {keep}")
            elif step.action == c.REMOVE_PEER:
                sysc = await _connect(target.nats_url, system)
                try:
                    await _api(sysc, "$JS.API.SERVER.REMOVE", {"peer": step.node})
                finally:
                    await close_quietly(sysc)
                await _settled(read, lambda f, n=step.node: n not in f.peers and f.meta_leader is not None,
                               args.timeout, f"peer {step.node} is still in the meta group")
                print(f"shrink: peer {step.node} removed from the meta group")
            elif step.action in (c.WAIT_HEALTHY, c.WAIT_CURRENT):
                print(f"shrink: waiting ({step.detail})", file=sys.stderr)
                await _settled(read, lambda f, s=step, k=keep: c.shrink_next(f, k) != s, args.timeout, step.detail)
            elif step.action == c.DONE:
                if facts.clustered:
                    print(f"shrink: done: every stream is R1 on {keep} and it is the only peer. Now:\n"
                          "  pulumi config set homelab-nats:replicas 1\n"
                          "  pulumi up\n"
                          f"{keep} restarts without the cluster block and keeps every stream; the other pods stop "
                          "(their volumes stay: delete them once you are sure).")
                else:
                    print("shrink: the server runs standalone; nothing to do")
                return 0
            else:
                raise RefusedStep(step.detail)
    finally:
        await close_quietly(nc)


_COMMANDS = {"status": cmd_status, "grow": cmd_grow, "shrink": cmd_shrink}
