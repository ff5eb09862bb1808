"""The stream and consumer providers against a real nats-server running the homelab's config."""
import pytest

from stack.catalog import MANAGED_BY_KEY, load_catalog
from streams.jetstream import JetStreamApiError, NatsUnavailable, close_all_clients
from streams.local.server import free_port, local_layout, start_server
from streams.provider import AdoptionRefused, DataLossRefused, StreamProvider
from streams.resources import consumer_props, stream_props
from tests.provider_harness import Managed, RawJetStream, configured, consumer_inputs, stream_inputs
from tests.stack.test_settings import homelab_raw

S = 10**9
H = 3600 * S


def test_homelab_catalog_is_created_as_the_guide_says(streams, consumers, raw):
    made = []
    for spec in load_catalog(homelab_raw()["streams"]):
        s = Managed(streams).create(stream_props(spec, jetstream_servers=1))
        made.append(s)
        for c in spec.consumers:
            made.append(Managed(consumers).create(
                consumer_props(c)))
    iot = raw.stream("iot-sensors")["config"]
    assert (iot["subjects"], iot["storage"], iot["retention"], iot["max_age"], iot["max_msgs"], iot["num_replicas"]) \
        == (["sensors.>"], "file", "limits", 24 * H, -1, 1)
    logs = raw.stream("app-logs")["config"]
    assert (logs["subjects"], logs["storage"], logs["max_age"], logs["max_bytes"]) == (["logs.>"], "file", 7 * 24 * H,
                                                                                        1073741824)
    events = raw.stream("events")["config"]
    assert (events["subjects"], events["storage"], events["max_age"]) == (["events.>"], "memory", H)
    sensors = raw.stream("sensors")["config"]
    assert (sensors["subjects"], sensors["storage"], sensors["max_age"]) == (["iot.>"], "file", 30 * 24 * H)
    assert raw.stream("analytics")["config"]["subjects"] == ["analytics.>"]
    processor = raw.consumer("iot-sensors", "processor")["config"]
    assert (processor["filter_subject"], processor["ack_policy"], processor["deliver_policy"], processor["max_deliver"]) \
        == ("sensors.temperature.>", "explicit", "all", 3)
    assert "deliver_subject" not in processor  # pull
    replay = raw.consumer("iot-sensors", "replay")["config"]
    assert (replay["deliver_policy"], replay["opt_start_time"], replay["filter_subject"]) == \
        ("by_start_time", "2025-07-15T10:00:00Z", "sensors.>")
    last = raw.consumer("iot-sensors", "last-100")["config"]
    assert (last["deliver_policy"], last["filter_subject"], last["ack_policy"]) == ("last_per_subject", "sensors.>",
                                                                                   "explicit")
    analytics = raw.consumer("sensors", "analytics")["config"]
    assert (analytics["filter_subject"], analytics["ack_policy"], analytics["deliver_policy"]) == \
        ("iot.sensors.>", "explicit", "all")
    assert raw.stream("iot-sensors")["config"]["metadata"][MANAGED_BY_KEY] == "pulumi"
    # No phantom diffs: right after create, and after a refresh.
    for m in made:
        assert not m.diff(m.inputs).changes, m.id
        declared = dict(m.inputs)
        m.refresh()
        assert not m.diff(declared).changes, m.id
        assert "_nats.ver" not in str(m.outputs) and MANAGED_BY_KEY not in str(m.outputs)


