"""Key-value buckets and object stores through the providers, on a real nats-server, used with nats-py as
applications use them."""
from __future__ import annotations

import asyncio
import hashlib
import os

import nats
import nats.js.api
import pytest

from stack.buckets import (
    KEY_VALUE,
    OBJECT_STORE,
    bucket_wire_config,
    load_all_buckets,
    load_buckets,
    stream_declaration_for,
)
from stack.catalog import CatalogError, load_catalog
from streams.bucket_provider import ObjectStoreProvider
from streams.jetstream import close_all_clients
from streams.plan import plan_stream_change
from streams.provider import DataLossRefused
from streams.resources import bucket_props
from tests.provider_harness import Managed, RawJetStream, configured


def kv_inputs(name: str, decl: dict) -> dict:
    [spec] = load_buckets({name: decl}, KEY_VALUE)
    return bucket_props(spec, jetstream_servers=1)


def obj_inputs(name: str, decl: dict) -> dict:
    [spec] = load_buckets({name: decl}, OBJECT_STORE)
    return bucket_props(spec, jetstream_servers=1)


def with_js(url, fn):
    async def go():
        nc = await nats.connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()
    return asyncio.run(go())


def test_a_bucket_made_here_works_through_the_client_api(server, kvs):
    Managed(kvs).create(kv_inputs("device-config", {"history": 5, "ttl": "30d", "storage": "file"}))
    close_all_clients()

    async def use(js):
        kv = await js.key_value("device-config")
        updates = await kv.watch("room1.>")
        assert (await updates.updates(timeout=2)) is None   # the end of the initial values
        for v in (b"20", b"21", b"22"):
            await kv.put("room1.setpoint", v)
        seen = [(await updates.updates(timeout=2)).value for _ in range(3)]
        assert seen == [b"20", b"21", b"22"]
        assert (await kv.get("room1.setpoint")).value == b"22"
        history = await kv.history("room1.setpoint")
        assert [e.value for e in history] == [b"20", b"21", b"22"] and [e.revision for e in history] == [1, 2, 3]
        await kv.delete("room1.setpoint")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("room1.setpoint")
        status = await kv.status()
        return status.history, status.ttl
    assert with_js(server.client_url, use) == (5, 30 * 86400)


def test_an_object_store_made_here_holds_50_mib(server, objs):
    Managed(objs).create(obj_inputs("firmware", {"maxBytes": "1GB", "storage": "file"}))
    close_all_clients()
    blob = os.urandom(50 * 2**20)

    async def use(js):
        store = await js.object_store("firmware")
        await store.put("esp32-v2.bin", blob)
        got = await store.get("esp32-v2.bin")
        return hashlib.sha256(got.data).hexdigest(), got.info.size
    assert with_js(server.client_url, use) == (hashlib.sha256(blob).hexdigest(), len(blob))


@pytest.mark.parametrize("made_by, decl", [
    (lambda js: js.create_key_value(bucket="made-by-py", history=5, ttl=3600), {"history": 5, "ttl": "1h"}),
    (lambda js: js.create_key_value(bucket="made-by-py", history=1, direct=True), {"direct": True}),
])
def test_a_bucket_nats_py_made_is_adopted_with_no_change(server, kvs, made_by, decl):
    with_js(server.client_url, lambda js: made_by(js))
    raw = RawJetStream(server.client_url)
    before = raw.stream("KV_made-by-py")
    managed = Managed(kvs).create(kv_inputs("made-by-py", decl))
    after = raw.stream("KV_made-by-py")
    assert after["created"] == before["created"]
    strip = lambda cfg: {k: v for k, v in cfg.items() if k != "metadata"}  # noqa: E731  (our managed mark)
    assert strip(after["config"]) == strip(before["config"])
    assert not managed.diff(kv_inputs("made-by-py", decl)).changes
    managed.refresh()
    assert not managed.diff(kv_inputs("made-by-py", decl)).changes   # no phantom diff after refresh


