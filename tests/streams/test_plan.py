"""The pure plan: (current, desired) -> none / update / replace, as tables. No server."""
from datetime import UTC, datetime

import pytest

from streams.plan import normalize_stream, plan_consumer_change, plan_stream_change
from streams.safety import limit_losses

S = 10**9
# What nats-server 2.15 returns for `{"name": "s", "subjects": ["s.>"], "max_age": 1h}`.
SERVER_STREAM = {
    "name": "s", "subjects": ["s.>"], "retention": "limits", "max_consumers": -1, "max_msgs": -1, "max_bytes": -1,
    "max_age": 3600 * S, "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old", "storage": "file",
    "num_replicas": 1, "duplicate_window": 120 * S, "compression": "none", "allow_direct": False,
    "mirror_direct": False, "sealed": False, "deny_delete": False, "deny_purge": False, "allow_rollup_hdrs": False,
    "consumer_limits": {}, "allow_msg_ttl": False,
    "metadata": {"_nats.level": "5", "_nats.req.level": "0", "_nats.ver": "2.15.1", "homelab-nats.managed-by": "pulumi"},
}
SERVER_CONSUMER = {
    "durable_name": "c", "name": "c", "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 30 * S,
    "max_deliver": 3, "filter_subject": "s.a", "replay_policy": "instant", "max_waiting": 512,
    "max_ack_pending": 1000, "num_replicas": 0, "metadata": {"_nats.ver": "2.15.1"},
}
DESIRED_STREAM = {"name": "s", "subjects": ["s.>"], "max_age": 3600 * S}
DESIRED_CONSUMER = {"durable_name": "c", "ack_policy": "explicit", "max_deliver": 3, "filter_subject": "s.a"}


def test_server_defaults_and_metadata_are_not_changes():
    assert plan_stream_change(SERVER_STREAM, DESIRED_STREAM).action == "none"
    assert plan_consumer_change(SERVER_CONSUMER, DESIRED_CONSUMER).action == "none"


def test_numbers_that_crossed_grpc_as_doubles_compare_equal():
    assert plan_stream_change(SERVER_STREAM, {**DESIRED_STREAM, "max_age": 3600.0 * S, "max_msgs": -1.0}).action == "none"


def test_duplicate_window_default_is_capped_at_max_age():
    assert normalize_stream({"name": "s", "max_age": 60 * S})["duplicate_window"] == 60 * S
    assert normalize_stream({"name": "s"})["duplicate_window"] == 120 * S
    assert normalize_stream({"name": "s"})["subjects"] == ["s"]


@pytest.mark.parametrize("change, action, keys", [
    ({"max_age": 7200 * S}, "update", ()),
    ({"subjects": ["s.>", "t.>"]}, "update", ()),
    ({"retention": "interest"}, "update", ()),
    ({"max_bytes": 2**30}, "update", ()),
    ({"deny_delete": True}, "update", ()),
    ({"metadata": {"team": "x"}}, "update", ()),
    ({"storage": "memory"}, "replace", ("storage",)),
    ({"retention": "workqueue"}, "replace", ("retention",)),
    ({"mirror": {"name": "o"}}, "replace", ("mirror",)),
    ({"allow_msg_counter": True}, "replace", ("allow_msg_counter",)),
    ({"storage": "memory", "max_age": 60 * S}, "replace", ("storage",)),
])
def test_stream_plan(change, action, keys):
    plan = plan_stream_change(SERVER_STREAM, {**DESIRED_STREAM, **change})
    assert (plan.action, plan.replace_keys) == (action, keys)


@pytest.mark.parametrize("flag", ["deny_delete", "deny_purge", "allow_msg_ttl"])
def test_stream_flags_cannot_be_turned_off(flag):
    current = {**SERVER_STREAM, flag: True}
    assert plan_stream_change(current, {**DESIRED_STREAM, flag: True}).action == "none"
    assert plan_stream_change(current, DESIRED_STREAM).replace_keys == (flag,)