BASE = {"subjects": ["u.>"], "storage": "file"}
STREAM_UPDATES = [
    ("description", {}, {"description": "now described"}, "description", "now described"),
    ("subjects", {}, {"subjects": ["u.>", "v.>"]}, "subjects", ["u.>", "v.>"]),
    ("maxConsumers", {}, {"maxConsumers": 10}, "max_consumers", 10),
    ("maxMsgs", {"maxMsgs": -1}, {"maxMsgs": 1000}, "max_msgs", 1000),
    ("maxBytes", {}, {"maxBytes": "1GB"}, "max_bytes", 2**30),
    ("maxAge", {"maxAge": "24h"}, {"maxAge": "48h"}, "max_age", 48 * H),
    ("maxMsgsPerSubject", {}, {"maxMsgsPerSubject": 5}, "max_msgs_per_subject", 5),
    ("maxMsgSize", {}, {"maxMsgSize": "64KB"}, "max_msg_size", 65536),
    ("discard", {}, {"discard": "new"}, "discard", "new"),
    ("duplicateWindow", {}, {"duplicateWindow": "30s"}, "duplicate_window", 30 * S),
    ("compression", {}, {"compression": "s2"}, "compression", "s2"),
    ("allowDirect", {}, {"allowDirect": True}, "allow_direct", True),
    ("denyDelete", {}, {"denyDelete": True}, "deny_delete", True),
    ("denyPurge", {}, {"denyPurge": True}, "deny_purge", True),
    ("allowRollup on", {}, {"allowRollup": True}, "allow_rollup_hdrs", True),
    ("allowRollup off", {"allowRollup": True}, {}, "allow_rollup_hdrs", False),
    ("noAck", {}, {"noAck": True}, "no_ack", True),
    ("republish", {}, {"republish": {"source": "u.>", "destination": "copy.u.>"}}, "republish",
     {"src": "u.>", "dest": "copy.u.>"}),
    ("subjectTransform", {}, {"subjectTransform": {"source": "u.>", "destination": "t.>"}}, "subject_transform",
     {"src": "u.>", "dest": "t.>"}),
    ("consumerLimits", {}, {"consumerLimits": {"inactiveThreshold": "1h", "maxAckPending": 100}}, "consumer_limits",
     {"inactive_threshold": H, "max_ack_pending": 100}),
    ("allowMsgTtl", {}, {"allowMsgTtl": True}, "allow_msg_ttl", True),
    ("metadata", {}, {"metadata": {"team": "iot"}}, "metadata", None),
    ("description removed", {"description": "x"}, {}, "description", None),
]


@pytest.mark.parametrize("what, before, after, wire, value", STREAM_UPDATES, ids=[c[0] for c in STREAM_UPDATES])
def test_stream_updatable_fields_update_in_place(streams, raw, what, before, after, wire, value):
    s = Managed(streams).create(stream_inputs("upd", {**BASE, **before}))
    raw.publish("u.x", [b"kept"])
    created = s.outputs["created"]
    news = stream_inputs("upd", {**BASE, **after})
    d = s.diff(news)
    assert d.changes and not d.replaces
    assert s.apply(news) == "update"
    info = raw.stream("upd")
    if wire == "metadata":
        assert info["config"]["metadata"]["team"] == "iot"
    else:
        assert info["config"].get(wire) == value
    assert info["created"] == created  # updated, not recreated
    assert info["state"]["messages"] == 1
    assert not s.diff(news).changes
    s.refresh()
    assert not s.diff(news).changes


STREAM_REPLACEMENTS = [
    ("storage", {"storage": "file"}, {"storage": "memory"}, "storage", "memory"),
    ("retention to workqueue", {"retention": "limits"}, {"retention": "workqueue"}, "retention", "workqueue"),
    ("retention from workqueue", {"retention": "workqueue"}, {"retention": "limits"}, "retention", "limits"),
    ("denyDelete off", {"denyDelete": True}, {}, "deny_delete", False),
    ("denyPurge off", {"denyPurge": True}, {}, "deny_purge", False),
    ("allowMsgTtl off", {"allowMsgTtl": True}, {}, "allow_msg_ttl", False),
    ("allowMsgCounter", {}, {"allowMsgCounter": True, "subjects": ["u.>"]}, "allow_msg_counter", True),
]


@pytest.mark.parametrize("what, before, after, wire, value", STREAM_REPLACEMENTS, ids=[c[0] for c in STREAM_REPLACEMENTS])
def test_stream_immutable_fields_plan_a_replacement(streams, raw, what, before, after, wire, value):
    s = Managed(streams).create(stream_inputs("imm", {**BASE, **before}))
    news = stream_inputs("imm", {**BASE, **after})
    d = s.diff(news)
    assert d.changes and d.replaces and d.delete_before_replace is False
    # The server really refuses this as an update:
    with pytest.raises(JetStreamApiError):
        streams.update(s.id, s.outputs, news)
    # Empty stream: replaced.
    assert s.apply(news) == "replace"
    info = raw.stream("imm")
    assert info["config"].get(wire, False) == value
    assert not s.diff(news).changes


@pytest.mark.parametrize("what, before, after, wire, value", STREAM_REPLACEMENTS[:3],
                         ids=[c[0] for c in STREAM_REPLACEMENTS[:3]])
