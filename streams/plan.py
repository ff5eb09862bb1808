"""Where the replace rules live: a pure function from (current, desired) JetStream configs to a plan.

No network. Both sides are normalized first (server defaults filled in, `_nats.*` and this tool's
metadata dropped, numbers as integers, times canonical), so server-filled defaults never show as
changes. The rules follow nats-server 2.15 (checked field by field in tests/streams/test_provider_server.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stack.catalog import MANAGED_BY_KEY, canonical_time
from stack.rules import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_MAX_ACK_PENDING,
    DEFAULT_MAX_WAITING,
    DEFAULT_PINNED_TTL,
)

_EMPTY: tuple[Any, ...] = (None, "", [], {}, False)

STREAM_DEFAULTS = {
    "retention": "limits", "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": 0,
    "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old", "storage": "file", "num_replicas": 1,
    "compression": "none", "first_seq": 0,
}
CONSUMER_DEFAULTS = {"deliver_policy": "all", "ack_policy": "none", "max_deliver": -1, "replay_policy": "instant",
                     "num_replicas": 0}


def _canonical(value: Any, key: str = "") -> Any:
    if type(value) is int:
        return value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and key in ("opt_start_time", "pause_until"):
            return canonical_time(value)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Structs carry every number as a double
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if key == "metadata" and (k.startswith("_nats.") or k == MANAGED_BY_KEY):
                continue
            v = _canonical(v, k)
            if v not in _EMPTY and v != 0:
                out[k] = v
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, key) for v in value]
    return value


def normalize_stream(config: Mapping[str, Any]) -> dict:
    """A stream config with the server's defaults filled in and noise removed."""
    cfg = _canonical(dict(config))
    out = {**STREAM_DEFAULTS, **cfg}
    if "subjects" not in out and "mirror" not in out and "sources" not in out:
        out["subjects"] = [out["name"]]
    if "duplicate_window" not in out and "mirror" not in out and "sources" not in out:
        out["duplicate_window"] = (min(DEFAULT_DUPLICATE_WINDOW, out["max_age"]) if out["max_age"]
                                   else DEFAULT_DUPLICATE_WINDOW)
    if out.get("persist_mode") == "default":
        del out["persist_mode"]  # the server omits the default
    if out.get("republish") and "src" not in out["republish"]:
        out["republish"] = {**out["republish"], "src": ">"}
    if out.get("sealed"):  # what sealing sets, even in pedantic mode (nats-server configUpdateCheckLocked)
        out.update(max_age=0, discard="new", deny_delete=True, deny_purge=True)
        out.pop("allow_rollup_hdrs", None)
    return out


def normalize_consumer(config: Mapping[str, Any], *, stream_max_ack_pending: int | None = None) -> dict:
    """A consumer config with the server's defaults filled in and noise removed."""
    cfg = _canonical(dict(config))
    out = {**CONSUMER_DEFAULTS, **cfg}
    if out.get("durable_name"):
        out["name"] = out["durable_name"]
    pull = not out.get("deliver_subject")
    if out["ack_policy"] != "none":
        out.setdefault("ack_wait", out["backoff"][0] if out.get("backoff") else DEFAULT_ACK_WAIT)
        out.setdefault("max_ack_pending", stream_max_ack_pending or DEFAULT_MAX_ACK_PENDING)
    elif "ack_wait" not in out:
        out["ack_wait"] = DEFAULT_ACK_WAIT
    if pull:
        out.setdefault("max_waiting", DEFAULT_MAX_WAITING)
    if "sample_freq" in out:
        out["sample_freq"] = str(out["sample_freq"]).rstrip("%") + "%"
    if out.get("filter_subjects") and len(out["filter_subjects"]) == 1 and not out.get("filter_subject"):
        out["filter_subject"] = out.pop("filter_subjects")[0]  # the server stores one filter singly
    if out.get("priority_policy") == "none":
        del out["priority_policy"]  # the server omits the default
    if out.get("priority_policy") == "pinned_client":
        out.setdefault("priority_timeout", DEFAULT_PINNED_TTL)
    return out


@dataclass(frozen=True)
class Plan:
    action: str                           # "none" | "update" | "replace"
    changed: tuple[str, ...] = ()         # wire keys that differ
    replace_reasons: tuple[str, ...] = ()
    replace_keys: tuple[str, ...] = ()    # wire keys the server cannot change in place

    @property
    def changes(self) -> bool:
        return self.action != "none"


