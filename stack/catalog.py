"""The stream and consumer catalog: declarations in the stack config (camelCase keys, nats CLI
units) and their JetStream API form (snake_case, bytes, integer nanoseconds).

One table of fields per kind drives everything: parsing a declaration into the wire config,
turning a server config back into a declaration (for `pulumi refresh`), and the error messages,
which name the stream or consumer and the key as the user wrote it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stack.rules import (
    MAX_REPLICAS,
    RuleBroken,
    StreamContext,
    check_consumer_rules,
    check_stream_rules,
    check_workqueue_partition,
    consumer_filters,
    fill_consumer_defaults,
    fill_stream_defaults,
    is_server_owned,
)
from stack.subjects import name_problem, subject_problem, subjects_overlap
from stack.units import UnitError, format_duration, parse_duration, parse_server_time, parse_size, whole_number

# Keys that steer the provider rather than the server.
STREAM_CONTROL_KEYS = ("allowDataLoss", "protect", "consumers", "renamedFrom")
CONSUMER_CONTROL_KEYS = ("allowDataLoss",)
# Metadata key the provider stamps on objects it manages: it tells "ours, being replaced" from
# "made with the nats CLI, being adopted". Never shown as a difference.
MANAGED_BY_KEY = "homelab-nats.managed-by"
MANAGED_BY_VALUE = "pulumi"


def mark_managed(config: dict) -> dict:
    """A wire config with this tool's mark in its metadata: what it creates carries it, and what carries it is its."""
    return {**config, "metadata": {**(config.get("metadata") or {}), MANAGED_BY_KEY: MANAGED_BY_VALUE}}


class CatalogError(ValueError):
    """A declaration that cannot be applied. `where` names the object, `key` the offending key."""

    def __init__(self, where: str, key: str | None, problem: str):
        self.where, self.key, self.problem = where, key, problem
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


# ---------------------------------------------------------------- converters (camel value <-> wire)

class _Bad(ValueError):
    """Raised by converters; turned into a CatalogError naming the object and key."""


def _str(v):
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {v!r}")
    return v


def _enum(*choices: str, aliases: Mapping[str, str] | None = None):
    def conv(v):
        v2 = (aliases or {}).get(v, v)
        if v2 not in choices:
            raise _Bad(f"{v!r} is not one of {', '.join(choices)}")
        return v2
    return conv


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {v!r}")
    return v


def _whole_number_at_least(minimum: int, *, unlimited: bool = False):
    """A field converter: a whole number from `minimum` (or -1 for unlimited where that is allowed)."""
    def conv(v):
        number = whole_number(v)
        if number is None:
            raise _Bad(f"expected a whole number, got {v!r}")
        v = number
        if v < minimum and not (unlimited and v == -1):
            raise _Bad(f"must be at least {minimum}" + (" (or -1 for unlimited)" if unlimited else "") + f", got {v}")
        return v
    return conv


def _size(v):
    try:
        return parse_size(v)
    except UnitError as exc:
        raise _Bad(str(exc)) from None


def _duration(v):
    try:
        return parse_duration(v)
    except UnitError as exc:
        raise _Bad(str(exc)) from None


def _durations(v):
    if not isinstance(v, list) or not v:
        raise _Bad(f"expected a list of durations such as [1s, 5s, 30s], got {v!r}")
    out = [_duration(x) for x in v]
    if any(d <= 0 for d in out):
        raise _Bad("every duration must be greater than zero")
    return out


def _subject(v):
    problem = subject_problem(v)
    if problem:
        raise _Bad(problem)
    return v


