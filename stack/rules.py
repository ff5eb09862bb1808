"""nats-server 2.15's rules for one stream or consumer config, checked offline so that `pulumi preview`
refuses what the server would refuse at `pulumi up`.

Read from nats-server (main at 2.15.0-dev, the pinned binary is 2.15.1): `server/stream.go`
(`checkStreamCfgLocked`), `server/jetstream_api.go` (`jsStreamCreateRequest`: sealed, mirror direct) and
`server/consumer.go` (`setConsumerConfigDefaults` in pedantic mode, `checkConsumerCfg`, and the work-queue
checks in `addConsumerWithAssignmentAndMode`). Every rule here is tried against the real binary in
tests/stack/test_server_rules.py, next to the offline answer, so the two cannot drift apart; the server's error
code is noted beside each rule.

Configs here are wire configs (snake_case, integer nanoseconds and bytes). A broken rule raises
RuleBroken naming the key as the user writes it (camelCase); the catalog turns it into an error that
names the stream or consumer as well.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stack.subjects import name_problem, subject_is_subset, subject_problem, subjects_overlap, transform_problem
from stack.units import SECOND

MS = 10**6
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_DESCRIPTION = 4 * 1024          # JSMaxDescriptionLen
MAX_METADATA = 128 * 1024           # JSMaxMetadataLen (keys plus values)
MAX_REPLICAS = 5                    # StreamMaxReplicas
# Streams nats-server makes and owns: its MQTT listener's sessions, retained and QoS 1/2 messages (server/mqtt.go
# mqttStreamName, mqttRetainedMsgsStreamName, mqttSessStreamName, mqttQoS2IncomingMsgsStreamName,
# mqttOutStreamName). Reported as the server's, never declared, deleted, counted as drift or backed up with --all.
SERVER_OWNED_PREFIXES = ("$MQTT_",)


def is_server_owned(stream: str) -> bool:
    return stream.startswith(SERVER_OWNED_PREFIXES)
DEFAULT_DUPLICATE_WINDOW = 120 * SECOND    # StreamDefaultDuplicatesWindow
DEFAULT_ACK_WAIT = 30 * SECOND             # JsAckWaitDefault
DEFAULT_MAX_ACK_PENDING = 1000             # JsDefaultMaxAckPending
DEFAULT_PINNED_TTL = 120 * SECOND          # JsDefaultPinnedTTL
DEFAULT_MAX_WAITING = 512                  # JSWaitQueueDefaultMax
SOURCE_HEALTH_HEARTBEAT = SECOND    # sourceHealthHB: the heartbeat the flow_control ack policy needs
_PRIORITY_GROUP = re.compile(r"^[a-zA-Z0-9/_=-]{1,16}$")


class RuleBroken(ValueError):
    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def _metadata_size(meta: Mapping[str, str] | None) -> int:
    return sum(len(k) + len(v) for k, v in (meta or {}).items())


def _common(cfg: Mapping[str, Any]) -> None:
    if len(cfg.get("description", "").encode()) > MAX_DESCRIPTION:
        raise RuleBroken("description", f"is longer than the server's limit of {MAX_DESCRIPTION} bytes")   # 10052/10107
    if _metadata_size(cfg.get("metadata")) > MAX_METADATA:
        raise RuleBroken("metadata", f"keys and values add up to more than {MAX_METADATA} bytes")          # 10052/10135


def _bounded(cfg: Mapping[str, Any], key: str, camel: str, limit: int, what: str) -> None:
    if cfg.get(key, 0) > limit:
        raise RuleBroken(camel, f"is larger than the server can store ({what})")                          # 10025


# ---------------------------------------------------------------- streams

def fill_stream_defaults(cfg: dict) -> dict:
    """What the server would choose on its own, written into the config so pedantic mode accepts it and
    what is declared is what runs (nats-server `checkStreamCfgLocked`, non-pedantic branch)."""
    if "duplicate_window" not in cfg and "mirror" not in cfg and not cfg.get("sources"):
        max_age = cfg.get("max_age", 0)
        if max_age and max_age < DEFAULT_DUPLICATE_WINDOW:
            cfg["duplicate_window"] = max_age          # pedantic: "duplicate window cannot be bigger than max age"
    if "republish" in cfg and not cfg["republish"].get("src"):
        cfg["republish"] = {**cfg["republish"], "src": ">"}   # pedantic: "republish source can not be empty"
    return cfg


def _check_source(src: Mapping[str, Any], key: str, *, mirror: bool) -> None:
    if name_problem(src.get("name")):
        raise RuleBroken(f"{key}.name", f"the stream name {name_problem(src.get('name'))}")                # 10029/10134
    transforms = src.get("subject_transforms") or []
    if src.get("filter_subject") and transforms:
        raise RuleBroken(f"{key}.subjectTransforms", "give filterSubject or subjectTransforms, not both")  # 10150/10144
    for t in transforms:
        problem = transform_problem(t.get("src", ""), t.get("dest", ""))
        if problem:
            raise RuleBroken(f"{key}.subjectTransforms", f"the server refuses this mapping: {problem}")    # 10156
    for i, a in enumerate(transforms):
        for b in transforms[i + 1:]:
            clash = subjects_overlap(a["src"], b["src"]) if mirror else (
                subject_is_subset(a["src"], b["src"]) or subject_is_subset(b["src"], a["src"]))
            if clash:
                raise RuleBroken(f"{key}.subjectTransforms", f"sources {a['src']!r} and {b['src']!r} overlap")  # 10152/10147
    consumer = src.get("consumer")
    if consumer is not None:
        if name_problem(consumer.get("name")) or not consumer.get("deliver_subject") or \
                subject_problem(consumer["deliver_subject"], wildcards=False):
            raise RuleBroken(f"{key}.consumer", "needs a valid name and a deliverSubject without wildcards")  # 10213
        for k, camel in (("opt_start_seq", "optStartSeq"), ("opt_start_time", "optStartTime"),
                         ("filter_subject", "filterSubject")):
            if src.get(k):
                raise RuleBroken(f"{key}.consumer", f"a durable source consumer cannot be combined with {camel}")
    external = src.get("external") or {}
    if external.get("deliver") and subject_problem(external["deliver"], wildcards=False):
        raise RuleBroken(f"{key}.external.deliver", "must be a subject prefix without wildcards")          # 10125
    if external.get("api"):
        if subject_problem(external["api"], wildcards=False):
            raise RuleBroken(f"{key}.external.api", "must be a subject prefix without wildcards")         # 10052
        if subjects_overlap(external["api"], "$JS.API.>") or external["api"] == "$JS.API":
            raise RuleBroken(f"{key}.external.api", "must not overlap this account's own $JS.API")         # 10021


def check_stream_rules(cfg: Mapping[str, Any], *, creating: bool | None = None) -> None:
    """Raise RuleBroken for the first rule `cfg` breaks. `creating`: True on create, False on update,
    None when unknown (rules that apply to one of the two only are then skipped)."""
    _common(cfg)
    replicas = cfg.get("num_replicas", 1)
    if replicas > MAX_REPLICAS:
        raise RuleBroken("replicas", f"at most {MAX_REPLICAS}")                                           # 10052
    max_age, window = cfg.get("max_age", 0), cfg.get("duplicate_window", 0)
    _bounded(cfg, "max_age", "maxAge", INT64_MAX, "about 292 years")
    _bounded(cfg, "duplicate_window", "duplicateWindow", INT64_MAX, "about 292 years")
    _bounded(cfg, "subject_delete_marker_ttl", "subjectDeleteMarkerTtl", INT64_MAX, "about 292 years")
    _bounded(cfg, "max_msg_size", "maxMsgSize", INT32_MAX, "2GB less one byte")
    for key, camel in (("max_bytes", "maxBytes"), ("max_msgs", "maxMsgs"), ("max_msgs_per_subject", "maxMsgsPerSubject")):
        _bounded(cfg, key, camel, INT64_MAX, "a 64-bit count")
    if max_age and max_age < 100 * MS:
        raise RuleBroken("maxAge", "must be at least 100ms (or 0 for unlimited)")                           # 10052
    if window and window < 100 * MS:
        raise RuleBroken("duplicateWindow", "must be at least 100ms")                                       # 10052
    if window and max_age and window > max_age:
        raise RuleBroken("duplicateWindow", "is longer than maxAge")                                        # 10052
    if cfg.get("deny_purge") and cfg.get("allow_rollup_hdrs"):
        raise RuleBroken("allowRollup", "roll-ups purge messages, which denyPurge forbids")                 # 10052
    discard_new = cfg.get("discard") == "new"
    if cfg.get("allow_msg_counter"):
        for bad, camel in ((discard_new, "discard: new"), (cfg.get("allow_msg_ttl"), "allowMsgTtl"),
                           (cfg.get("allow_msg_schedules"), "allowMsgSchedules"),
                           (cfg.get("retention", "limits") != "limits", "a retention other than limits")):
            if bad:
                raise RuleBroken("allowMsgCounter", f"a counter stream cannot use {camel}")                 # 10052
    if cfg.get("discard_new_per_subject") and (not discard_new or cfg.get("max_msgs_per_subject", -1) < 1):
        raise RuleBroken("discardNewPerSubject", "needs discard: new and maxMsgsPerSubject")                # 10052
    marker_ttl = cfg.get("subject_delete_marker_ttl", 0)
    if marker_ttl:
        if marker_ttl < SECOND:
            raise RuleBroken("subjectDeleteMarkerTtl", "must be at least 1s")                               # 10052
        if not cfg.get("allow_msg_ttl"):
            raise RuleBroken("subjectDeleteMarkerTtl", "needs allowMsgTtl: true")                            # 10052
        if not cfg.get("allow_rollup_hdrs"):
            raise RuleBroken("subjectDeleteMarkerTtl", "needs allowRollup: true (delete markers roll up)")   # 10052
        if "mirror" in cfg:
            raise RuleBroken("subjectDeleteMarkerTtl", "is not allowed on a mirror")                         # 10052
    if cfg.get("allow_msg_schedules"):
        if discard_new:
            raise RuleBroken("allowMsgSchedules", "message scheduling cannot use discard: new")             # 10052
        if not cfg.get("allow_rollup_hdrs"):
            raise RuleBroken("allowMsgSchedules", "needs allowRollup: true")                                 # 10052
        if cfg.get("sources"):
            raise RuleBroken("allowMsgSchedules", "a stream with sources cannot schedule messages")         # 10187
    if cfg.get("persist_mode") == "async":
        if cfg.get("storage", "file") != "file":
            raise RuleBroken("persistMode", "async needs storage: file")                                     # 10052
        if replicas > 1:
            raise RuleBroken("persistMode", "async is not supported on replicated streams")                 # 10052
        if cfg.get("allow_atomic"):
            raise RuleBroken("persistMode", "async cannot be combined with allowAtomic")                    # 10052
    mirror = cfg.get("mirror")
    if mirror is not None:
        for bad, camel, _code in ((cfg.get("first_seq"), "firstSeq", 10143), (cfg.get("subjects"), "subjects", 10034),
                                 (cfg.get("sources"), "sources", 10052),
                                 (cfg.get("allow_msg_counter"), "allowMsgCounter", 10173),
                                 (cfg.get("allow_atomic"), "allowAtomic", 10198),
                                 (cfg.get("allow_batched"), "allowBatched", 10209),
                                 (cfg.get("allow_msg_schedules"), "allowMsgSchedules", 10186)):
            if bad:
                raise RuleBroken(camel, "a mirror cannot have this; mirrors copy another stream as it is")
        _check_source(mirror, "mirror", mirror=True)
        if mirror.get("name") == cfg.get("name") and not (mirror.get("external") or {}).get("api"):
            raise RuleBroken("mirror.name", "a stream cannot mirror itself")                                # 10052 cycle
    elif cfg.get("mirror_direct") and creating is True:
        # Refused on create ("stream has no mirror but does have mirror direct"), taken and ignored on update
        # (measured on 2.15.1): catalog_warnings says so where this cannot know which.
        raise RuleBroken("mirrorDirect", "only applies to a mirror")                                        # 10052
    transform = cfg.get("subject_transform")
    if transform:
        problem = transform_problem(transform.get("src", ""), transform.get("dest", ""))
        if problem:
            raise RuleBroken("subjectTransform", f"the server refuses this mapping: {problem}")            # 10156
    seen = set()
    for i, src in enumerate(cfg.get("sources") or []):
        _check_source(src, f"sources[{i}]", mirror=False)
        identity = (src.get("name"), (src.get("external") or {}).get("api"), src.get("filter_subject"),
                    tuple((t["src"], t["dest"]) for t in src.get("subject_transforms") or []))
        if identity in seen:
            raise RuleBroken(f"sources[{i}]", f"sources stream {src.get('name')!r} twice the same way")        # 10140
        seen.add(identity)
    subjects = cfg.get("subjects") or []
    no_ack = cfg.get("no_ack", False)
    for subject in subjects:
        if subject == ">":
            if not no_ack:
                raise RuleBroken("subjects", "capturing every subject ('>') needs noAck: true")               # 10052
            if replicas != 1:
                raise RuleBroken("subjects", "capturing every subject ('>') needs replicas: 1")               # 10052
        if not no_ack:
            for api in ("$JS.>", "$JSC.>", "$NRG.>"):
                if subjects_overlap(subject, api) and not subject_is_subset(subject, "$JS.EVENT.>"):
                    raise RuleBroken("subjects", f"{subject!r} overlaps the JetStream API ({api}); that needs "
                                                 "noAck: true")                                                # 10052
            if subjects_overlap(subject, "$SYS.>") and not subject_is_subset(subject, "$SYS.ACCOUNT.>"):
                raise RuleBroken("subjects", f"{subject!r} overlaps the system API ($SYS.>); that needs noAck: true")
    republish = cfg.get("republish")
    if republish is not None:
        for subject in subjects:
            if subjects_overlap(republish["dest"], subject):
                raise RuleBroken("republish.destination", f"{republish['dest']!r} overlaps the stream's own subject "
                                                          f"{subject!r}: republished messages would be stored again "
                                                          "(a cycle)")                                          # 10052
    if creating is True and cfg.get("sealed"):
        raise RuleBroken("sealed", "a stream is created unsealed: create it first, then add sealed: true")    # 10052


# ---------------------------------------------------------------- consumers

@dataclass(frozen=True)
class StreamContext:
    """What a consumer's rules need to know about its stream (the stack knows it at preview)."""
    subjects: tuple[str, ...] = ()
    replicas: int = 1
    retention: str = "limits"
    max_ack_pending: int = 0          # consumer_limits.max_ack_pending, 0 = none
    inactive_threshold: int = 0       # consumer_limits.inactive_threshold, 0 = none

    @classmethod
    def of(cls, stream_cfg: Mapping[str, Any], *, max_replicas: int = 1) -> StreamContext:
        limits = stream_cfg.get("consumer_limits") or {}
        return cls(tuple(stream_cfg.get("subjects") or ()), min(stream_cfg.get("num_replicas", 1), max_replicas),
                   stream_cfg.get("retention", "limits"), limits.get("max_ack_pending", 0),
                   limits.get("inactive_threshold", 0))

    def as_input(self) -> dict:
        """The consumer resource's context inputs."""
        return {"streamSubjects": list(self.subjects), "streamReplicas": self.replicas,
                "streamRetention": self.retention,
                "streamConsumerLimits": {k: v for k, v in (("maxAckPending", self.max_ack_pending),
                                                           ("inactiveThreshold", self.inactive_threshold)) if v}}