def test_replacement_of_a_stream_with_messages_is_refused_unless_opted_in(streams, raw, what, before, after, wire,
                                                                          value):
    s = Managed(streams).create(stream_inputs("data", {**BASE, **before}))
    raw.publish("u.x", [b"one", b"two"])
    before_info = raw.stream("data")
    news = stream_inputs("data", {**BASE, **after})
    with pytest.raises(DataLossRefused, match=r"stream 'data'.*2 messages.*allowDataLoss: true"):
        s.apply(news)
    after_info = raw.stream("data")
    assert after_info["config"] == before_info["config"] and after_info["state"]["messages"] == 2  # nothing changed
    # Opting in (in the same change) lets it through.
    assert s.apply(stream_inputs("data", {**BASE, **after, "allowDataLoss": True})) == "replace"
    info = raw.stream("data")
    assert info["config"].get(wire) == value and info["state"]["messages"] == 0


def test_replacement_carries_managed_consumers_over(streams, consumers, raw):
    decl = {**BASE}
    s = Managed(streams).create(stream_inputs("carry", decl))
    c = Managed(consumers).create(consumer_inputs("carry", decl, "worker", {"filterSubject": "u.a", "maxDeliver": 3}))
    s.apply(stream_inputs("carry", {**BASE, "storage": "memory"}))
    assert raw.stream("carry")["config"]["storage"] == "memory"
    assert raw.consumer("carry", "worker")["config"]["max_deliver"] == 3
    assert not c.diff(c.inputs).changes
    c.refresh()
    assert c.id == "carry/worker"


def test_delete_refuses_a_stream_with_messages_unless_opted_in(streams, raw):
    s = Managed(streams).create(stream_inputs("del", BASE))
    raw.publish("u.x", [b"precious"])
    with pytest.raises(DataLossRefused, match=r"stream 'del': refusing to delete it: it would delete its 1 messages"):
        s.delete()
    assert raw.stream("del")["state"]["messages"] == 1
    s.apply(stream_inputs("del", {**BASE, "allowDataLoss": True}))  # an update that touches nothing on the server
    assert raw.stream("del")["state"]["messages"] == 1
    s.delete()
    assert raw.stream("del")["error"]["err_code"] == 10059


def test_deleting_an_empty_stream_needs_no_opt_in(streams, raw):
    s = Managed(streams).create(stream_inputs("empty", BASE))
    s.delete()
    assert raw.stream("empty")["error"]["err_code"] == 10059


CONSUMER_UPDATES = [
    ("description", {}, {"description": "d"}, "description", "d"),
    ("ackWait", {}, {"ackWait": "1m"}, "ack_wait", 60 * S),
    ("maxDeliver", {}, {"maxDeliver": 5}, "max_deliver", 5),
    ("backoff", {"maxDeliver": 5}, {"maxDeliver": 5, "backoff": ["30s", "1m"]}, "backoff", [30 * S, 60 * S]),
    ("filterSubject", {"filterSubject": "u.a"}, {"filterSubject": "u.b"}, "filter_subject", "u.b"),
    ("filterSubjects", {"filterSubject": "u.a"}, {"filterSubjects": ["u.a", "u.c"]}, "filter_subjects", ["u.a", "u.c"]),
    ("sampleFrequency", {}, {"sampleFrequency": "50%"}, "sample_freq", "50%"),
    ("maxAckPending", {}, {"maxAckPending": 50}, "max_ack_pending", 50),
    ("headersOnly", {}, {"headersOnly": True}, "headers_only", True),
    ("maxBatch", {}, {"maxBatch": 10}, "max_batch", 10),
    ("maxExpires", {}, {"maxExpires": "10s"}, "max_expires", 10 * S),
    ("maxBytes", {}, {"maxBytes": "1MB"}, "max_bytes", 2**20),
    ("inactiveThreshold", {}, {"inactiveThreshold": "1h"}, "inactive_threshold", H),
    ("metadata", {}, {"metadata": {"owner": "me"}}, "metadata", None),
    ("push deliverSubject", {"deliverSubject": "d.1"}, {"deliverSubject": "d.2"}, "deliver_subject", "d.2"),
    ("push deliverGroup", {"deliverSubject": "d.1"}, {"deliverSubject": "d.1", "deliverGroup": "g"}, "deliver_group",
     "g"),
    ("push rateLimit", {"deliverSubject": "d.1"}, {"deliverSubject": "d.1", "rateLimit": 100000}, "rate_limit_bps",
     100000),
]