def test_an_object_store_nats_py_made_is_adopted_with_no_change(server, objs):
    with_js(server.client_url, lambda js: js.create_object_store("camera", ttl=86400, storage="file"))
    raw = RawJetStream(server.client_url)
    before = raw.stream("OBJ_camera")
    managed = Managed(objs).create(obj_inputs("camera", {"ttl": "1d"}))
    after = raw.stream("OBJ_camera")
    assert after["created"] == before["created"]
    assert {k: v for k, v in after["config"].items() if k != "metadata"} == \
        {k: v for k, v in before["config"].items() if k != "metadata"}
    managed.refresh()
    assert not managed.diff(obj_inputs("camera", {"ttl": "1d"})).changes


def test_drift_after_refresh_shows_the_option(server, kvs):
    managed = Managed(kvs).create(kv_inputs("drifty", {"history": 3}))
    raw = RawJetStream(server.client_url)
    cfg = raw.stream("KV_drifty")["config"]
    raw.api("$JS.API.STREAM.UPDATE.KV_drifty", {**cfg, "max_msgs_per_subject": 7})
    managed.refresh()
    assert managed.inputs["history"] == 7
    assert managed.diff(kv_inputs("drifty", {"history": 3})).changes


# Each change: (kind, option, before, after). The plan must be what the server does with it (tried first).
CHANGES = [
    ("kv", "history", 3, 10), ("kv", "ttl", "1h", "2h"), ("kv", "maxBytes", "10MB", "20MB"),
    ("kv", "maxValueSize", "1KB", "2KB"), ("kv", "description", "a", "b"), ("kv", "compression", False, True),
    ("kv", "storage", "file", "memory"), ("kv", "metadata", {"owner": "a"}, {"owner": "b"}), ("kv", "replicas", 1, 1),
    ("kv", "direct", True, False), ("kv", "limitMarkerTtl", "1m", "2m"),
    ("obj", "ttl", "1d", "2d"), ("obj", "maxBytes", "1GB", "2GB"), ("obj", "compression", True, False),
    ("obj", "storage", "memory", "file"), ("obj", "description", None, "firmware"),
]


@pytest.mark.parametrize("kind, option, before, after", CHANGES)
def test_each_change_is_planned_as_the_server_decides(server, kvs, objs, kind, option, before, after):
    bucket_kind, provider, inputs = (KEY_VALUE, kvs, kv_inputs) if kind == "kv" else (OBJECT_STORE, objs, obj_inputs)
    name = f"plan-{option.lower()}"
    decl_before = {} if before is None else {option: before}
    old_cfg = bucket_wire_config(bucket_kind, name, decl_before)
    new_cfg = bucket_wire_config(bucket_kind, name, {option: after})
    raw = RawJetStream(server.client_url)
    stream = bucket_kind.stream_name(name)
    created = raw.api(f"$JS.API.STREAM.CREATE.{stream}", old_cfg)
    assert "error" not in created, created
    answer = raw.api(f"$JS.API.STREAM.UPDATE.{stream}", new_cfg)
    server_says = "none" if before == after else "replace" if "error" in answer else "update"
    raw.api(f"$JS.API.STREAM.DELETE.{stream}")
    managed = Managed(provider).create(inputs(name, decl_before))
    diff = managed.diff(inputs(name, {option: after}))
    planned = "replace" if diff.replaces else "update" if diff.changes else "none"
    assert planned == server_says, (answer, diff.replaces)
    if diff.replaces:
        assert diff.replaces == [option]


def test_lowering_history_with_data_is_refused_without_the_opt_in(server, kvs):
    managed = Managed(kvs).create(kv_inputs("settings", {"history": 5}))
    close_all_clients()

    async def fill(js):
        kv = await js.key_value("settings")
        for i in range(5):
            await kv.put("mode", str(i).encode())
    with_js(server.client_url, fill)
    with pytest.raises(DataLossRefused, match=r"lower maxMsgsPerSubject: it would delete 3 messages .*keys and revisions.*allowDataLoss"):
        managed.update(kv_inputs("settings", {"history": 2}))
    assert RawJetStream(server.client_url).stream("KV_settings")["state"]["messages"] == 5
    managed.update(kv_inputs("settings", {"history": 2, "allowDataLoss": True}))
    assert RawJetStream(server.client_url).stream("KV_settings")["state"]["messages"] == 2
    # raising a limit is free
    managed.update(kv_inputs("settings", {"history": 8}))