@pytest.mark.parametrize("change, action, keys", [
    ({"max_deliver": 5}, "update", ()),
    ({"ack_wait": 60 * S}, "update", ()),
    ({"filter_subject": "s.b"}, "update", ()),
    ({"description": "x"}, "update", ()),
    ({"ack_policy": "all"}, "replace", ("ack_policy",)),
    ({"deliver_policy": "new"}, "replace", ("deliver_policy",)),
    ({"replay_policy": "original"}, "replace", ("replay_policy",)),
    ({"max_waiting": 10}, "replace", ("max_waiting",)),
    ({"deliver_subject": "d"}, "replace", ("max_waiting", "deliver_subject")),
    ({"mem_storage": True}, "replace", ("mem_storage",)),
])
def test_consumer_plan(change, action, keys):
    plan = plan_consumer_change(SERVER_CONSUMER, {**DESIRED_CONSUMER, **change})
    assert (plan.action, plan.replace_keys) == (action, keys)


def test_single_filter_subjects_equals_filter_subject():
    desired = {**DESIRED_CONSUMER, "filter_subjects": ["s.a"]}
    del desired["filter_subject"]
    assert plan_consumer_change(SERVER_CONSUMER, desired).action == "none"


def test_opt_start_time_compares_as_a_time():
    current = {**SERVER_CONSUMER, "deliver_policy": "by_start_time", "opt_start_time": "2025-07-15T10:00:00Z"}
    desired = {**DESIRED_CONSUMER, "deliver_policy": "by_start_time", "opt_start_time": "2025-07-15T12:00:00+02:00"}
    assert plan_consumer_change(current, desired).action == "none"


# ---------------------------------------------------------------- what a tightened limit deletes (streams/safety.py)

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
HELD = {"config": {"name": "s", "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1},
        "state": {"messages": 20, "bytes": 2000, "first_seq": 11, "first_ts": "2026-12-04T10:00:00.123456789Z"}}


@pytest.mark.parametrize("desired, facts, expected", [
    ({"max_msgs": 5}, {}, [("max_msgs", 15)]),
    ({"max_msgs": 20}, {}, []),
    ({"max_msgs": 5, "discard": "new"}, {}, []),                     # the server keeps them, refuses new ones
    ({"max_bytes": 1500}, {}, [("max_bytes", 5)]),                   # 500 over at 100 bytes each
    ({"max_bytes": 1450}, {}, [("max_bytes", 6)]),                   # a partial message goes whole
    ({"max_bytes": 100, "discard": "new"}, {}, []),
    ({"max_msgs_per_subject": 3}, {"subject_counts": {"a": 10, "b": 3, "c": 5}}, [("max_msgs_per_subject", 9)]),
    ({"max_msgs_per_subject": 3, "discard": "new"}, {"subject_counts": {"a": 4}}, [("max_msgs_per_subject", 1)]),
    ({"max_age": 3600 * 10**9}, {"first_seq_after_cutoff": 19}, [("max_age", 8)]),   # first kept: seq 19
    ({"max_age": 3600 * 10**9}, {}, [("max_age", 20)]),              # no message newer than the cutoff
    ({"max_age": 3 * 3600 * 10**9}, {}, []),                          # the oldest is 2 h old
    ({"max_msgs": 5, "max_msgs_per_subject": 1}, {"subject_counts": {"a": 20}},
     [("max_msgs", 15), ("max_msgs_per_subject", 19)]),
])
def test_limit_losses(desired, facts, expected):
    losses = limit_losses(HELD, {**HELD["config"], **desired}, now=NOW, **facts)
    assert [(loss.limit, loss.messages) for loss in losses] == expected


def test_an_empty_stream_loses_nothing_to_a_limit():
    empty = {"config": HELD["config"], "state": {"messages": 0, "bytes": 0, "first_ts": "0001-01-01T00:00:00Z"}}
    assert limit_losses(empty, {**HELD["config"], "max_msgs": 1, "max_age": 10**9}, now=NOW) == []