@pytest.mark.parametrize("what, before, after, wire, value", CONSUMER_UPDATES, ids=[c[0] for c in CONSUMER_UPDATES])
def test_consumer_updatable_fields_update_in_place(streams, consumers, raw, what, before, after, wire, value):
    Managed(streams).create(stream_inputs("cs", BASE))
    c = Managed(consumers).create(consumer_inputs("cs", BASE, "c", before))
    created = raw.consumer("cs", "c")["created"]
    news = consumer_inputs("cs", BASE, "c", after)
    d = c.diff(news)
    assert d.changes and not d.replaces
    assert c.apply(news) == "update"
    info = raw.consumer("cs", "c")
    if wire == "metadata":
        assert info["config"]["metadata"]["owner"] == "me"
    else:
        assert info["config"].get(wire) == value
    assert info["created"] == created
    assert not c.diff(news).changes
    c.refresh()
    assert not c.diff(news).changes


CONSUMER_REPLACEMENTS = [
    ("deliverPolicy", {}, {"deliverPolicy": "new"}, "deliver_policy", "new"),
    ("ackPolicy", {}, {"ackPolicy": "all"}, "ack_policy", "all"),
    ("replayPolicy", {}, {"replayPolicy": "original"}, "replay_policy", "original"),
    ("maxWaiting", {}, {"maxWaiting": 100}, "max_waiting", 100),
    ("memStorage", {}, {"memStorage": True}, "mem_storage", True),
    ("optStartSeq", {"optStartSeq": 1}, {"optStartSeq": 5}, "opt_start_seq", 5),
    ("optStartTime", {"optStartTime": "2025-07-15T10:00:00Z"}, {"optStartTime": "2025-07-16T10:00:00Z"},
     "opt_start_time", "2025-07-16T10:00:00Z"),
    ("pull to push", {}, {"deliverSubject": "d.1"}, "deliver_subject", "d.1"),
    ("push to pull", {"deliverSubject": "d.1"}, {}, "deliver_subject", None),
    ("idleHeartbeat", {"deliverSubject": "d.1", "idleHeartbeat": "5s"}, {"deliverSubject": "d.1", "idleHeartbeat": "10s"},
     "idle_heartbeat", 10 * S),
    ("flowControl", {"deliverSubject": "d.1", "idleHeartbeat": "5s"},
     {"deliverSubject": "d.1", "idleHeartbeat": "5s", "flowControl": True}, "flow_control", True),
]


@pytest.mark.parametrize("what, before, after, wire, value", CONSUMER_REPLACEMENTS,
                         ids=[c[0] for c in CONSUMER_REPLACEMENTS])
def test_consumer_immutable_fields_plan_a_replacement(streams, consumers, raw, what, before, after, wire, value):
    Managed(streams).create(stream_inputs("cr", BASE))
    c = Managed(consumers).create(consumer_inputs("cr", BASE, "c", before))
    news = consumer_inputs("cr", BASE, "c", after)
    d = c.diff(news)
    assert d.changes and d.replaces and d.delete_before_replace is False  # create swaps it, under the loss rules
    with pytest.raises(JetStreamApiError):  # the server really refuses it in place
        consumers.update(c.id, c.outputs, news)
    assert c.apply(news) == "replace"
    assert raw.consumer("cr", "c")["config"].get(wire) == value
    assert not c.diff(news).changes


