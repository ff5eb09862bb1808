"""`python -m streams report`: every stream, consumer and bucket on the server, with its numbers.

The guide's `nats stream report` and `nats consumer report` in one: streams declared by the stack or not (marked
which), key-value buckets and object stores, and the server's own (`$MQTT_*`, made by its MQTT listener), with
messages, bytes, first and last message time, subjects, consumers and replicas; each consumer with pending, ack
pending, redelivered, ack floor and the age of its last delivery and last ack. A table for people; `--json` the same
with numbers for machines. It only reads.

`build_report` is pure (server answers in, rows out); the command only fetches and prints.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

import nats.errors

from stack.buckets import entry_status
from stack.rules import is_server_owned
from stack.units import parse_server_time
from streams.cli.check import read_declared_entry
from streams.cli.target import announce_with_stack
from streams.cli.view import open_view
from streams.connection import CannotConnect, close_quietly, connect_once, describe_failure


def _age(ts: str | None, now: datetime) -> float | None:
    """Seconds since a server timestamp; None when the server has none (the zero time, or absent)."""
    if not ts or ts.startswith("0001-"):
        return None
    return round((now - parse_server_time(ts)).total_seconds(), 3)


def _kind(name: str, declared_streams: set[str], buckets: dict[str, str]) -> tuple[str, bool]:
    """What the stream is, and whether the stack declares it."""
    if name in buckets:
        return buckets[name], True
    if is_server_owned(name):
        return "server's own (MQTT)", False
    if name.startswith("KV_"):
        return f"key-value bucket {name[3:]}", False
    if name.startswith("OBJ_"):
        return f"object store {name[4:]}", False
    return "stream", name in declared_streams


def build_report(streams: list[dict], consumers: dict[str, list[dict]], *, declared_streams: set[str],
                 declared_consumers: set[tuple[str, str]], buckets: dict[str, str], now: datetime) -> dict:
    """Rows for every stream and consumer from the server's STREAM.LIST and CONSUMER.LIST answers."""
    stream_rows, consumer_rows = [], []
    for info in sorted(streams, key=lambda i: i["config"]["name"]):
        cfg, state = info["config"], info.get("state") or {}
        name = cfg["name"]
        kind, declared = _kind(name, declared_streams, buckets)
        stream_rows.append({
            "name": name, "kind": kind, "declared": declared, "storage": cfg.get("storage", "file"),
            "replicas": cfg.get("num_replicas", 1), "messages": state.get("messages", 0),
            "bytes": state.get("bytes", 0), "first_seq": state.get("first_seq", 0), "last_seq": state.get("last_seq", 0),
            "first_ts": state.get("first_ts"), "last_ts": state.get("last_ts"),
            "last_message_age_s": _age(state.get("last_ts"), now), "subjects": state.get("num_subjects", 0),
            "consumers": state.get("consumer_count", 0),
            # a cluster's: the stream leader and its replicas' largest lag (None on a standalone server)
            "leader": (info.get("cluster") or {}).get("leader") if (info.get("cluster") or {}).get("name") else None,
            "replica_lag": max([r.get("lag", 0) for r in (info.get("cluster") or {}).get("replicas") or []] or [0])
            if (info.get("cluster") or {}).get("name") else None,
        })
        for ci in sorted(consumers.get(name, []), key=lambda c: c["name"]):
            delivered, floor = ci.get("delivered") or {}, ci.get("ack_floor") or {}
            consumer_rows.append({
                "stream": name, "name": ci["name"], "declared": (name, ci["name"]) in declared_consumers,
                "pending": ci.get("num_pending", 0), "ack_pending": ci.get("num_ack_pending", 0),
                "redelivered": ci.get("num_redelivered", 0), "waiting": ci.get("num_waiting", 0),
                "delivered_stream_seq": delivered.get("stream_seq", 0), "ack_floor_stream_seq": floor.get("stream_seq", 0),
                "last_delivery_age_s": _age(delivered.get("last_active"), now),
                "last_ack_age_s": _age(floor.get("last_active"), now),
            })
    return {"streams": stream_rows, "consumers": consumer_rows}


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def format_report(report: dict) -> str:
    streams = [["STREAM", "KIND", "DECLARED", "STORAGE", "R", "MESSAGES", "BYTES", "FIRST", "LAST MESSAGE", "SUBJECTS",
                "CONSUMERS"]]
    for s in report["streams"]:
        streams.append([s["name"], s["kind"], "yes" if s["declared"] else "no", s["storage"], str(s["replicas"]),
                        f"{s['messages']:,}", _human_bytes(s["bytes"]), str(s["first_seq"]),
                        _human_age(s["last_message_age_s"]), f"{s['subjects']:,}", str(s["consumers"])])
    if any(s["leader"] is not None for s in report["streams"]):   # a cluster: where each stream leads, its lag
        streams[0] += ["LEADER", "REPLICA LAG"]
        for row, s in zip(streams[1:], report["streams"], strict=True):
            row += [s["leader"] or "none", f"{s['replica_lag']:,}"]
    out = _table(streams)
    if report["consumers"]:
        consumers = [["CONSUMER", "DECLARED", "PENDING", "ACK PENDING", "REDELIVERED", "ACK FLOOR", "LAST DELIVERY",
                      "LAST ACK"]]
        for c in report["consumers"]:
            consumers.append([f"{c['stream']}/{c['name']}", "yes" if c["declared"] else "no", f"{c['pending']:,}",
                              f"{c['ack_pending']:,}", f"{c['redelivered']:,}", str(c["ack_floor_stream_seq"]),
                              _human_age(c["last_delivery_age_s"]), _human_age(c["last_ack_age_s"])])
        out += "\n\n" + _table(consumers)
    if report.get("keys"):
        keys = [["DECLARED KEY", "STATUS", "REVISION"]]
        keys += [[f"{k['bucket']}/{k['key']}", k["status"], str(k["revision"] or "-")] for k in report["keys"]]
        out += "\n\n" + _table(keys)
    return out + "\n"


