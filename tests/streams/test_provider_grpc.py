"""The providers driven exactly as the engine drives them: `python -m pulumi.dynamic` in its own
process, called over gRPC with properties serialized by the SDK (numbers become doubles there) and
the provider pickled into `__provider` as the SDK does it."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from streams.local.server import free_port
from streams.provider import ConsumerProvider, StreamProvider
from tests.provider_harness import RawJetStream, consumer_inputs, stream_inputs
from tests.pulumi_harness import ROOT

PROJECT = "homelab-nats"
STREAM_URN = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:Stream::stream-x"
CONSUMER_URN = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:Consumer::consumer-x"


def _struct(props: dict):
    return asyncio.run(rpc.serialize_properties(props, {}))


def _dict(struct) -> dict:
    return rpc.deserialize_properties(struct)


class EngineSide:
    """What the Pulumi engine sends to the dynamic provider plugin."""

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def configure(self, config: dict):
        return self.stub.Configure(provider_pb2.ConfigureRequest(args=_struct(config), acceptSecrets=True))

    def check(self, urn, olds, news):
        r = self.stub.Check(provider_pb2.CheckRequest(urn=urn, olds=_struct(olds), news=_struct(news)))
        return _dict(r.inputs), [(f.property, f.reason) for f in r.failures]

    def diff(self, urn, id_, olds, news):
        return self.stub.Diff(provider_pb2.DiffRequest(urn=urn, id=id_, olds=_struct(olds), news=_struct(news)))

    def create(self, urn, props):
        r = self.stub.Create(provider_pb2.CreateRequest(urn=urn, properties=_struct(props)))
        return r.id, _dict(r.properties)

    def read(self, urn, id_, props):
        r = self.stub.Read(provider_pb2.ReadRequest(urn=urn, id=id_, properties=_struct(props)))
        return r.id, _dict(r.properties), _dict(r.inputs)

    def update(self, urn, id_, olds, news):
        r = self.stub.Update(provider_pb2.UpdateRequest(urn=urn, id=id_, olds=_struct(olds), news=_struct(news)))
        return _dict(r.properties)

    def delete(self, urn, id_, props):
        self.stub.Delete(provider_pb2.DeleteRequest(urn=urn, id=id_, properties=_struct(props)))


@pytest.fixture
def engine():
    env = {**os.environ, "PULUMI_PROJECT": PROJECT}
    env.pop("NATS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "pulumi.dynamic"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        side = EngineSide(port)
        yield side
        side.channel.close()
    finally:
        proc.terminate()
        proc.wait(10)


def with_provider(props: dict, provider) -> dict:
    return {**props, "__provider": serialize_provider(provider)}


def test_full_lifecycle_over_grpc(engine, nats_server):
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    decl = {"subjects": ["sensors.>"], "storage": "file", "retention": "limits", "maxAge": "24h", "maxMsgs": -1,
            "replicas": 1}
    news = with_provider(stream_inputs("iot-sensors", decl), StreamProvider())
    inputs, failures = engine.check(STREAM_URN, {}, news)
    assert failures == []
    id_, outs = engine.create(STREAM_URN, inputs)
    assert id_ == "iot-sensors"
    info = raw.stream("iot-sensors")["config"]
    assert info["max_msgs"] == -1 and info["max_age"] == 24 * 3600 * 10**9  # -1.0 over the wire became -1
    assert isinstance(outs["created"], str)
    assert engine.diff(STREAM_URN, id_, outs, inputs).changes == provider_pb2.DiffResponse.DIFF_NONE
    # refresh
    rid, routs, rinputs = engine.read(STREAM_URN, id_, outs)
    assert rid == id_ and rinputs["maxAge"] == "1d"
    assert engine.diff(STREAM_URN, id_, routs, inputs).changes == provider_pb2.DiffResponse.DIFF_NONE
    # in-place update
    news2 = with_provider(stream_inputs("iot-sensors", {**decl, "maxAge": "48h"}), StreamProvider())
    d = engine.diff(STREAM_URN, id_, routs, news2)
    assert d.changes == provider_pb2.DiffResponse.DIFF_SOME and list(d.replaces) == []
    outs2 = engine.update(STREAM_URN, id_, routs, news2)
    assert raw.stream("iot-sensors")["config"]["max_age"] == 48 * 3600 * 10**9
    # replacement is planned create-before-delete
    news3 = with_provider(stream_inputs("iot-sensors", {**decl, "storage": "memory"}), StreamProvider())
    d = engine.diff(STREAM_URN, id_, outs2, news3)
    assert list(d.replaces) == ["storage"] and not d.deleteBeforeReplace
    # consumer
    cnews = with_provider(consumer_inputs("iot-sensors", decl, "processor", {
        "filterSubject": "sensors.temperature.>", "ackPolicy": "explicit", "deliverPolicy": "all", "maxDeliver": 3}),
        ConsumerProvider())
    cinputs, failures = engine.check(CONSUMER_URN, {}, cnews)
    assert failures == []
    cid, couts = engine.create(CONSUMER_URN, cinputs)
    assert cid == "iot-sensors/processor" and raw.consumer("iot-sensors", "processor")["config"]["max_deliver"] == 3
    assert engine.diff(CONSUMER_URN, cid, couts, cinputs).changes == provider_pb2.DiffResponse.DIFF_NONE
    engine.delete(CONSUMER_URN, cid, couts)
    assert raw.consumer("iot-sensors", "processor")["error"]["err_code"] == 10014
    engine.delete(STREAM_URN, id_, outs2)
    assert raw.stream("iot-sensors")["error"]["err_code"] == 10059


def test_check_rejects_bad_input_over_grpc(engine):
    engine.configure({f"{PROJECT}:natsUrl": f"nats://127.0.0.1:{free_port()}"})
    bad = with_provider({"name": "bad", "subjects": ["x.>"], "maxAge": "soon", "jetstreamServers": 1},
                        StreamProvider())
    _, failures = engine.check(STREAM_URN, {}, bad)
    assert failures and failures[0][0] == "maxAge" and "stream 'bad': maxAge" in failures[0][1]
    cbad = with_provider({"stream": "s", "name": "c", "deliverSubject": "x.out", "streamSubjects": ["x.>"],
                          "streamReplicas": 1}, ConsumerProvider())
    _, failures = engine.check(CONSUMER_URN, {}, cbad)
    assert failures[0][0] == "deliverSubject" and "(a cycle)" in failures[0][1]


def test_preview_needs_no_server(engine):
    """check and diff are offline: preview in CI works with the homelab out of reach."""
    engine.configure({f"{PROJECT}:natsUrl": f"nats://127.0.0.1:{free_port()}", f"{PROJECT}:natsReadyTimeout": "1s"})
    decl = {"subjects": ["logs.>"], "maxAge": "7d", "maxBytes": "1GB"}
    olds = {**with_provider(stream_inputs("app-logs", decl), StreamProvider()), "created": "2025-07-15T10:00:00Z"}
    news = with_provider(stream_inputs("app-logs", {**decl, "maxBytes": "2GB"}), StreamProvider())
    inputs, failures = engine.check(STREAM_URN, olds, news)
    assert failures == []
    d = engine.diff(STREAM_URN, "app-logs", olds, inputs)
    assert d.changes == provider_pb2.DiffResponse.DIFF_SOME and list(d.replaces) == []
    same = engine.diff(STREAM_URN, "app-logs", olds, with_provider(stream_inputs("app-logs", decl), StreamProvider()))
    assert same.changes == provider_pb2.DiffResponse.DIFF_NONE
    with pytest.raises(grpc.RpcError) as err:  # only an operation that needs the server reaches for it
        engine.create(STREAM_URN, inputs)
    assert "JetStream" in err.value.details() or "could not connect" in err.value.details()


def test_credentials_reach_the_provider_only_through_configure(engine, tmp_path, homelab_settings):
    """A password-protected server: the password is stack config, never an input, output or log line."""
    from render.nats_conf import render_nats_conf
    from streams.local.server import local_layout, start_server

    layout = local_layout(tmp_path)
    secret = "s3cr3t-pa55word"
    conf = render_nats_conf(homelab_settings, layout) + (
        f'authorization {{ user: "admin", password: "{secret}" }}\n')
    server = start_server(homelab_settings, layout, tmp_path, conf_text=conf, wait=True)
    try:
        engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsUser": "admin",
                          f"{PROJECT}:natsPassword": secret, f"{PROJECT}:natsReadyTimeout": "5s"})
        news = with_provider(stream_inputs("secured", {"subjects": ["sec.>"]}), StreamProvider())
        inputs, _ = engine.check(STREAM_URN, {}, news)
        id_, outs = engine.create(STREAM_URN, inputs)
        assert id_ == "secured"
        assert secret not in repr(inputs) and secret not in repr(outs)
        assert secret not in repr(serialize_provider(StreamProvider()))
    finally:
        server.stop()


UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what the engine sends for a value computed at `up`


def test_unknown_values_at_preview_over_grpc(engine):
    """Inputs computed from other resources are unknown at preview: Check validates what is known, Diff
    plans a possible replacement where the unknown field could force one and an update elsewhere."""
    engine.configure({f"{PROJECT}:natsUrl": f"nats://127.0.0.1:{free_port()}"})
    decl = {"subjects": ["logs.>"], "maxAge": "7d"}
    olds = {**with_provider(stream_inputs("app-logs", decl), StreamProvider()), "created": "2025-07-15T10:00:00Z"}
    for unknown_key in ("subjects", "maxAge", "storage"):
        news = with_provider({**stream_inputs("app-logs", decl), unknown_key: UNKNOWN}, StreamProvider())
        assert engine.check(STREAM_URN, olds, news)[1] == [], unknown_key
    bad = with_provider({**stream_inputs("app-logs", decl), "subjects": UNKNOWN, "maxAge": "soon"}, StreamProvider())
    assert engine.check(STREAM_URN, olds, bad)[1][0][0] == "maxAge"  # the known value is still checked
    d = engine.diff(STREAM_URN, "app-logs", olds, with_provider({**stream_inputs("app-logs", decl), "storage": UNKNOWN},
                                                                 StreamProvider()))
    assert d.changes == provider_pb2.DiffResponse.DIFF_SOME and list(d.replaces) == ["storage"]
    d = engine.diff(STREAM_URN, "app-logs", olds, with_provider({**stream_inputs("app-logs", decl), "maxAge": UNKNOWN},
                                                                 StreamProvider()))
    assert d.changes == provider_pb2.DiffResponse.DIFF_SOME and list(d.replaces) == []
    cdecl = consumer_inputs("app-logs", decl, "c", {"maxDeliver": 3})
    colds = with_provider(cdecl, ConsumerProvider())
    for key, replaces in (("deliverPolicy", ["deliverPolicy"]), ("maxDeliver", [])):
        cnews = with_provider({**cdecl, key: UNKNOWN}, ConsumerProvider())
        assert engine.check(CONSUMER_URN, colds, cnews)[1] == []
        d = engine.diff(CONSUMER_URN, "app-logs/c", colds, cnews)
        assert d.changes == provider_pb2.DiffResponse.DIFF_SOME and list(d.replaces) == replaces
    # an unknown stream context (the stream's subjects computed at `up`) still checks the consumer's own rules
    cbad = with_provider({**cdecl, "streamSubjects": UNKNOWN, "maxExpires": "500us"}, ConsumerProvider())
    assert engine.check(CONSUMER_URN, colds, cbad)[1][0][0] == "maxExpires"
    # the stream's created time, unknown while the stream is being updated, is no change by itself
    same = with_provider({**cdecl, "streamCreated": UNKNOWN}, ConsumerProvider())
    assert engine.diff(CONSUMER_URN, "app-logs/c", {**colds, "streamCreated": "2025-07-15T10:00:00Z"},
                       same).changes == provider_pb2.DiffResponse.DIFF_NONE


def test_consumer_replacement_as_the_engine_runs_it(engine, nats_server):
    """The engine's create-before-delete replacement over gRPC: Create (the new declaration, whose
    allowDataLoss counts) swaps the consumer; the later Delete of the old resource keeps the new one."""
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    decl = {"subjects": ["i.>"], "retention": "interest"}
    _, souts = engine.create(STREAM_URN, engine.check(STREAM_URN, {}, with_provider(stream_inputs("intr", decl),
                                                                                     StreamProvider()))[0])
    cid, old_outs = engine.create(CONSUMER_URN, with_provider(consumer_inputs("intr", decl, "c", {}), ConsumerProvider()))
    raw.publish("i.x", [b"m"] * 5)
    news = with_provider(consumer_inputs("intr", decl, "c", {"deliverPolicy": "last"}), ConsumerProvider())
    d = engine.diff(CONSUMER_URN, cid, old_outs, news)
    assert list(d.replaces) == ["deliverPolicy"] and not d.deleteBeforeReplace
    with pytest.raises(grpc.RpcError) as err:
        engine.create(CONSUMER_URN, news)
    assert "refusing to recreate it" in err.value.details() and "allowDataLoss: true" in err.value.details()
    assert raw.stream("intr")["state"]["messages"] == 5
    opted = with_provider(consumer_inputs("intr", decl, "c", {"deliverPolicy": "last", "allowDataLoss": True}),
                          ConsumerProvider())
    engine.create(CONSUMER_URN, opted)
    engine.delete(CONSUMER_URN, cid, old_outs)  # the old resource: a newer consumer stands there now
    assert raw.consumer("intr", "c")["config"]["deliver_policy"] == "last"


def test_key_value_bucket_lifecycle_over_grpc(engine, nats_server):
    from streams.bucket_provider import KeyValueProvider
    from tests.streams.test_buckets import kv_inputs
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    urn = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:KeyValue::kv-device-config"
    decl = {"history": 5, "ttl": "30d", "storage": "file"}
    inputs, failures = engine.check(urn, {}, with_provider(kv_inputs("device-config", decl), KeyValueProvider()))
    assert failures == []
    id_, outs = engine.create(urn, inputs)
    assert id_ == "KV_device-config" and raw.stream(id_)["config"]["max_msgs_per_subject"] == 5
    rid, routs, rinputs = engine.read(urn, id_, outs)
    assert rinputs["history"] == 5 and rinputs["ttl"] == "30d"
    assert engine.diff(urn, id_, routs, inputs).changes == provider_pb2.DiffResponse.DIFF_NONE
    d = engine.diff(urn, id_, routs, with_provider(kv_inputs("device-config", {**decl, "storage": "memory"}),
                                                   KeyValueProvider()))
    assert list(d.replaces) == ["storage"]
    _, failures = engine.check(urn, {}, with_provider({**kv_inputs("device-config", decl), "history": 99},
                                                      KeyValueProvider()))
    assert failures and failures[0][0] == "history" and "1 to 64" in failures[0][1]
    engine.delete(urn, id_, routs)
    assert raw.stream(id_)["error"]["err_code"] == 10059


def test_a_refresh_makes_up_recreate_what_was_deleted_out_of_band(engine, nats_server):
    """Pulumi.yaml asks for a refresh before every up (`options.refresh: always`, pulumi/pulumi#8071). The engine's
    calls then: Read finds the stream and consumer gone (empty id: dropped from the state), the program registers
    them again, Check with no olds, Create. Without the refresh, Diff against the recorded state says nothing
    changed and nothing would make them again."""
    import yaml
    assert yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["options"] == {"refresh": "always"}
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    decl = {"subjects": ["events.>"], "storage": "memory", "maxAge": "1h"}
    inputs, _ = engine.check(STREAM_URN, {}, with_provider(stream_inputs("events", decl), StreamProvider()))
    id_, outs = engine.create(STREAM_URN, inputs)
    cinputs, _ = engine.check(CONSUMER_URN, {}, with_provider(consumer_inputs("events", decl, "audit", {
        "ackPolicy": "explicit"}), ConsumerProvider()))
    cid, couts = engine.create(CONSUMER_URN, cinputs)
    raw.api("$JS.API.STREAM.DELETE.events")          # a restart forgot the memory stream, or someone deleted it
    assert engine.diff(STREAM_URN, id_, outs, inputs).changes == provider_pb2.DiffResponse.DIFF_NONE  # no refresh
    assert engine.read(STREAM_URN, id_, outs)[0] == "" and engine.read(CONSUMER_URN, cid, couts)[0] == ""
    again, _ = engine.check(STREAM_URN, {}, inputs)
    engine.create(STREAM_URN, again)
    cagain, _ = engine.check(CONSUMER_URN, {}, cinputs)
    engine.create(CONSUMER_URN, cagain)
    assert raw.stream("events")["config"]["storage"] == "memory"
    assert raw.consumer("events", "audit")["config"]["ack_policy"] == "explicit"


def test_a_refresh_with_nats_out_of_reach_keeps_the_state_so_preview_works(engine):
    """CI previews with the homelab out of reach: the refresh keeps what the state recorded, and the diff is as
    without a refresh."""
    engine.configure({f"{PROJECT}:natsUrl": f"nats://127.0.0.1:{free_port()}", f"{PROJECT}:natsReadyTimeout": "30s"})
    decl = {"subjects": ["logs.>"], "maxAge": "7d"}
    recorded = {**with_provider(stream_inputs("app-logs", decl), StreamProvider()), "created": "2025-07-15T10:00:00Z",
                "config": {"name": "app-logs"}, "messagesRemoved": 0}
    rid, routs, rinputs = engine.read(STREAM_URN, "app-logs", recorded)
    assert rid == "app-logs" and routs["created"] == "2025-07-15T10:00:00Z" and rinputs["maxAge"] == "7d"
    assert "created" not in rinputs
    crecorded = {**with_provider(consumer_inputs("app-logs", decl, "c", {}), ConsumerProvider()), "created": "x"}
    assert engine.read(CONSUMER_URN, "app-logs/c", crecorded)[0] == "app-logs/c"
    news = with_provider(stream_inputs("app-logs", decl), StreamProvider())
    assert engine.diff(STREAM_URN, rid, routs, news).changes == provider_pb2.DiffResponse.DIFF_NONE


def test_a_refresh_with_refused_credentials_fails(engine, tmp_path, homelab_settings, nats_server):
    """Out of reach is not the same as refused: wrong credentials fail the refresh and say so."""
    from dataclasses import replace

    from stack.users import parse_auth, plan_users
    from streams.local.server import local_layout, start_server
    from streams.local.users import write_local_auth
    auth = parse_auth({"enabled": True}, admin="admin")
    settings = replace(homelab_settings, auth=auth)
    users = plan_users(auth, (), [], admin="admin")
    layout = local_layout(tmp_path / "secured", client_port=free_port(), monitoring_port=free_port())
    include, _ = write_local_auth(tmp_path / "secured", users, f"nats://127.0.0.1:{layout.client_port}")
    with start_server(settings, replace(layout, auth_include=include), tmp_path / "secured") as server:
        engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsUser": "admin",
                          f"{PROJECT}:natsPassword": "wrong-password"})
        recorded = {**with_provider(stream_inputs("app-logs", {"subjects": ["logs.>"]}), StreamProvider()),
                    "created": "x"}
        with pytest.raises(grpc.RpcError) as err:
            engine.read(STREAM_URN, "app-logs", recorded)
        assert "refused the credentials" in err.value.details() and "wrong-password" not in err.value.details()


def test_state_written_before_the_layout_change_still_works(engine, nats_server):
    """Every resource's state holds its provider pickled by reference to its module (`streams.provider`,
    `streams.bucket_provider`): state written by the code before the layout change (tests/fixtures) must still
    create, refresh, update and delete with today's code."""
    import json
    state = json.loads((ROOT / "tests" / "fixtures" / "state_before_layout.json").read_text())
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    id_, outs = engine.create(STREAM_URN, state["stream"])
    cid, couts = engine.create(CONSUMER_URN, state["consumer"])
    kv_urn = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:KeyValue::kv-x"
    kid, kouts = engine.create(kv_urn, state["keyValue"])
    assert raw.stream("legacy")["config"]["max_age"] == 3600 * 10**9 and raw.stream("KV_legacy-kv")["config"]
    assert engine.read(STREAM_URN, id_, outs)[0] == "legacy" and engine.read(CONSUMER_URN, cid, couts)[0] == cid
    engine.update(STREAM_URN, id_, outs, {**state["stream"], "maxAge": "2h"})
    assert raw.stream("legacy")["config"]["max_age"] == 2 * 3600 * 10**9
    engine.delete(CONSUMER_URN, cid, couts)
    engine.delete(STREAM_URN, id_, outs)
    engine.delete(kv_urn, kid, kouts)
    assert raw.stream("legacy")["error"]["err_code"] == 10059 and raw.stream("KV_legacy-kv")["error"]["err_code"] == 10059