def _changed(current: dict, desired: dict) -> tuple[str, ...]:
    return tuple(sorted(k for k in set(current) | set(desired) if current.get(k) != desired.get(k)))


IRREVERSIBLE_STREAM_FLAGS = (("deny_delete", "denyDelete"), ("deny_purge", "denyPurge"), ("sealed", "sealed"),
                             ("allow_msg_ttl", "allowMsgTtl"), ("allow_msg_schedules", "allowMsgSchedules"))
# Wire keys whose change can force a replacement: an unknown value there at preview may mean one.
STREAM_REPLACE_KEYS = ("name", "storage", "retention", "mirror", "allow_msg_counter", "persist_mode",
                       *(k for k, _ in IRREVERSIBLE_STREAM_FLAGS))


def _stream_replace_reasons(cur: dict, new: dict) -> list[tuple[str, str]]:
    reasons = []
    if cur.get("name") != new.get("name"):
        reasons.append(("name", "name: a stream cannot be renamed"))
    if cur["storage"] != new["storage"]:
        reasons.append(("storage", f"storage: {cur['storage']} -> {new['storage']} cannot change in place"))
    if cur["retention"] != new["retention"] and "workqueue" in (cur["retention"], new["retention"]):
        reasons.append(("retention", f"retention: {cur['retention']} -> {new['retention']} (to or from workqueue) "
                                     "cannot change in place"))
    for flag, what in IRREVERSIBLE_STREAM_FLAGS:
        if cur.get(flag) and not new.get(flag):
            reasons.append((flag, f"{what}: true -> false is refused by the server"))
    for key, what in (("allow_msg_counter", "allowMsgCounter"), ("persist_mode", "persistMode")):
        if cur.get(key) != new.get(key):
            reasons.append((key, f"{what}: cannot change after creation"))
    # A mirror cannot be added or changed; removing it promotes the mirror to a normal stream in place.
    if new.get("mirror") is not None and cur.get("mirror") != new.get("mirror"):
        reasons.append(("mirror", "mirror: cannot be added or changed after creation (removing it promotes the "
                                  "mirror in place)"))
    return reasons


def _plan(changed: tuple[str, ...], reasons: list[tuple[str, str]]) -> Plan:
    if not changed:
        return Plan("none")
    if not reasons:
        return Plan("update", changed)
    keys = tuple(dict.fromkeys(k for k, _ in reasons))
    return Plan("replace", changed, tuple(dict.fromkeys(r for _, r in reasons)), keys)


def keep_from(desired: Mapping[str, Any], current: Mapping[str, Any], keys: tuple[str, ...]) -> dict:
    """`desired` with `keys` as the `current` config has them (fields left to whoever set them: for buckets, the
    flags the client libraries set differently, stack/buckets.py)."""
    return {**{k: v for k, v in desired.items() if k not in keys}, **{k: current[k] for k in keys if k in current}}


def plan_stream_change(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Plan:
    cur, new = normalize_stream(current), normalize_stream(desired)
    changed = _changed(cur, new)
    return _plan(changed, _stream_replace_reasons(cur, new) if changed else [])


CONSUMER_IMMUTABLE = (("deliver_policy", "deliverPolicy"), ("opt_start_seq", "optStartSeq"),
                       ("opt_start_time", "optStartTime"), ("ack_policy", "ackPolicy"),
                       ("replay_policy", "replayPolicy"), ("mem_storage", "memStorage"),
                       ("idle_heartbeat", "idleHeartbeat"), ("flow_control", "flowControl"),
                       ("max_waiting", "maxWaiting"))


def plan_consumer_change(current: Mapping[str, Any], desired: Mapping[str, Any], *,
                         stream_max_ack_pending: int | None = None) -> Plan:
    cur = normalize_consumer(current, stream_max_ack_pending=stream_max_ack_pending)
    new = normalize_consumer(desired, stream_max_ack_pending=stream_max_ack_pending)
    changed = _changed(cur, new)
    reasons = [(key, f"{what}: cannot change after creation") for key, what in CONSUMER_IMMUTABLE
               if cur.get(key) != new.get(key)]
    if cur.get("durable_name") != new.get("durable_name"):
        reasons.append(("durable_name", "name: a consumer cannot be renamed"))
    if bool(cur.get("deliver_subject")) != bool(new.get("deliver_subject")):
        reasons.append(("deliver_subject", "deliverSubject: a consumer cannot switch between pull and push"))
    return _plan(changed, reasons)