def _subject_list(v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise _Bad(f"expected a list of subjects such as [\"sensors.>\"], got {v!r}")
    out = [_subject(s) for s in v]
    if len(set(out)) != len(out):
        raise _Bad(f"lists a subject twice: {out}")
    return out


def _subjects(v):
    out = _subject_list(v)
    for i, a in enumerate(out):
        for b in out[i + 1:]:
            if subjects_overlap(a, b):
                raise _Bad(f"subjects {a!r} and {b!r} overlap; keep the wider one")
    return out


def _metadata(v):
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise _Bad(f"expected a map of strings to strings, got {v!r}")
    reserved = [k for k in v if k.startswith("_nats.") or k == MANAGED_BY_KEY]
    if reserved:
        raise _Bad(f"keys {reserved} are reserved for the server and this tool")
    return dict(v)


def _time(v):
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad(f"{v!r} is not an RFC 3339 time such as 2025-07-15T10:00:00Z") from None
    else:
        raise _Bad(f"{v!r} is not an RFC 3339 time such as 2025-07-15T10:00:00Z")
    if dt.tzinfo is None:
        raise _Bad(f"{v!r} has no time zone; add Z for UTC (2025-07-15T10:00:00Z)")
    return canonical_time(dt)


def canonical_time(value: str | datetime) -> str:
    """RFC 3339 in UTC with a Z, to the microsecond: the form times are compared in."""
    dt = value if isinstance(value, datetime) else parse_server_time(value)
    dt = dt.astimezone(UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def _percent(v):
    if isinstance(v, float) and v.is_integer():  # YAML `50` can arrive as 50.0 through the engine
        v = int(v)
    text = str(v).strip().rstrip("%") if isinstance(v, (str, int)) and not isinstance(v, bool) else None
    if text is None or not text.isdigit() or not 0 <= int(text) <= 100:
        raise _Bad(f"{v!r} is not a percentage from 0 to 100 such as \"10%\"")
    return f"{int(text)}%"


def _same(v):
    return v


def _names(v):
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise _Bad(f"expected a list of names such as [jobs], got {v!r}")
    return v


@dataclass(frozen=True)
class Field:
    camel: str
    wire: str
    to_wire: Callable[[Any], Any]
    from_wire: Callable[[Any], Any] = _same


def _object(fields: tuple[Field, ...], *, required: tuple[str, ...] = ()):
    by_camel = {f.camel: f for f in fields}

    def conv(v):
        if not isinstance(v, Mapping):
            raise _Bad(f"expected an object with keys {', '.join(by_camel)}, got {v!r}")
        unknown = sorted(set(v) - set(by_camel))
        if unknown:
            raise _Bad(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(by_camel)}")
        missing = [k for k in required if k not in v]
        if missing:
            raise _Bad(f"missing {', '.join(missing)}")
        out = {}
        for k, x in v.items():
            try:
                out[by_camel[k].wire] = by_camel[k].to_wire(x)
            except _Bad as exc:
                raise _Bad(f"{k}: {exc}") from None
        return out

    def back(w):
        by_wire = {f.wire: f for f in fields}
        return {by_wire[k].camel: by_wire[k].from_wire(x) for k, x in (w or {}).items()
                if k in by_wire and x not in (None, "", [], {}, False, 0)}
    return conv, back


def _list_of(conv_back):
    conv, back = conv_back

    def c(v):
        if not isinstance(v, list):
            raise _Bad(f"expected a list, got {v!r}")
        return [conv(x) for x in v]
    return c, (lambda w: [back(x) for x in (w or [])])


_external = _object((Field("api", "api", _str), Field("deliver", "deliver", _str)))
_transform = _object((Field("source", "src", _subject), Field("destination", "dest", _str)),
                     required=("source", "destination"))
_source_fields = (
    Field("name", "name", _str),
    Field("optStartSeq", "opt_start_seq", _whole_number_at_least(1)),
    Field("optStartTime", "opt_start_time", _time),
    Field("filterSubject", "filter_subject", _subject),
    Field("subjectTransforms", "subject_transforms", *_list_of(_transform)),
    Field("external", "external", *_external),
    Field("consumer", "consumer", *_object((Field("name", "name", _str),
                                           Field("deliverSubject", "deliver_subject", _str)))),
)
_source = _object(_source_fields, required=("name",))

STREAM_FIELDS: tuple[Field, ...] = (
    Field("description", "description", _str),
    Field("subjects", "subjects", _subjects),
    Field("storage", "storage", _enum("file", "memory")),
    Field("retention", "retention", _enum("limits", "interest", "workqueue", aliases={"work": "workqueue"})),
    Field("discard", "discard", _enum("old", "new")),
    Field("discardNewPerSubject", "discard_new_per_subject", _bool),
    Field("maxAge", "max_age", _duration, format_duration),
    Field("maxBytes", "max_bytes", _size),
    Field("maxMsgs", "max_msgs", _whole_number_at_least(1, unlimited=True)),
    Field("maxMsgsPerSubject", "max_msgs_per_subject", _whole_number_at_least(1, unlimited=True)),
    Field("maxMsgSize", "max_msg_size", _size),
    Field("maxConsumers", "max_consumers", _whole_number_at_least(1, unlimited=True)),
    Field("replicas", "num_replicas", _whole_number_at_least(1)),
    Field("noAck", "no_ack", _bool),
    Field("duplicateWindow", "duplicate_window", _duration, format_duration),
    Field("compression", "compression", _enum("none", "s2")),
    Field("firstSeq", "first_seq", _whole_number_at_least(0)),
    Field("denyDelete", "deny_delete", _bool),
    Field("denyPurge", "deny_purge", _bool),
    Field("allowRollup", "allow_rollup_hdrs", _bool),
    Field("allowDirect", "allow_direct", _bool),
    Field("mirrorDirect", "mirror_direct", _bool),
    Field("allowMsgTtl", "allow_msg_ttl", _bool),
    Field("subjectDeleteMarkerTtl", "subject_delete_marker_ttl", _duration, format_duration),
    Field("allowMsgCounter", "allow_msg_counter", _bool),
    Field("allowAtomic", "allow_atomic", _bool),
    Field("allowBatched", "allow_batched", _bool),
    Field("allowMsgSchedules", "allow_msg_schedules", _bool),
    Field("persistMode", "persist_mode", _enum("default", "async")),
    Field("sealed", "sealed", _bool),
    Field("metadata", "metadata", _metadata),
    Field("republish", "republish", *_object((Field("source", "src", _subject), Field("destination", "dest", _str),
                                               Field("headersOnly", "headers_only", _bool)),
                                              required=("destination",))),
    Field("subjectTransform", "subject_transform", *_transform),
    Field("placement", "placement", *_object((Field("cluster", "cluster", _str),
                                               Field("tags", "tags", lambda v: [_str(t) for t in v] if isinstance(v, list) else _str(v))))),
    Field("consumerLimits", "consumer_limits", *_object((
        Field("inactiveThreshold", "inactive_threshold", _duration, format_duration),
        Field("maxAckPending", "max_ack_pending", _whole_number_at_least(1, unlimited=True))))),
    Field("mirror", "mirror", *_source),
    Field("sources", "sources", *_list_of(_source)),
)

CONSUMER_FIELDS: tuple[Field, ...] = (
    Field("description", "description", _str),
    Field("filterSubject", "filter_subject", _subject),
    Field("filterSubjects", "filter_subjects", _subject_list),
    Field("deliverPolicy", "deliver_policy", _enum("all", "last", "new", "by_start_sequence", "by_start_time",
                                                   "last_per_subject")),
    Field("optStartSeq", "opt_start_seq", _whole_number_at_least(1)),
    Field("optStartTime", "opt_start_time", _time),
    Field("ackPolicy", "ack_policy", _enum("explicit", "all", "none", "flow_control")),
    Field("ackWait", "ack_wait", _duration, format_duration),
    Field("maxDeliver", "max_deliver", _whole_number_at_least(1, unlimited=True)),
    Field("backoff", "backoff", _durations, lambda w: [format_duration(x) for x in w]),
    Field("replayPolicy", "replay_policy", _enum("instant", "original")),
    Field("sampleFrequency", "sample_freq", _percent),
    Field("maxAckPending", "max_ack_pending", _whole_number_at_least(1, unlimited=True)),
    Field("maxWaiting", "max_waiting", _whole_number_at_least(1)),
    Field("maxBatch", "max_batch", _whole_number_at_least(1)),
    Field("maxExpires", "max_expires", _duration, format_duration),
    Field("maxBytes", "max_bytes", _size),
    Field("inactiveThreshold", "inactive_threshold", _duration, format_duration),
    Field("headersOnly", "headers_only", _bool),
    Field("replicas", "num_replicas", _whole_number_at_least(0)),
    Field("memStorage", "mem_storage", _bool),
    Field("metadata", "metadata", _metadata),
    Field("deliverSubject", "deliver_subject", lambda v: _subject_no_wildcards(v)),
    Field("deliverGroup", "deliver_group", _str),
    Field("idleHeartbeat", "idle_heartbeat", _duration, format_duration),
    Field("flowControl", "flow_control", _bool),
    Field("rateLimit", "rate_limit_bps", _whole_number_at_least(1)),
    Field("pauseUntil", "pause_until", _time),
    Field("priorityPolicy", "priority_policy", _enum("none", "overflow", "pinned_client", "prioritized")),
    Field("priorityGroups", "priority_groups", _names),
    Field("priorityTimeout", "priority_timeout", _duration, format_duration),
)
PULL_ONLY = ("maxWaiting", "maxBatch", "maxExpires", "maxBytes", "priorityGroups", "priorityTimeout")
PUSH_ONLY = ("deliverGroup", "idleHeartbeat", "flowControl", "rateLimit")


def _subject_no_wildcards(v):
    problem = subject_problem(v, wildcards=False)
    if problem:
        raise _Bad(problem)
    return v


_STREAM_BY_CAMEL = {f.camel: f for f in STREAM_FIELDS}
_CONSUMER_BY_CAMEL = {f.camel: f for f in CONSUMER_FIELDS}


def _to_wire(decl: Mapping[str, Any], fields: Mapping[str, Field], where: str, skip: tuple[str, ...]) -> dict:
    if not isinstance(decl, Mapping):
        raise CatalogError(where, None, f"expected an object of settings, got {decl!r}")
    unknown = sorted(set(decl) - set(fields) - set(skip))
    if unknown:
        raise CatalogError(where, unknown[0], f"unknown key; allowed: {', '.join(list(fields) + list(skip))}")
    wire = {}
    for key, value in decl.items():
        if key in skip or value is None:
            continue
        try:
            wire[fields[key].wire] = fields[key].to_wire(value)
        except _Bad as exc:
            raise CatalogError(where, key, str(exc)) from None
    return wire


def check_declared_values(where: str, decl: Mapping[str, Any], *, kind: str) -> None:
    """Each declared value on its own (type, unit, syntax): what can be checked while other values of the
    declaration are still unknown at preview."""
    if kind == "stream":
        _to_wire(decl, _STREAM_BY_CAMEL, where, STREAM_CONTROL_KEYS)
    else:
        _to_wire(decl, _CONSUMER_BY_CAMEL, where, CONSUMER_CONTROL_KEYS)


def _from_wire(config: Mapping[str, Any], fields: tuple[Field, ...]) -> dict:
    by_wire = {f.wire: f for f in fields}
    out = {}
    for k, v in config.items():
        if k in by_wire and v is not None:
            if k == "metadata":
                v = {mk: mv for mk, mv in v.items() if not mk.startswith("_nats.") and mk != MANAGED_BY_KEY}
            out[by_wire[k].camel] = by_wire[k].from_wire(v)
    return out


# ---------------------------------------------------------------- streams

def stream_where(name: str) -> str:
    return f"stream {name!r}"


def consumer_where(stream: str, name: str) -> str:
    return f"consumer {name!r} of stream {stream!r}"


def _flag(decl: Mapping[str, Any], key: str, where: str) -> None:
    if key in decl and decl[key] is not None and not isinstance(decl[key], bool):
        raise CatalogError(where, key, f"expected true or false, got {decl[key]!r}")


# `replicas: cluster`: as many replicas as the deployment has JetStream nodes (homelab-nats:replicas), at most the
# server's 5. One node: R1; grown to three: R3, with the `pulumi up` after `python -m streams cluster grow`.
FOLLOW_THE_CLUSTER = "cluster"


def cluster_replicas(servers: int) -> int:
    return min(servers, MAX_REPLICAS)


def stream_wire_config(name: str, decl: Mapping[str, Any], *, max_replicas: int = 1,
                       creating: bool | None = None) -> dict:
    """The JetStream API config for a stream declaration; raises CatalogError naming the key.

    Values the server would fill in by itself (a duplicate window no longer than maxAge, a republish
    source of `>`) are written in, so pedantic mode accepts the declaration and what runs is what is
    declared. Every rule nats-server applies to one stream config is checked here (stack.rules)."""
    where = stream_where(name)
    problem = name_problem(name)
    if problem:
        raise CatalogError(where, None, f"the name {problem}")
    if is_server_owned(name):
        raise CatalogError(where, None, "the name is one nats-server gives its own MQTT streams ($MQTT_…): the server "
                                        "makes and manages them; choose another name")
    if decl.get("replicas") == FOLLOW_THE_CLUSTER:
        decl = {**decl, "replicas": cluster_replicas(max_replicas)}
    cfg = _to_wire(decl, _STREAM_BY_CAMEL, where, STREAM_CONTROL_KEYS)
    for key in ("allowDataLoss", "protect"):
        _flag(decl, key, where)
    renamed_from = decl.get("renamedFrom")
    if renamed_from is not None and (name_problem(renamed_from) or renamed_from == name):
        raise CatalogError(where, "renamedFrom", f"expected the stream's previous name, got {renamed_from!r}")
    cfg["name"] = name
    if cfg.get("num_replicas", 1) > max_replicas:
        raise CatalogError(where, "replicas", f"{cfg['num_replicas']} replicas need {cfg['num_replicas']} JetStream "
                                              f"servers; this deployment runs {max_replicas}")
    if "mirror" in cfg and ("subjects" in cfg or "sources" in cfg):
        raise CatalogError(where, "mirror", "a mirror takes no subjects or sources of its own")
    if "mirror" not in cfg and "sources" not in cfg and "subjects" not in cfg:
        raise CatalogError(where, "subjects", "missing: declare the subjects the stream captures, e.g. "
                                              "subjects: [\"sensors.>\"]")
    fill_stream_defaults(cfg)
    try:
        check_stream_rules(cfg, creating=creating)
    except RuleBroken as exc:
        raise CatalogError(where, exc.key, exc.problem) from None
    return cfg


def stream_declaration(config: Mapping[str, Any]) -> dict:
    """A server's stream config as a declaration (camelCase, CLI units): what `refresh` records."""
    return _from_wire(config, STREAM_FIELDS)


# ---------------------------------------------------------------- consumers

def consumer_wire_config(stream: str, name: str, decl: Mapping[str, Any], *,
                         context: StreamContext | None = None) -> dict:
    """The JetStream API config for a consumer declaration; raises CatalogError naming the key.

    Unset ackPolicy is `explicit`, as `nats consumer add --defaults` makes it. `context` is what the stack
    knows of the stream (subjects, replicas, retention, consumer limits); without it only the consumer's
    own rules are checked. Limits the server would inherit from the stream are written in."""
    where = consumer_where(stream, name)
    problem = name_problem(name)
    if problem:
        raise CatalogError(where, None, f"the name {problem}")
    cfg = _to_wire(decl, _CONSUMER_BY_CAMEL, where, CONSUMER_CONTROL_KEYS)
    _flag(decl, "allowDataLoss", where)
    cfg = {"durable_name": name, "ack_policy": "explicit", **cfg}
    push = "deliver_subject" in cfg
    for key in (PULL_ONLY if push else PUSH_ONLY):
        if key in decl:
            raise CatalogError(where, key, f"applies to {'pull' if push else 'push'} consumers only; this one is "
                                           f"{'push (it has a deliverSubject)' if push else 'pull (no deliverSubject)'}")
    if "filter_subject" in cfg and "filter_subjects" in cfg:
        raise CatalogError(where, "filterSubjects", "give filterSubject or filterSubjects, not both")
    policy = cfg.get("deliver_policy")
    if policy is None:
        if "opt_start_time" in cfg:
            policy = cfg["deliver_policy"] = "by_start_time"
        elif "opt_start_seq" in cfg:
            policy = cfg["deliver_policy"] = "by_start_sequence"
    if policy == "by_start_time" and "opt_start_time" not in cfg:
        raise CatalogError(where, "optStartTime", "deliverPolicy by_start_time needs optStartTime "
                                                  "(e.g. 2025-07-15T10:00:00Z)")
    if policy == "by_start_sequence" and "opt_start_seq" not in cfg:
        raise CatalogError(where, "optStartSeq", "deliverPolicy by_start_sequence needs optStartSeq")
    if "opt_start_time" in cfg and policy != "by_start_time":
        raise CatalogError(where, "optStartTime", f"only applies with deliverPolicy by_start_time, not {policy}")
    if "opt_start_seq" in cfg and policy != "by_start_sequence":
        raise CatalogError(where, "optStartSeq", f"only applies with deliverPolicy by_start_sequence, not {policy}")
    backoff = cfg.get("backoff")
    if backoff:
        if cfg["ack_policy"] == "none":
            raise CatalogError(where, "backoff", "redelivery backoff needs acks; set ackPolicy explicit or all")
        max_deliver = cfg.get("max_deliver", -1)
        if max_deliver != -1 and len(backoff) > max_deliver:
            raise CatalogError(where, "backoff", f"has {len(backoff)} steps but maxDeliver is {max_deliver}; a "
                                                 "message is redelivered at most maxDeliver times")
        if "ack_wait" in cfg and cfg["ack_wait"] != backoff[0]:
            raise CatalogError(where, "ackWait", "with backoff, the first backoff step is the ack wait; leave "
                                                 "ackWait out or make it equal backoff[0]")
        cfg["ack_wait"] = backoff[0]
    if cfg.get("flow_control") and not cfg.get("idle_heartbeat"):
        raise CatalogError(where, "flowControl", "needs idleHeartbeat (e.g. 5s)")
    if cfg.get("deliver_group") and cfg.get("flow_control"):
        raise CatalogError(where, "flowControl", "cannot be used with a deliverGroup (queue push consumer)")
    if context is not None and cfg.get("num_replicas", 0) > context.replicas:
        raise CatalogError(where, "replicas", f"{cfg['num_replicas']} is more than the stream's or deployment's "
                                              f"{context.replicas}")
    if context is not None:
        fill_consumer_defaults(cfg, context)
    try:
        check_consumer_rules(cfg, context or StreamContext())
    except RuleBroken as exc:
        raise CatalogError(where, exc.key, exc.problem) from None
    return cfg


def consumer_declaration(config: Mapping[str, Any]) -> dict:
    return _from_wire(config, CONSUMER_FIELDS)


def filters_receiving_nothing(cfg: Mapping[str, Any], stream_subjects: list[str] | tuple[str, ...]) -> list[str]:
    """Filters that match none of the stream's subjects (valid for the server, but never delivering)."""
    if not stream_subjects:
        return []
    return [f for f in consumer_filters(cfg) if not any(subjects_overlap(f, s) for s in stream_subjects)]


# ---------------------------------------------------------------- the whole catalog

@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    name: str
    declaration: dict
    config: dict
    context: StreamContext = field(default_factory=StreamContext)
    stream_allows_data_loss: bool = False


@dataclass(frozen=True)
class StreamSpec:
    name: str
    declaration: dict          # as written, without `consumers`
    config: dict               # JetStream API form
    allow_data_loss: bool
    protect: bool
    consumers: tuple[ConsumerSpec, ...] = field(default=())


def load_catalog(streams: Any, *, max_replicas: int = 1,
                 store_limits: Mapping[str, int] | None = None) -> tuple[StreamSpec, ...]:
    """Validate the `streams` stack config key (a map of stream name -> declaration) as a whole: each
    object's own rules, and the rules that span objects (subjects shared by two streams, consumers that
    do not partition a workqueue stream, renames, stream sizes against the JetStream stores)."""
    if streams is None:
        return ()
    if not isinstance(streams, Mapping):
        raise CatalogError("homelab-nats:streams", None, "expected a map of stream names to settings")
    specs = []
    for name, decl in streams.items():
        decl = decl or {}
        cfg = stream_wire_config(name, decl, max_replicas=max_replicas)
        consumers_decl = decl.get("consumers") or {}
        if not isinstance(consumers_decl, Mapping):
            raise CatalogError(stream_where(name), "consumers", "expected a map of consumer names to settings")
        context = StreamContext.of(cfg, max_replicas=max_replicas)
        allow_loss = bool(decl.get("allowDataLoss", False))
        for cname, cdecl in consumers_decl.items():
            if cdecl is not None and not isinstance(cdecl, Mapping):
                raise CatalogError(consumer_where(name, str(cname)), None,
                                   f"expected an object of settings such as {{ackPolicy: explicit}}, got {cdecl!r}")
        consumers = tuple(
            ConsumerSpec(name, cname, dict(cdecl or {}), consumer_wire_config(name, cname, cdecl or {}, context=context),
                         context, allow_loss)
            for cname, cdecl in consumers_decl.items())
        if cfg.get("retention") == "workqueue":
            clash = check_workqueue_partition([(c.name, c.config) for c in consumers])
            if clash:
                raise CatalogError(consumer_where(name, clash[1]), "filterSubject",
                                   f"overlaps consumer {clash[0]!r} (or one has no filter): consumers of a workqueue "
                                   "stream must each take their own filter subjects")
        specs.append(StreamSpec(name, {k: v for k, v in decl.items() if k != "consumers"}, cfg,
                                allow_loss, bool(decl.get("protect", False)), consumers))
    names = {s.name for s in specs}
    for spec in specs:
        old = spec.declaration.get("renamedFrom")
        if old in names:
            raise CatalogError(stream_where(spec.name), "renamedFrom",
                               f"{old!r} is still declared; remove its declaration to rename it")
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            for sa in a.config.get("subjects", []):
                for sb in b.config.get("subjects", []):
                    if subjects_overlap(sa, sb):
                        raise CatalogError(stream_where(b.name), "subjects",
                                           f"{sb!r} overlaps {sa!r} of stream {a.name!r}; the server refuses "
                                           "two streams capturing the same subject")
    if store_limits:
        _check_store_reservations(specs, store_limits, servers=max_replicas)
    return tuple(specs)


class Reserving(Protocol):
    """What reserves store space when it is created: a stream, or a bucket's stream."""
    @property
    def name(self) -> str: ...

    @property
    def config(self) -> dict: ...


def _check_store_reservations(specs: Sequence[Reserving], store_limits: Mapping[str, int], *,
                              servers: int = 1) -> None:
    """A stream's maxBytes is reserved in its store when it is created, on every node that holds a replica; the
    server refuses a stream whose reservation does not fit (10047, insufficient storage resources). The store
    limits are per node: `servers` nodes hold `servers` times the store, and a stream of R replicas takes R times
    its maxBytes (with R equal to the node count every node holds every stream)."""
    used = {"file": 0, "memory": 0}
    for spec in specs:
        storage, max_bytes = spec.config.get("storage", "file"), spec.config.get("max_bytes", -1)
        if max_bytes <= 0 or storage not in store_limits:
            continue
        replicas = max(1, spec.config.get("num_replicas", 1))
        used[storage] += max_bytes * replicas
        if used[storage] > store_limits[storage] * servers:
            key = "jetstream.fileStore" if storage == "file" else "jetstream.memoryStore"
            nodes = f"; {servers} nodes hold {servers} times that, each replica takes maxBytes" if servers > 1 else ""
            raise CatalogError(stream_where(spec.name), "maxBytes",
                               f"the {storage} streams' maxBytes add up to {used[storage]} bytes, more than the "
                               f"{storage} store ({store_limits[storage]} bytes per node, homelab-nats:{key}{nodes}); "
                               "lower maxBytes or grow the store")


def catalog_warnings(specs: tuple[StreamSpec, ...], *, jetstream_servers: int = 1) -> list[str]:
    """Valid declarations that are probably mistakes: shown by `pulumi preview`, never refused."""
    out = []
    for spec in specs:
        if spec.config.get("mirror_direct") and "mirror" not in spec.config:
            out.append(f"{stream_where(spec.name)}: mirrorDirect only applies to a mirror: the server refuses it when "
                       "it creates the stream and ignores it on an existing one (nats-server 2.15.1)")
        if spec.config.get("placement") and jetstream_servers == 1:
            out.append(f"{stream_where(spec.name)}: placement {spec.config['placement']} has no effect on a single "
                       "server, which takes every stream itself")
        for c in spec.consumers:
            for f in filters_receiving_nothing(c.config, spec.config.get("subjects") or []):
                out.append(f"{consumer_where(spec.name, c.name)}: filter {f!r} matches none of the stream's subjects "
                           f"{spec.config.get('subjects')}; the consumer will never receive anything")
    return out
