"""`python -m streams check`: is the deployment healthy and as declared?

In the spirit of `nats server check jetstream`: health endpoint, JetStream limits and how full the
stores are, a cluster's meta leader, unreachable nodes and every replicated stream's replicas and their lag,
every declared stream and consumer present without drift, consumer lag, and a round trip through each
file-backed stream (publish a probe, read it back, delete it: no probe stays).
Exit codes: 0 all good, 1 warnings, 2 failures.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import nats.errors

from render.outputs import monitoring_access
from stack.buckets import (
    DIFFERS,
    MISSING,
    NOT_COMPARED,
    entry_from_message,
    entry_status,
    entry_subject,
    unmanaged_keys,
)
from stack.catalog import StreamSpec
from stack.loader import read_stack_file
from stack.settings import Settings, backup_credentials_warning, monitoring_on_lan
from stack.units import parse_server_time
from stack.urls import redact_url
from streams.cli.target import announce_with_stack
from streams.cli.view import ApiView, api, open_view
from streams.connection import POINT_ELSEWHERE, CannotConnect, close_quietly, connect_once, describe_failure, refusals
from streams.plan import keep_from, plan_consumer_change, plan_stream_change

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT = {OK: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Finding:
    level: str
    subject: str     # what was checked: "server", "stream iot-sensors", "consumer iot-sensors/processor"
    message: str
    numbers: dict = field(default_factory=dict)   # the figures behind the message, for --json


def _http_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def check_server(monitor_url: str, settings: Settings, store_warn: float) -> tuple[list[Finding], dict | None]:
    """Findings about the server, and its /jsz when it is usable at all (reachable, JetStream on), else None."""
    found = []
    try:
        status, body = _http_json(f"{monitor_url}/healthz?js-enabled-only=true")
    except OSError as exc:
        return [Finding(FAIL, "server", f"monitoring endpoint {monitor_url} unreachable: {exc}. {POINT_ELSEWHERE}")], None
    if status == 200 and body.get("status") == "ok":
        found.append(Finding(OK, "server", "healthz?js-enabled-only=true: ok"))
    else:
        found.append(Finding(FAIL, "server", f"healthz?js-enabled-only=true answered {status}: "
                                             f"{body.get('error') or body.get('status')}"))
    _, jsz = _http_json(f"{monitor_url}/jsz")
    if jsz.get("disabled") or "config" not in jsz:
        return found + [Finding(FAIL, "jetstream", "JetStream is not enabled on the server")], None
    cfg = jsz["config"]
    want = (settings.jetstream.memory_store.bytes, settings.jetstream.file_store.bytes)
    have = (cfg.get("max_memory"), cfg.get("max_storage"))
    if have == want:
        found.append(Finding(OK, "jetstream", f"limits as declared: memory {settings.jetstream.memory_store.text}, "
                                              f"file {settings.jetstream.file_store.text}"))
    else:
        found.append(Finding(FAIL, "jetstream", f"limits differ from the stack: server memory {have[0]} / file "
                                                f"{have[1]} bytes, declared {want[0]} / {want[1]}"))
    for store, used, limit in (("memory", jsz.get("memory", 0), have[0]), ("file", jsz.get("storage", 0), have[1])):
        share = used / limit if limit and limit > 0 else 0.0
        level = WARN if share >= store_warn else OK
        found.append(Finding(level, "jetstream", f"{store} store {share:.0%} full ({used} of {limit} bytes)"
                                                 + (f", above {store_warn:.0%}" if level == WARN else ""),
                             {"store": store, "used_bytes": used, "limit_bytes": limit, "share": round(share, 4)}))
    return found, jsz


def cluster_findings(jsz: dict, infos: list[dict]) -> list[Finding]:
    """A cluster's health (nothing for a standalone server): a meta leader (without one nothing can be created or
    changed), nodes the meta group counts but cannot reach, and every replicated stream's replicas current, with
    their lag (the stream leader's view, from STREAM.INFO)."""
    from streams.clustering import StreamFact

    meta = jsz.get("meta_cluster")
    if not meta:
        return []
    size, leader = meta.get("cluster_size") or 0, meta.get("leader")
    found = []
    if leader:
        found.append(Finding(OK, "cluster", f"meta leader {leader}, {size} nodes in the meta group",
                             {"meta_leader": leader, "cluster_size": size}))
    else:
        found.append(Finding(FAIL, "cluster", f"no meta leader ({size} nodes in the meta group): streams and consumers "
                                              "cannot be created or changed until a majority of the nodes is up",
                             {"meta_leader": None, "cluster_size": size}))
    offline = sorted(r["name"] for r in meta.get("replicas") or [] if r.get("offline"))
    if offline:
        found.append(Finding(WARN, "cluster", f"node(s) unreachable: {', '.join(offline)}", {"offline": offline}))
    for info in sorted(infos, key=lambda i: i["config"]["name"]):
        fact = StreamFact.of(info)
        if fact.replicas < 2:
            continue
        behind = {r["name"]: r.get("lag", 0) for r in (info.get("cluster") or {}).get("replicas") or []
                  if not r.get("current") or r.get("offline")}
        numbers = {"replicas": fact.replicas, "leader": fact.leader, "peers": list(fact.peers), "lag": fact.lag}
        if fact.current:
            found.append(Finding(OK, f"stream {fact.name}", f"R{fact.replicas} on {', '.join(fact.peers)}, leader "
                                                            f"{fact.leader}, every replica current", numbers))
        else:
            missing = fact.replicas - len(fact.peers)
            words = ", ".join(f"{name} {lag} messages behind" for name, lag in sorted(behind.items()))
            words += (", " if words and missing else "") + (f"{missing} replica(s) not placed" if missing else "")
            level = FAIL if fact.leader is None else WARN
            found.append(Finding(level, f"stream {fact.name}", f"R{fact.replicas}: {words or 'no leader'}", numbers))
    return found


def server_start(monitor_url: str) -> str | None:
    """When the server last started (/varz `start`): a standalone server forgets its memory streams then."""
    try:
        return _http_json(f"{monitor_url}/varz")[1].get("start")
    except OSError:
        return None


def memory_stream_finding(where: str, info: dict, started: str | None) -> Finding:
    """A memory stream lives only as long as the server process: say when it was made against the server's start."""
    created = info.get("created")
    numbers = {"messages": info["state"]["messages"], "bytes": info["state"]["bytes"], "created": created,
               "server_start": started}
    if created and started and parse_server_time(created) > parse_server_time(started):
        return Finding(OK, where, f"memory stream made at {created}, after the server (re)started at {started}: "
                                  "messages from before that start are gone (a standalone server keeps no memory "
                                  f"stream across a restart); {info['state']['messages']} messages since", numbers)
    return Finding(OK, where, f"memory stream, made before this server start ({started}); a restart loses its "
                              "messages and nats-box's memory-streams container makes it again", numbers)




def probe_subject(subjects: list[str]) -> str | None:
    """A subject the stream captures, away from application subjects where it can be."""
    for s in subjects:
        tokens = s.split(".")
        if "*" in tokens or ">" in tokens:
            return ".".join("_homelab_check" if t in ("*", ">") else t for t in tokens)
    return subjects[0] if subjects else None


async def check_catalog(nc, specs: tuple[StreamSpec, ...], *, lag_warn: int, round_trip: bool,
                        started: str | None = None, view=None) -> list[Finding]:
    view = view or ApiView(nc)
    found = []
    for spec in specs:
        where = f"stream {spec.name}"
        info = await view.stream_info(spec.name)
        if "error" in info:
            memory = spec.config.get("storage") == "memory"
            found.append(Finding(FAIL, where, f"missing on the server ({info['error'].get('description')}); " + (
                "a memory stream a restart forgot: nats-box's memory-streams container makes it again within a "
                "minute, or `pulumi up` (it refreshes first) does" if memory else
                "`pulumi up` (it refreshes first, so it sees the stream is gone) or `make dev` locally creates it")))
            continue
        state = info["state"]
        numbers = {"messages": state["messages"], "bytes": state["bytes"], "first_seq": state.get("first_seq"),
                   "last_seq": state.get("last_seq"), "consumers": state.get("consumer_count", 0)}
        plan = plan_stream_change(info["config"], spec.config)
        if plan.changes:
            found.append(Finding(FAIL, where, f"drift: differs from the declaration in {', '.join(plan.changed)}",
                                 numbers))
        else:
            found.append(Finding(OK, where, f"as declared ({state['messages']} messages)", numbers))
        if info["config"].get("storage") == "memory":
            found.append(memory_stream_finding(where, info, started))
        for c in spec.consumers:
            cwhere = f"consumer {spec.name}/{c.name}"
            cinfo = await view.consumer_info(spec.name, c.name)
            if "error" in cinfo:
                found.append(Finding(FAIL, cwhere, "missing on the server"))
                continue
            cplan = plan_consumer_change(cinfo["config"], c.config)
            if cplan.changes:
                found.append(Finding(FAIL, cwhere, f"drift: differs from the declaration in {', '.join(cplan.changed)}"))
            pending, ack_pending = cinfo.get("num_pending", 0), cinfo.get("num_ack_pending", 0)
            level = WARN if max(pending, ack_pending) > lag_warn else OK
            found.append(Finding(level, cwhere, f"lag: {pending} pending, {ack_pending} awaiting ack"
                                                + (f" (above {lag_warn})" if level == WARN else ""),
                                 {"pending": pending, "ack_pending": ack_pending,
                                  "redelivered": cinfo.get("num_redelivered", 0),
                                  "ack_floor_stream_seq": (cinfo.get("ack_floor") or {}).get("stream_seq", 0)}))
        if round_trip and info["config"].get("storage") == "file":
            if not view.reads_values:
                found.append(Finding(WARN, where, "round trip skipped: this user reads JetStream's information only; "
                                                  "a read-only user runs check with --no-round-trip"))
                continue
            if refusals(nc):  # the user may not write (one refused probe says it for all: no 10 s wait each)
                found.append(Finding(WARN, where, "round trip skipped: this user may not publish the probe; a "
                                                  "read-only user runs check with --no-round-trip"))
                continue
            found.append(await _round_trip(nc, spec.name, info["config"]))
    return found


async def check_buckets(nc, buckets, *, store_warn: float, view=None) -> list[Finding]:
    """Each declared bucket: it exists, is as declared (the two flags the clients set differently aside: see
    stack/buckets.py), and how full it is against its maxBytes."""
    view = view or ApiView(nc)
    found = []
    for b in buckets:
        where = b.kind.where(b.name)
        info = await view.stream_info(b.stream_name)
        if "error" in info:
            found.append(Finding(FAIL, where, f"missing on the server (stream {b.stream_name}); `pulumi up` (or "
                                              "`make dev` locally) creates it"))
            continue
        plan = plan_stream_change(info["config"], keep_from(b.config, info["config"],
                                                            unmanaged_keys(b.kind, b.declaration)))
        if plan.changes:
            found.append(Finding(FAIL, where, f"drift: differs from the declaration in {', '.join(plan.changed)}"))
            continue
        used, limit = info["state"].get("bytes", 0), info["config"].get("max_bytes", -1)
        what = "keys" if b.kind.kind == "keyValue" else "objects' chunks"
        size = f"{info['state'].get('messages', 0)} {what}, {used} bytes"
        numbers = {"messages": info["state"].get("messages", 0), "bytes": used, "max_bytes": limit}
        if limit and limit > 0:
            level = WARN if used >= store_warn * limit else OK
            found.append(Finding(level, where, f"as declared; {size} of {limit} ({used / limit:.0%})", numbers))
        else:
            found.append(Finding(OK, where, f"as declared; {size} (no maxBytes)", numbers))
        if view.reads_values:
            found += await check_entries(nc, b)
        elif b.entries:
            found.append(Finding(OK, where, f"{len(b.entries)} declared key(s) not compared: this user reads no "
                                            "values (the admin's check does)"))
    return found


def entry_finding(entry, server: tuple[str, int] | None) -> Finding:
    """A declared key against the server's value (never printed: it may be a secret)."""
    status = entry_status(entry, server)
    if status == NOT_COMPARED:
        return Finding(OK, entry.where, "a secret in the stack file: not compared here (pulumi up writes it)")
    if status == MISSING:
        return Finding(WARN, entry.where, "not on the server (never written, or deleted); `pulumi up` writes it")
    revision = server[1] if server else 0
    if status == DIFFERS:
        return Finding(WARN, entry.where, f"differs from the declaration (server revision {revision}); `pulumi up` "
                                          "writes the declared value back", {"revision": revision})
    return Finding(OK, entry.where, f"as declared (revision {revision})", {"revision": revision})


async def read_declared_entry(nc, bucket, entry) -> tuple[str, int] | None:
    """A declared key's value and revision as the clients read it (the last message on its subject)."""
    answer = await api(nc, f"$JS.API.STREAM.MSG.GET.{bucket.stream_name}",
                        {"last_by_subj": entry_subject(bucket.name, entry.key)})
    return None if "error" in answer else entry_from_message(answer["message"])


async def check_entries(nc, bucket) -> list[Finding]:
    """Each declared key of a key-value bucket, read as the clients read it (the last message on its subject)."""
    return [entry_finding(entry, await read_declared_entry(nc, bucket, entry)) for entry in bucket.entries]


async def _round_trip(nc, stream: str, config: dict) -> Finding:
    where = f"stream {stream}"
    subject = probe_subject(config.get("subjects") or [])
    if subject is None:
        return Finding(OK, where, "round trip skipped: the stream has no subjects of its own (mirror or sourced)")
    if config.get("deny_delete") or config.get("sealed"):
        return Finding(WARN, where, "round trip skipped: the stream denies deletes, a probe could not be removed")
    token = uuid.uuid4().hex.encode()
    try:
        reply = await nc.request(subject, token, timeout=10, headers={"Nats-Msg-Id": token.decode()})
    except nats.errors.TimeoutError as exc:
        if refusals(nc):  # a read-only user (monitor): the probe is a write it may not make
            return Finding(WARN, where, f"round trip skipped: {describe_failure(nc, exc)}; a read-only user runs "
                                        "check with --no-round-trip")
        return Finding(FAIL, where, f"round trip: no acknowledgement from the stream within 10 s for {subject}")
    ack = json.loads(reply.data)
    if "error" in ack:
        return Finding(FAIL, where, f"round trip: publish to {subject} refused: {ack['error'].get('description')}")
    seq = ack["seq"]
    got = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    deleted = await api(nc, f"$JS.API.STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True})
    if "error" in deleted:
        return Finding(FAIL, where, f"round trip: probe {seq} could not be deleted: {deleted['error'].get('description')}")
    if "error" in got or base64.b64decode(got["message"].get("data", "")) != token:
        return Finding(FAIL, where, f"round trip: probe {seq} on {subject} did not read back")
    return Finding(OK, where, f"round trip: published, read back and removed a probe on {subject}")


async def run_checks(server: str, monitor_url: str, settings: Settings, specs: tuple[StreamSpec, ...], *,
                     store_warn: float = 0.8, lag_warn: int = 1000, round_trip: bool = True,
                     buckets=()) -> list[Finding]:
    findings, jsz = await asyncio.to_thread(check_server, monitor_url, settings, store_warn)
    if jsz is None:
        return findings  # nothing further can be checked without a reachable server with JetStream
    try:
        nc = await connect_once(server, timeout=10)
    except CannotConnect as exc:
        return findings + [Finding(FAIL, "server", str(exc))]
    try:
        started = await asyncio.to_thread(server_start, monitor_url)
        view = await open_view(nc)
        if jsz.get("meta_cluster"):
            findings += cluster_findings(jsz, await view.streams())
        findings += await check_catalog(nc, specs, lag_warn=lag_warn, round_trip=round_trip, started=started,
                                        view=view)
        findings += await check_buckets(nc, buckets, store_warn=store_warn, view=view)
    except nats.errors.Error as exc:
        findings.append(Finding(FAIL, "streams", f"could not read the streams: {describe_failure(nc, exc)}"))
    finally:
        await close_quietly(nc)
    return findings


def overall(findings: list[Finding]) -> str:
    levels = {f.level for f in findings}
    return FAIL if FAIL in levels else WARN if WARN in levels else OK


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="is the deployment healthy and as declared?", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", help="check this stack's cluster against its declarations (Pulumi.<STACK>.yaml); with "
                                   "--server or NATS_URL, only whose declarations (default homelab, or the running "
                                   "make dev's)")
    p.add_argument("--server", help="NATS URL (default: NATS_URL, else the running make dev of this checkout)")
    p.add_argument("--monitor", help="monitoring URL (default: NATS_MONITOR_URL, else the server's host on the "
                                     "stack's monitoring port)")
    p.add_argument("--store-warn", type=float, default=0.8, help="warn when a store is this full (default 0.8)")
    p.add_argument("--lag-warn", type=int, default=1000, help="warn above this many pending messages (default 1000)")
    p.add_argument("--no-round-trip", action="store_true", help="skip the publish/read/delete probe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_check)


def cluster_only_findings(target, settings: Settings, present_keys: set[str]) -> list[Finding]:
    """What applies only to the cluster: the backup CronJob's S3 keys. Nothing against a server on this machine."""
    if target.local:
        return []
    missing_keys = backup_credentials_warning(settings, present_keys)
    return [Finding(WARN, "backups", missing_keys)] if missing_keys else []


def monitoring_off_lan(settings: Settings, *, monitor_url: str | None, local: bool) -> str | None:
    """Why check cannot reach the cluster's monitoring port by itself: none named, and the load balancer does not
    carry it (auth on). Nothing for a server on this machine, or when one is named."""
    if monitor_url is not None or local or not settings.load_balancer.enabled or monitoring_on_lan(settings):
        return None
    return f"the load balancer does not carry the monitoring port (auth is on): {monitoring_access(settings)}"


def cmd_check(args) -> int:
    found = announce_with_stack(args)
    if found is None:
        return 2
    target, stack = found
    settings, specs, buckets = stack.settings, stack.catalog, stack.buckets
    server = target.nats_url
    off_lan = monitoring_off_lan(settings, monitor_url=target.monitor_url, local=target.local)
    if off_lan:
        print(f"error: {off_lan}", file=sys.stderr)
        return EXIT[FAIL]
    monitor = target.monitor_url or f"http://{urlparse(server.split(',')[0]).hostname}:{settings.ports.monitoring}"
    findings = asyncio.run(run_checks(server, monitor, settings, specs, store_warn=args.store_warn,
                                      lag_warn=args.lag_warn, round_trip=not args.no_round_trip, buckets=buckets))
    findings += cluster_only_findings(target, settings, set(read_stack_file(target.stack)))
    status = overall(findings)
    if args.json:
        print(json.dumps({"status": status, "server": redact_url(server), "monitor": redact_url(monitor),
                          "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f"{f.level.upper():4s} {f.subject}: {f.message}")
        print(f"overall: {status.upper()}")
    return EXIT[status]