async def fetch(view) -> tuple[list[dict], dict[str, list[dict]]]:
    """Every stream and each one's consumers, through the user's view (streams/cli/view.py)."""
    streams = await view.streams()
    consumers = {}
    for info in streams:
        name = info["config"]["name"]
        if (info.get("state") or {}).get("consumer_count"):
            consumers[name] = await view.consumers(name)
    return streams, consumers


def _key_row(entry, server: tuple[str, int] | None) -> dict:
    """A declared key's row: its status against the server and the server's revision (never the value)."""
    return {"status": entry_status(entry, server), "revision": server[1] if server else None}


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="every stream, consumer and bucket with its numbers", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", help="a stack's cluster, and whose declarations mark what is declared (default: the "
                                   "running make dev's, else homelab)")
    p.add_argument("--server", help="NATS URL (default: NATS_URL, else the running make dev of this checkout)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_report)


def cmd_report(args) -> int:

    found = announce_with_stack(args)
    if found is None:
        return 2
    target, stack = found
    catalog, buckets = stack.catalog, stack.buckets

    async def go():
        nc = await connect_once(target.nats_url)
        try:
            view = await open_view(nc)
            streams, consumers = await fetch(view)
            keys = [{"bucket": b.name, "key": e.key,
                     **_key_row(e, await read_declared_entry(nc, b, e) if e.value is not None else None)}
                    for b in buckets for e in b.entries] if view.reads_values else []
            return streams, consumers, keys
        except (nats.errors.Error, RuntimeError) as exc:
            raise CannotConnect(f"could not read the streams: {describe_failure(nc, exc)}") from None
        finally:
            await close_quietly(nc)
    try:
        streams, consumers, keys = asyncio.run(go())
    except CannotConnect as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = build_report(
        streams, consumers, declared_streams={s.name for s in catalog},
        declared_consumers={(s.name, c.name) for s in catalog for c in s.consumers},
        buckets={b.stream_name: f"{b.kind.label} {b.name}" for b in buckets}, now=datetime.now(UTC))
    if keys:
        report["keys"] = keys
    print(json.dumps(report, indent=2) if args.json else format_report(report), end="" if not args.json else "\n")
    return 0
