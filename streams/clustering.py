"""Growing a running standalone server into a JetStream cluster, and shrinking a cluster back to one node, in the
measured safe order (../shared/reference/clustering.md). Pure: the facts read from the servers and the progress
recorded so far in, the next step out. `streams/cli/cluster.py` reads the facts, carries out one step, records it,
and asks again, so an interruption anywhere resumes where it stopped.

Grow (the standalone server holds streams; a cluster block would delete them 30 s after it joins):
1. snapshot every file stream with its consumers while the server is standalone (memory streams cannot be
   snapshotted: named up front, declared again by `pulumi up`);
2. `pulumi up` with replicas: 3 and cluster.standaloneStreams: snapshotted (the operator's step; the command waits);
3. a meta leader and every peer current;
4. restore each snapshot (R1, consumers and their ack floors with it);
5. raise each restored stream to the target replicas;
6. wait until every replica is current.

Shrink (the cluster stays up until step 4):
1. every stream's leader on the node that stays (a stream that is not on it is first raised to the cluster size);
2. every stream to R1 there;
3. the meta leadership on that node, then every other peer removed from the meta group (system account);
4. `pulumi up` with replicas: 1: the node restarts without the cluster block and keeps every stream.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stack.rules import MAX_REPLICAS as MAX_STREAM_REPLICAS

# Steps.
SNAPSHOT, SNAPSHOTTED, WAIT_FOR_UP, WAIT_HEALTHY, RESTORE, REPLACE_EMPTY, ADOPT, RAISE, WAIT_CURRENT, DONE, REFUSE = (
    "snapshot", "snapshotted", "wait-for-up", "wait-healthy", "restore", "replace-empty", "adopt", "raise",
    "wait-current", "done", "refuse")
STEPDOWN, LOWER, META_STEPDOWN, REMOVE_PEER = "stepdown", "lower", "meta-stepdown", "remove-peer"


@dataclass(frozen=True)
class StreamFact:
    """One stream as the cluster (or the standalone server) reports it."""
    name: str
    storage: str = "file"
    replicas: int = 1
    messages: int = 0
    last_seq: int = 0
    leader: str | None = None
    peers: tuple[str, ...] = ()        # every node holding a replica, the leader included
    current: bool = True               # every replica current (a standalone stream always is)
    lag: int = 0                       # the largest replica lag, in messages

    @classmethod
    def of(cls, info: Mapping) -> StreamFact:
        """From `$JS.API.STREAM.INFO` (its `cluster` block: leader, replicas with current, lag, offline)."""
        cfg, state, cluster = info["config"], info.get("state") or {}, info.get("cluster") or {}
        replicas = cluster.get("replicas") or []
        leader = cluster.get("leader")
        count = cfg.get("num_replicas", 1) or 1
        return cls(name=cfg["name"], storage=cfg.get("storage", "file"), replicas=count,
                   messages=state.get("messages", 0), last_seq=state.get("last_seq", 0), leader=leader,
                   peers=tuple(p for p in ([leader] if leader else []) + [r["name"] for r in replicas]),
                   # every replica listed (a group just raised lists them as they join) and current
                   current=bool(leader) and len(replicas) >= count - 1
                   and all(r.get("current") and not r.get("offline") for r in replicas),
                   lag=max([r.get("lag", 0) for r in replicas] or [0]))


@dataclass(frozen=True)
class Facts:
    """What the command read from the server(s) just now."""
    clustered: bool                                # the server INFO names a cluster
    meta_leader: str | None = None
    peers: Mapping[str, bool] = field(default_factory=dict)   # every meta peer: current and online (leader's view)
    streams: Mapping[str, StreamFact] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.meta_leader is not None and all(self.peers.values())

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self.peers))


@dataclass(frozen=True)
class Step:
    action: str
    stream: str | None = None
    detail: str = ""                    # the refusal's words, or what to wait for
    replicas: int = 0                   # RAISE / LOWER: to this many
    node: str | None = None             # STEPDOWN: to this node; REMOVE_PEER: this node


@dataclass
class GrowProgress:
    """What the grow command has done (kept in its folder as state.json)."""
    snapshotted: list[str] | None = None            # None until every file stream is in the folder
    memory: list[str] = field(default_factory=list)
    snapshots: dict[str, dict] = field(default_factory=dict)   # name -> {"messages", "last_seq"} when taken
    restored: list[str] = field(default_factory=list)
    finished: bool = False                          # every stream restored, raised and current


def restore_decision(name: str, existing: StreamFact | None, snapshot: Mapping) -> Step:
    """A snapshot meets the cluster: restore it where nothing is; count it restored when the cluster holds exactly
    the snapshot (restored before an interruption); put it in place of a stream that has never held a message (made
    empty by a `pulumi up` or the provider before the restore); refuse anything else, which holds messages someone
    wrote after the grow began."""
    if existing is None:
        return Step(RESTORE, name)
    if (existing.messages, existing.last_seq) == (snapshot.get("messages", 0), snapshot.get("last_seq", 0)):
        return Step(ADOPT, name)
    if existing.messages == 0 and existing.last_seq == 0:
        return Step(REPLACE_EMPTY, name)
    return Step(REFUSE, name, (
        f"stream {name!r} in the cluster holds {existing.messages} messages (last sequence {existing.last_seq}), not "
        f"the snapshot's {snapshot.get('messages', 0)} (last sequence {snapshot.get('last_seq', 0)}): something wrote "
        "to it after the grow began. Nothing was changed. Back it up (python -m streams backup "
        f"{name} --to DIR), then remove it (nats stream rm {name}) for the snapshot to be restored, and run the "
        "command again"))


def grow_next(progress: GrowProgress, facts: Facts, replicas: int) -> Step:
    """The next grow step to a cluster whose streams have `replicas` replicas. While the server is standalone, every
    file stream whose messages moved since its snapshot (or that has none) is snapshotted again: what is written
    before the `pulumi up` is carried too."""
    if not facts.clustered:
        for fact in sorted(facts.streams.values(), key=lambda f: f.name):
            taken = progress.snapshots.get(fact.name)
            if fact.storage != "memory" and (taken is None or (taken.get("messages"), taken.get("last_seq")) !=
                                             (fact.messages, fact.last_seq)):
                return Step(SNAPSHOT, fact.name)
        if progress.snapshotted is None:
            return Step(SNAPSHOTTED)
        return Step(WAIT_FOR_UP, detail="the server still runs standalone")
    if progress.snapshotted is None:
        return Step(REFUSE, detail=(
            "the server is already part of a cluster and this grow has taken no snapshots: there is no standalone "
            "server to grow. Raise stream replicas in the catalog (replicas: 3) and run `pulumi up`"))
    if not facts.healthy:
        behind = sorted(name for name, ok in facts.peers.items() if not ok)
        return Step(WAIT_HEALTHY, detail="no meta leader yet" if facts.meta_leader is None
                    else f"peers not current: {', '.join(behind)}")
    size = len(facts.peers)
    target = min(replicas, size, MAX_STREAM_REPLICAS)
    if target < replicas:
        return Step(REFUSE, detail=f"{replicas} replicas need {replicas} nodes; the cluster has {size}")
    for name in progress.snapshotted:
        if name not in progress.restored:
            return restore_decision(name, facts.streams.get(name), progress.snapshots.get(name, {}))
    for name in progress.snapshotted:
        found = facts.streams.get(name)
        if found is None:
            return Step(REFUSE, name, f"stream {name!r} was restored but is not in the cluster now: someone removed "
                                      "it. Restore it from the grow folder (python -m streams restore "
                                      f"{name} --from DIR/{name}) and run the command again")
        if found.replicas < target:
            return Step(RAISE, name, replicas=target)
    for name in progress.snapshotted:
        if not facts.streams[name].current:
            return Step(WAIT_CURRENT, name, f"stream {name!r}: replicas {facts.streams[name].lag} messages behind")
    return Step(DONE)


def shrink_next(facts: Facts, keep: str) -> Step:
    """The next step from a cluster to the one node `keep`, every stream on it at R1, the other peers removed."""
    if not facts.clustered:
        return Step(DONE, detail="the server runs standalone")
    if facts.meta_leader is None:
        return Step(WAIT_HEALTHY, detail="no meta leader: every node must be up to move the streams")
    if keep not in facts.peers:
        return Step(REFUSE, detail=f"{keep!r} is not a node of this cluster ({', '.join(facts.nodes)})")
    size = len(facts.peers)
    for fact in sorted(facts.streams.values(), key=lambda f: f.name):
        if not fact.current:
            return Step(WAIT_CURRENT, fact.name, f"stream {fact.name!r}: replicas {fact.lag} messages behind")
        if keep not in fact.peers:   # it must have a replica on `keep` before its leader can move there
            return Step(RAISE, fact.name, replicas=min(size, MAX_STREAM_REPLICAS))
        if fact.leader != keep:
            return Step(STEPDOWN, fact.name, node=keep)
        if fact.replicas > 1:
            return Step(LOWER, fact.name, replicas=1)
    others = [name for name in facts.nodes if name != keep]
    if others and facts.meta_leader != keep:
        # A leader asked to remove itself steps down without answering (measured): the node that stays leads first.
        return Step(META_STEPDOWN, node=keep)
    if others:
        # The last peer but one first, while the two that stay still make a quorum (clustering.md).
        return Step(REMOVE_PEER, node=others[-1])
    return Step(DONE)