def fill_consumer_defaults(cfg: dict, stream: StreamContext) -> dict:
    """Values the server would take from the stream's consumer limits, written in so that pedantic mode
    accepts the declaration (nats-server `setConsumerConfigDefaults`)."""
    if stream.max_ack_pending and "max_ack_pending" not in cfg:
        # Pedantic mode wants it set whenever the stream limits it (10157), acks or not; without acks nothing is
        # pending, and -1 is the one value a push consumer without acks may carry (a positive one is 10082).
        cfg["max_ack_pending"] = stream.max_ack_pending if cfg.get("ack_policy", "none") != "none" else -1
    if stream.inactive_threshold and "inactive_threshold" not in cfg:
        cfg["inactive_threshold"] = stream.inactive_threshold
    return cfg


def consumer_filters(cfg: Mapping[str, Any]) -> list[str]:
    return list(cfg.get("filter_subjects") or ([cfg["filter_subject"]] if cfg.get("filter_subject") else []))


def check_consumer_rules(cfg: Mapping[str, Any], stream: StreamContext) -> None:
    """Raise RuleBroken for the first rule the consumer config breaks on this stream."""
    _common(cfg)
    push = bool(cfg.get("deliver_subject"))
    ack = cfg.get("ack_policy", "none")
    filters = consumer_filters(cfg)
    for i, a in enumerate(filters):
        for b in filters[i + 1:]:
            if subject_is_subset(a, b) or subject_is_subset(b, a):
                raise RuleBroken("filterSubjects", f"{a!r} and {b!r}: one contains the other")               # 10138
    if cfg.get("deliver_policy") == "last_per_subject" and not filters:
        raise RuleBroken("deliverPolicy", "last_per_subject needs filterSubject or filterSubjects")           # 10094
    if ack == "flow_control":
        if not push:
            raise RuleBroken("ackPolicy", "flow_control needs a push consumer (deliverSubject)")              # 10218
        if not cfg.get("flow_control"):
            raise RuleBroken("ackPolicy", "flow_control needs flowControl: true")                            # 10219
        if cfg.get("idle_heartbeat") != SOURCE_HEALTH_HEARTBEAT:
            raise RuleBroken("idleHeartbeat", "must be 1s with ackPolicy flow_control")                       # 10052
        if cfg.get("max_ack_pending", 0) <= 0:
            raise RuleBroken("maxAckPending", "ackPolicy flow_control needs a maxAckPending")                  # 10220
        if cfg.get("ack_wait") or cfg.get("backoff"):
            raise RuleBroken("ackWait", "ackPolicy flow_control takes no ackWait or backoff")                 # 10221
        if cfg.get("max_deliver", -1) > 0:
            raise RuleBroken("maxDeliver", "ackPolicy flow_control takes no maxDeliver")                      # 10222
    if push:
        if any(subject_is_subset(cfg["deliver_subject"], s) for s in stream.subjects):
            raise RuleBroken("deliverSubject", f"{cfg['deliver_subject']!r} is inside the stream's own subjects: "
                                               "delivered messages would be stored again (a cycle)")          # 10081
        if cfg.get("max_ack_pending", 0) > 0 and ack == "none":
            raise RuleBroken("maxAckPending", "needs an ackPolicy other than none")                          # 10082
        heartbeat = cfg.get("idle_heartbeat", 0)
        if heartbeat and heartbeat < 100 * MS:
            raise RuleBroken("idleHeartbeat", "must be at least 100ms")                                     # 10083
        if cfg.get("priority_policy", "none") != "none" or cfg.get("priority_groups"):
            raise RuleBroken("priorityPolicy", "priority groups are for pull consumers only")               # 10178
    else:
        if ack == "none" and stream.retention == "workqueue":
            raise RuleBroken("ackPolicy", "a pull consumer on a workqueue stream needs explicit acks")        # 10084
        expires = cfg.get("max_expires", 0)
        if expires and expires < MS:
            raise RuleBroken("maxExpires", "must be at least 1ms")                                          # 10115
    policy, groups = cfg.get("priority_policy", "none"), cfg.get("priority_groups") or []
    if policy != "none":
        if not groups:
            raise RuleBroken("priorityGroups", f"priorityPolicy {policy} needs at least one group")          # 10159
        for g in groups:
            if not _PRIORITY_GROUP.match(g):
                raise RuleBroken("priorityGroups", f"{g!r}: 1 to 16 of A-Z a-z 0-9 / _ = -")                   # 10161/10162
    else:
        if groups:
            raise RuleBroken("priorityGroups", "need a priorityPolicy (overflow, pinned_client or prioritized)")  # 10196
        if cfg.get("priority_timeout"):
            raise RuleBroken("priorityTimeout", "needs priorityPolicy pinned_client")                        # 10197
    if stream.max_ack_pending and cfg.get("max_ack_pending", 0) > stream.max_ack_pending:
        raise RuleBroken("maxAckPending", f"{cfg['max_ack_pending']} is above the stream's consumerLimits."
                                          f"maxAckPending of {stream.max_ack_pending}")                       # 10121
    if stream.inactive_threshold and cfg.get("inactive_threshold", 0) > stream.inactive_threshold:
        raise RuleBroken("inactiveThreshold", "is above the stream's consumerLimits.inactiveThreshold")        # 10153
    if stream.retention in ("interest", "workqueue") and cfg.get("num_replicas", 0) not in (0, stream.replicas):
        raise RuleBroken("replicas", f"must equal the stream's replicas ({stream.replicas}) on an "
                                     f"{stream.retention} stream, or be left out")                              # 10134
    if stream.retention == "workqueue":
        if ack not in ("explicit", "flow_control"):
            raise RuleBroken("ackPolicy", "a workqueue stream needs explicit acks")                          # 10098
        if cfg.get("deliver_policy", "all") != "all":
            raise RuleBroken("deliverPolicy", "a workqueue stream's consumers deliver all")                  # 10101


def check_workqueue_partition(consumers: list[tuple[str, Mapping[str, Any]]]) -> tuple[str, str] | None:
    """Consumers of one workqueue stream must split it: at most one without a filter when alone, and
    filters that do not overlap (nats-server `partitionUnique`, 10099/10100). Returns the clashing pair."""
    if len(consumers) < 2:
        return None
    for i, (a, ca) in enumerate(consumers):
        fa = consumer_filters(ca)
        for b, cb in consumers[i + 1:]:
            fb = consumer_filters(cb)
            if not fa or not fb or any(subjects_overlap(x, y) for x in fa for y in fb):
                return a, b
    return None
