"""`python -m streams cluster status|grow|shrink`: the road from the standalone server to a JetStream cluster and
back, one checked step at a time (the steps and their order: streams/clustering.py, pure; carried out by
streams/growth.py, which records each step, so the command goes on where an interruption stopped it).

The system user (peer removal, the meta group's view) logs in with NATS_SYSTEM_USER (default sys) and
NATS_SYSTEM_PASSWORD: on the cluster, from the Secret nats-user-sys; for a running `make dev --servers 3` of this
checkout, from its folder by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from stack.users import SYSTEM
from streams import clustering as c
from streams import growth
from streams.backup.service import BackupError
from streams.cli.target import LOCAL, NoTarget, running_devs, target_from_args
from streams.connection import CannotConnect, close_quietly, connect_once
from streams.jetstream import JetStreamApiError
from streams.local.users import local_system_login

# After a step, how long to wait for the cluster to settle (an election, replicas catching up) before giving up.
SETTLE_SECONDS = 120.0
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
    except (CannotConnect, BackupError, JetStreamApiError, growth.RefusedStep) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def system_login(nats_url: str, environ: dict) -> dict | None:
    """The system user's login: NATS_SYSTEM_USER / NATS_SYSTEM_PASSWORD, else the running make dev's own."""
    if environ.get("NATS_SYSTEM_PASSWORD"):
        return {"user": environ.get("NATS_SYSTEM_USER", SYSTEM), "password": environ["NATS_SYSTEM_PASSWORD"]}
    for dev in running_devs():
        if dev.nats_url == nats_url:
            return local_system_login(Path(dev.folder))
    return None


def print_status(facts: c.Facts) -> None:
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
        facts = await growth.read_facts(nc, system, target.nats_url)
    finally:
        await close_quietly(nc)
    print_status(facts)
    return 0 if not facts.clustered or facts.healthy else 1


async def cmd_grow(args, target, system) -> int:
    folder = args.folder or LOCAL / target.stack / "cluster-grow"
    print(f"grow: progress in {folder / growth.STATE_FILE}", file=sys.stderr)
    step = await growth.drive_grow(target.nats_url, folder, args.replicas, system=system, timeout=args.timeout)
    if step.action == c.WAIT_FOR_UP:
        print(f"grow: every file stream is snapshotted in {folder / growth.SNAPSHOTS}. Stop the writers, then:\n"
              f"  pulumi config set homelab-nats:replicas {args.replicas}\n"
              "  pulumi config set --path homelab-nats:cluster.standaloneStreams snapshotted\n"
              "  pulumi up\n"
              "and run this command again: it restores the streams into the cluster. (Until the `up`, running it "
              "again takes any stream that moved on again.)")
        return WAITING_FOR_UP
    print(f"grow: done: every stream restored at R{args.replicas}, every replica current. Set replicas: "
          f"{args.replicas} on the catalog's streams and run `pulumi up` (it changes nothing on the server). The "
          f"snapshots stay in {folder / growth.SNAPSHOTS} until you remove them.")
    return 0


async def cmd_shrink(args, target, system) -> int:
    _, facts = await growth.drive_shrink(target.nats_url, args.keep, system=system, timeout=args.timeout)
    if not facts.clustered:
        print("shrink: the server runs standalone; nothing to do")
        return 0
    keep = facts.nodes[0]
    print(f"shrink: done: every stream is R1 on {keep} and it is the only peer. Now:\n"
          "  pulumi config set homelab-nats:replicas 1\n"
          "  pulumi up\n"
          f"{keep} restarts without the cluster block and keeps every stream; the other pods stop (their volumes "
          "stay: delete them once you are sure).")
    return 0


_COMMANDS = {"status": cmd_status, "grow": cmd_grow, "shrink": cmd_shrink}