def test_key_value_entry_lifecycle_over_grpc(engine, nats_server):
    """A declared key as the engine drives it: check, create, read, diff, update, delete (left without allowDataLoss)."""
    from streams.bucket_provider import KeyValueProvider
    from streams.kv_entry_provider import KeyValueEntryProvider
    from tests.streams.test_buckets import kv_inputs
    server = nats_server()
    raw = RawJetStream(server.client_url)
    engine.configure({f"{PROJECT}:natsUrl": server.client_url, f"{PROJECT}:natsReadyTimeout": "10s"})
    bucket_urn = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:KeyValue::kv-device-config"
    inputs, _ = engine.check(bucket_urn, {}, with_provider(kv_inputs("device-config", {"history": 5}),
                                                           KeyValueProvider()))
    engine.create(bucket_urn, inputs)
    urn = f"urn:pulumi:homelab::{PROJECT}::pulumi-python:dynamic/nats:KeyValueEntry::kv-device-config-entry-interval"
    props = {"bucket": "device-config", "key": "room1.interval", "value": "30", "allowDataLoss": False}
    _, failures = engine.check(urn, {}, with_provider({**props, "key": ".bad"}, KeyValueEntryProvider()))
    assert [f[0] for f in failures] == ["key"]
    inputs, failures = engine.check(urn, {}, with_provider(props, KeyValueEntryProvider()))
    assert failures == []
    id_, outs = engine.create(urn, inputs)
    assert id_ == "KV_device-config/room1.interval" and outs["revision"] == 1
    raw.publish("$KV.device-config.room1.interval", [b"45"])           # changed on the server
    rid, routs, rinputs = engine.read(urn, id_, outs)
    assert rid == id_ and rinputs["value"] == "45" and routs["revision"] == 2
    assert engine.diff(urn, id_, routs, inputs).changes == provider_pb2.DiffResponse.DIFF_SOME
    outs = engine.update(urn, id_, routs, inputs)
    assert outs["revision"] == 3
    assert raw.api("$JS.API.STREAM.MSG.GET.KV_device-config",
                   {"last_by_subj": "$KV.device-config.room1.interval"})["message"]["data"] == "MzA="   # "30"
    engine.delete(urn, id_, outs)   # no allowDataLoss: the key stays
    assert raw.api("$JS.API.STREAM.MSG.GET.KV_device-config",
                   {"last_by_subj": "$KV.device-config.room1.interval"})["message"]["seq"] == 3