def test_removing_a_bucket_with_objects_is_refused_without_the_opt_in(server, objs):
    managed = Managed(objs).create(obj_inputs("photos", {}))
    close_all_clients()

    async def put(js):
        store = await js.object_store("photos")
        await store.put("cat.jpg", b"meow" * 1000)
    with_js(server.client_url, put)
    with pytest.raises(DataLossRefused):
        managed.delete()
    assert RawJetStream(server.client_url).stream("OBJ_photos")["state"]["messages"] > 0


def test_the_mapping_equals_what_nats_py_makes_apart_from_the_two_flags(server):
    """nats-py 2.16's create_key_value, against ours for the same options: equal but for allow_msg_ttl and
    allow_direct (see stack/buckets.py)."""
    with_js(server.client_url, lambda js: js.create_key_value(bucket="same", history=4, ttl=600, max_bytes=2**20,
                                                              max_value_size=1024, description="d"))
    theirs = RawJetStream(server.client_url).stream("KV_same")["config"]
    ours = bucket_wire_config(KEY_VALUE, "same", {"history": 4, "ttl": "10m", "maxBytes": "1MB", "maxValueSize": "1KB",
                                                  "description": "d"})
    plan = plan_stream_change(theirs, ours)
    assert set(plan.changed) <= {"allow_msg_ttl", "allow_direct"}, plan.changed


@pytest.mark.parametrize("raw, says", [
    ({"keyValues": {"bad name": {}}}, "key-value bucket 'bad name': bucket names are"),
    ({"keyValues": {"cfg": {"history": 65}}}, "key-value bucket 'cfg': history: a whole number from 1 to 64"),
    ({"keyValues": {"cfg": {"ttl": "soon"}}}, "key-value bucket 'cfg': ttl:"),
    ({"keyValues": {"cfg": {"historyy": 2}}}, "key-value bucket 'cfg': historyy: unknown option"),
    ({"objectStores": {"fw": {"history": 2}}}, "object store 'fw': history: unknown option"),
    ({"objectStores": {"fw": {"storage": "tape"}}}, "object store 'fw': storage:"),
    ({"keyValues": {"cfg": {"replicas": 3}}}, "key-value bucket 'cfg': replicas:"),
])
def test_bad_bucket_declarations_fail_at_preview_naming_the_option(raw, says):
    with pytest.raises(CatalogError) as err:
        load_all_buckets(raw)
    assert str(err.value).startswith(says), str(err.value)


def test_a_bucket_colliding_with_a_stream_fails_at_preview():
    catalog = load_catalog({"KV_cfg": {"subjects": ["cfg.>"]}, "everything": {"subjects": ["$KV.>"]}})
    with pytest.raises(CatalogError, match="like a declared stream"):
        load_all_buckets({"keyValues": {"cfg": {}}}, streams=catalog[:1])
    with pytest.raises(CatalogError, match=r"overlap '\$KV.>' of stream 'everything'"):
        load_all_buckets({"keyValues": {"other": {}}}, streams=catalog[1:])


def test_bucket_reservations_count_against_the_store():
    with pytest.raises(CatalogError, match="maxBytes add up"):
        load_all_buckets({"objectStores": {"fw": {"maxBytes": "8GiB"}}},
                         streams=load_catalog({"a": {"subjects": ["a"], "maxBytes": "4GiB"}}),
                         store_limits={"file": 10 * 2**30, "memory": 2**30})


def test_mirror_and_sources_follow_nats_go():
    mirror = stream_declaration_for(KEY_VALUE, "copy", {"mirror": "origin"})
    assert mirror["mirror"] == {"name": "KV_origin"} and mirror["mirrorDirect"] and "subjects" not in mirror
    sourced = stream_declaration_for(KEY_VALUE, "merged", {"sources": ["a", "KV_b"]})
    assert sourced["sources"] == [
        {"name": "KV_a", "subjectTransforms": [{"source": "$KV.a.>", "destination": "$KV.merged.>"}]},
        {"name": "KV_b", "subjectTransforms": [{"source": "$KV.b.>", "destination": "$KV.merged.>"}]}]
    assert sourced["subjects"] == ["$KV.merged.>"]