def test_adoption_of_a_cli_made_stream_keeps_its_messages(streams, consumers, raw):
    raw.api("$JS.API.STREAM.CREATE.iot-sensors", {"name": "iot-sensors", "subjects": ["sensors.>"], "storage": "file",
                                                   "retention": "limits", "max_age": 24 * H, "max_msgs": -1})
    raw.api("$JS.API.CONSUMER.CREATE.iot-sensors.processor", {"stream_name": "iot-sensors", "config": {
        "durable_name": "processor", "filter_subject": "sensors.temperature.>", "ack_policy": "explicit",
        "deliver_policy": "all", "max_deliver": 3}})
    raw.publish("sensors.temperature.room1", [b'{"value": 22.5}'] * 3)
    before = raw.stream("iot-sensors")
    [spec] = [s for s in load_catalog(homelab_raw()["streams"]) if s.name == "iot-sensors"]
    s = Managed(streams).create(stream_props(spec, jetstream_servers=1))
    c = Managed(consumers).create(consumer_props(spec.consumers[0]))
    after = raw.stream("iot-sensors")
    assert after["created"] == before["created"] and after["state"]["messages"] == 3
    assert s.outputs["created"] == before["created"]
    assert raw.consumer("iot-sensors", "processor")["config"]["metadata"][MANAGED_BY_KEY] == "pulumi"
    assert not s.diff(s.inputs).changes and not c.diff(c.inputs).changes


def test_adoption_updates_updatable_differences_in_place(streams, raw):
    raw.api("$JS.API.STREAM.CREATE.app-logs", {"name": "app-logs", "subjects": ["logs.>"], "max_age": 12 * H})
    raw.publish("logs.app", [b"line"])
    created = raw.stream("app-logs")["created"]
    Managed(streams).create(stream_inputs("app-logs", {"subjects": ["logs.>"], "maxAge": "7d", "maxBytes": "1GB"}))
    info = raw.stream("app-logs")
    assert info["config"]["max_age"] == 7 * 24 * H and info["config"]["max_bytes"] == 2**30
    assert info["created"] == created and info["state"]["messages"] == 1


def test_adoption_refuses_immutable_differences(streams, consumers, raw):
    raw.api("$JS.API.STREAM.CREATE.events", {"name": "events", "subjects": ["events.>"], "storage": "file"})
    with pytest.raises(AdoptionRefused, match=r"stream 'events' exists on the server.*storage: file -> memory"):
        Managed(streams).create(stream_inputs("events", {"subjects": ["events.>"], "storage": "memory"}))
    assert raw.stream("events")["config"]["storage"] == "file"
    raw.api("$JS.API.CONSUMER.CREATE.events.c", {"stream_name": "events", "config": {
        "durable_name": "c", "ack_policy": "none"}})
    with pytest.raises(AdoptionRefused, match=r"consumer 'c' of stream 'events'.*ackPolicy"):
        Managed(consumers).create(consumer_inputs("events", {"subjects": ["events.>"]}, "c", {}))
    assert raw.consumer("events", "c")["config"]["ack_policy"] == "none"


def test_out_of_band_edit_shows_as_drift(streams, consumers, raw):
    decl = {"subjects": ["logs.>"], "maxAge": "7d"}
    s = Managed(streams).create(stream_inputs("drift", decl))
    c = Managed(consumers).create(consumer_inputs("drift", decl, "c", {"maxDeliver": 3}))
    cfg = raw.stream("drift")["config"]
    raw.api("$JS.API.STREAM.UPDATE.drift", {**cfg, "max_age": H})
    ccfg = raw.consumer("drift", "c")["config"]
    raw.api("$JS.API.CONSUMER.CREATE.drift.c", {"stream_name": "drift", "config": {**ccfg, "max_deliver": 9}})
    s.refresh()
    c.refresh()
    assert s.inputs["maxAge"] == "1h" and c.inputs["maxDeliver"] == 9
    d = s.diff(stream_inputs("drift", decl))
    assert d.changes and not d.replaces
    assert s.apply(stream_inputs("drift", decl)) == "update"
    assert raw.stream("drift")["config"]["max_age"] == 7 * 24 * H
    assert c.apply(consumer_inputs("drift", decl, "c", {"maxDeliver": 3})) == "update"


def test_out_of_band_delete_is_recreated(streams, raw):
    decl = stream_inputs("gone", BASE)
    s = Managed(streams).create(decl)
    raw.api("$JS.API.STREAM.DELETE.gone")
    result = s.refresh()
    assert result.id == "" and s.id is None
    Managed(streams).create(decl)  # the next `up` creates it
    assert raw.stream("gone")["config"]["name"] == "gone"