def test_a_sourced_bucket_serves_the_origins_keys_through_the_client_api(server, kvs):
    Managed(kvs).create(kv_inputs("site-a", {}))
    Managed(kvs).create(kv_inputs("all-sites", {"sources": ["site-a"]}))
    close_all_clients()

    async def use(js):
        await (await js.key_value("site-a")).put("door", b"open")
        merged = await js.key_value("all-sites")
        for _ in range(100):
            try:
                return (await merged.get("door")).value
            except nats.js.errors.KeyNotFoundError:
                await asyncio.sleep(0.05)
    assert with_js(server.client_url, use) == b"open"


def test_re_applying_a_store_reserving_most_of_the_disk_adopts_it(server, objs):
    """nats-server checks the reservation before it looks for an existing stream: a second create of the
    homelab's 5GB firmware store (10Gi file store) is refused as insufficient storage (10047). Both the
    bucket and a stream of that size must still be re-applied (make dev twice, or a create after lost state)."""
    first = Managed(objs).create(obj_inputs("firmware", {"maxBytes": "6GB"}))
    again = Managed(configured(ObjectStoreProvider, server.client_url)).create(obj_inputs("firmware", {"maxBytes": "6GB"}))
    assert again.outputs["created"] == first.outputs["created"]   # (streams take the same path: provider.py)


# ---------------------------------------------------------------- backups, check, the local mode, the program

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from streams.local.apply import apply_catalog  # noqa: E402
from tests.pulumi_harness import ROOT, run_program, stack_config  # noqa: E402
from tests.stack.test_settings import homelab_raw  # noqa: E402


def cli(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=ROOT, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=300)


async def bucket_contents(js) -> dict:
    kv = await js.key_value("device-config")
    keys = {}
    for key in sorted(await kv.keys()):
        keys[key] = [(e.revision, e.value, e.operation) for e in await kv.history(key)]
    store = await js.object_store("firmware")
    objects = {}
    for info in await store.list():
        got = await store.get(info.name)
        objects[info.name] = (hashlib.sha256(got.data).hexdigest(), got.info.digest)
    return {"keys": keys, "objects": objects}


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_buckets_back_up_and_restore_with_keys_revisions_and_object_bytes(server, tmp_path, where, request):
    raw = homelab_raw()
    apply_catalog((), server.client_url, buckets=load_all_buckets(raw))
    close_all_clients()

    async def fill(js):
        kv = await js.key_value("device-config")
        for i in range(4):
            await kv.put("sensor-1.interval", str(10 * i).encode())
        await kv.put("sensor-2.interval", b"60")
        await kv.put("sensor-3.interval", b"5")
        await kv.delete("sensor-3.interval")
        store = await js.object_store("firmware")
        await store.put("esp32-v1.bin", os.urandom(3 * 2**20))
        await store.put("esp32-v2.bin", os.urandom(20 * 2**20 + 17))
        return await bucket_contents(js)
    before = with_js(server.client_url, fill)
    env = {"NATS_URL": server.client_url}
    if where == "folder":
        target = ["--to", str(tmp_path / "backups")]
        source = {s: ["--from", str(tmp_path / "backups" / s)] for s in ("KV_device-config", "OBJ_firmware")}
    else:
        bucket = request.getfixturevalue("s3_env")
        target = ["--bucket", bucket]
        source = {s: ["--bucket", bucket] for s in ("KV_device-config", "OBJ_firmware")}
    done = cli("backup", "KV_device-config", "OBJ_firmware", *target, env=env)
    assert done.returncode == 0, done.stderr
    for stream in ("KV_device-config", "OBJ_firmware"):
        RawJetStream(server.client_url).api(f"$JS.API.STREAM.DELETE.{stream}")
    for stream, args in source.items():
        restored = cli("restore", stream, *args, env=env)
        assert restored.returncode == 0, restored.stderr
    assert with_js(server.client_url, bucket_contents) == before
    assert before["keys"]["sensor-1.interval"][-1][:2] == (4, b"30") and before["objects"]