def test_server_restarted_between_operations(tmp_path, homelab_settings):
    layout = local_layout(tmp_path)
    srv = start_server(homelab_settings, layout, tmp_path)
    try:
        streams = configured(StreamProvider, srv.client_url, ready_timeout="20s")
        s = Managed(streams).create(stream_inputs("restart", BASE))
        srv.stop()
        srv = start_server(homelab_settings, layout, tmp_path)  # same data dir and ports
        assert s.apply(stream_inputs("restart", {**BASE, "maxAge": "1h"})) == "update"
        assert RawJetStream(srv.client_url).stream("restart")["config"]["max_age"] == H
        srv.stop()
        srv = start_server(homelab_settings, layout, tmp_path, wait=False)  # still starting when the call comes
        s.refresh()
        assert s.inputs["maxAge"] == "1h"
    finally:
        srv.stop()
        close_all_clients()


def test_unreachable_server_fails_clearly_within_the_bound():
    url = f"nats://127.0.0.1:{free_port()}"
    streams = configured(StreamProvider, url, ready_timeout="1s")
    try:
        with pytest.raises(NatsUnavailable) as err:
            streams.create(stream_inputs("x", BASE))
        message = str(err.value)
        assert url in message and "within 1s" in message and "NATS_URL" in message
        assert "homelab-nats:natsUrl" in message
    finally:
        close_all_clients()


def test_wrong_credentials_fail_at_once_without_the_password(auth_server, capfd):
    """Refused credentials end the provider's wait for NATS at once (not after natsReadyTimeout), and the
    message names the keys to fix and never the password."""
    from streams.provider import StreamProvider
    from tests.provider_harness import configured, stream_inputs
    url = f"nats://admin:wrong-pw@127.0.0.1:{auth_server.layout.client_port}"
    provider = configured(StreamProvider, url, ready_timeout="45s")
    with pytest.raises(NatsUnavailable) as err:
        provider.create(stream_inputs("s", {"subjects": ["s.>"]}))
    message = str(err.value)
    assert "refused the credentials" in message and "within 45s" not in message
    assert "natsPassword" in message and "wrong-pw" not in message and "admin:***@" in message
    close_all_clients()
    assert "Traceback" not in capfd.readouterr().err  # nats-py's own error logging is quiet


# ---------------------------------------------------------------- what the server refused only at up before

def test_a_consumer_without_acks_on_a_stream_with_consumer_limits(streams, consumers, raw):
    """Pedantic create wants maxAckPending set when the stream limits it (10157), acks or not: -1 for no acks."""
    decl = {"subjects": ["lim.>"], "consumerLimits": {"maxAckPending": 50}}
    Managed(streams).create(stream_inputs("lim", decl))
    for name, extra in (("pull", {}), ("push", {"deliverSubject": "out.push"})):
        c = Managed(consumers).create(consumer_inputs("lim", decl, name, {"ackPolicy": "none", **extra}))
        assert raw.consumer("lim", name)["config"]["max_ack_pending"] == -1
        assert c.apply(consumer_inputs("lim", decl, name, {"ackPolicy": "none", **extra})) == "same"


def test_a_mirror_inherits_direct_gets_from_its_origin(streams, raw):
    """A mirror of a stream with allowDirect gets mirrorDirect as the server would give it (pedantic mode refuses
    the mismatch: stream.go, "origin stream has direct get set, mirror has it disabled"), and no drift after."""
    Managed(streams).create(stream_inputs("origin-d", {"subjects": ["od.>"], "allowDirect": True}))
    mirror = Managed(streams).create(stream_inputs("mirror-d", {"mirror": {"name": "origin-d"}}))
    assert raw.stream("mirror-d")["config"]["mirror_direct"] is True
    mirror.refresh()
    assert mirror.apply(stream_inputs("mirror-d", {"mirror": {"name": "origin-d"}})) == "same"


def test_a_stream_taking_the_subjects_of_another_says_to_use_renamed_from(streams, raw):
    """Renaming by editing the name (the old declaration gone, the new one with the same subjects): Pulumi creates
    the new one before it deletes the old, and the server refuses the overlap (10065). The error says what to do."""
    from streams.provider import SubjectsTaken
    Managed(streams).create(stream_inputs("before", {"subjects": ["rn.>"]}))
    with pytest.raises(SubjectsTaken, match=r"stream 'after': its subject 'rn.>' overlaps 'rn.>' of stream 'before'.*"
                                            r"declare renamedFrom: before"):
        Managed(streams).create(stream_inputs("after", {"subjects": ["rn.>"]}))
    assert raw.stream("after")["error"]["err_code"] == 10059