def test_check_reports_each_bucket(server, capsys):
    from streams.cli import main
    raw = homelab_raw()
    apply_catalog(load_catalog(raw["streams"]), server.client_url, buckets=load_all_buckets(raw))
    close_all_clients()

    async def put(js):
        await (await js.key_value("device-config")).put("a", b"1")
    with_js(server.client_url, put)

    def report():
        main(["check", "--server", server.client_url, "--monitor", server.monitoring_url, "--json",
              "--no-round-trip"])
        return {f["subject"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    found = report()
    assert found["key-value bucket 'device-config'"]["level"] == "ok"
    assert "as declared; 1 keys" in found["key-value bucket 'device-config'"]["message"]
    assert found["object store 'firmware'"]["level"] == "ok" and "of 5368709120 (0%)" in \
        found["object store 'firmware'"]["message"]
    rawjs = RawJetStream(server.client_url)
    cfg = rawjs.stream("KV_device-config")["config"]
    rawjs.api("$JS.API.STREAM.UPDATE.KV_device-config", {**cfg, "max_msgs_per_subject": 2})
    rawjs.api("$JS.API.STREAM.DELETE.OBJ_firmware")
    found = report()
    assert found["key-value bucket 'device-config'"]["level"] == "fail" and "max_msgs_per_subject" in \
        found["key-value bucket 'device-config'"]["message"]
    assert found["object store 'firmware'"]["level"] == "fail" and "missing" in found["object store 'firmware'"]["message"]


def test_the_homelab_stack_declares_a_bucket_and_an_object_store_as_resources():
    run = run_program(stack_config("homelab"))
    [kv] = run.of_type("pulumi-python:dynamic/nats:KeyValue")
    [obj] = run.of_type("pulumi-python:dynamic/nats:ObjectStore")
    assert kv.name == "kv-device-config" and kv.inputs["name"] == "device-config" and kv.inputs["history"] == 5
    assert obj.name == "objectstore-firmware" and obj.inputs["maxBytes"] == "5GB"
    assert run.exports["keyValues"] == {"device-config": "KV_device-config"}
    assert run.exports["objectStores"] == {"firmware": "OBJ_firmware"}


def test_make_dev_applies_the_buckets(tmp_path):
    from streams.local.server import free_port
    args = ["dev", "--once", "--port", str(free_port()), "--http-port", str(free_port()), "--data-dir",
            str(tmp_path / "dev")]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "created key-value bucket device-config" in first.stdout and "created object store firmware" in first.stdout
    assert '"keyValues": {' in first.stdout
    again = cli(*args)   # idempotent, the 5GB reservation included
    assert again.returncode == 0, again.stderr
    assert "unchanged key-value bucket device-config" in again.stdout and "unchanged object store firmware" in again.stdout


def test_limit_markers_are_what_the_server_takes(server, kvs):
    managed = Managed(kvs).create(kv_inputs("presence", {"ttl": "1h", "limitMarkerTtl": "5m"}))
    cfg = RawJetStream(server.client_url).stream("KV_presence")["config"]
    assert cfg["allow_msg_ttl"] is True and cfg["subject_delete_marker_ttl"] == 300 * 10**9
    managed.refresh()
    assert managed.inputs["limitMarkerTtl"] == "5m"
    assert not managed.diff(kv_inputs("presence", {"ttl": "1h", "limitMarkerTtl": "5m"})).changes
    # without the markers declared, message TTLs stay on (the server cannot turn them off): an update
    d = managed.diff(kv_inputs("presence", {"ttl": "1h", "direct": True}))
    assert d.changes and d.replaces == []
    managed.update(kv_inputs("presence", {"ttl": "1h", "direct": True}))
    cfg = RawJetStream(server.client_url).stream("KV_presence")["config"]
    assert cfg["allow_msg_ttl"] is True and not cfg.get("subject_delete_marker_ttl")
