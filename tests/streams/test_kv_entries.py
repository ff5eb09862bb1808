"""KeyValueEntry on a real server: a declared key is written when the server's value differs, a value changed on the
server is drift on refresh and written back only by `up`, and removing the declaration deletes the key only with the
bucket's allowDataLoss. The values are read back as the official client reads them (nats-py's key-value API)."""
import asyncio

import nats
import pytest

from stack.buckets import KEY_VALUE, load_buckets
from streams.bucket_provider import KeyValueProvider
from streams.kv_entry_provider import KeyValueEntryProvider
from streams.resources import bucket_props
from tests.provider_harness import Managed, configured


def entry(key, value, allow=False):
    return {"bucket": "device-config", "key": key, "value": value, "allowDataLoss": allow}


@pytest.fixture
def bucket(server):
    [spec] = load_buckets({"device-config": {"history": 5}}, KEY_VALUE)
    Managed(configured(KeyValueProvider, server.client_url)).create(bucket_props(spec, jetstream_servers=1))
    return configured(KeyValueEntryProvider, server.client_url)


def kv(server, op, *args):
    """What a device does with nats-py's key-value API."""
    async def go():
        nc = await nats.connect(server.client_url)
        try:
            store = await nc.jetstream().key_value("device-config")
            if op == "get":
                try:
                    got = await store.get(args[0])
                except nats.js.errors.KeyNotFoundError:
                    return None
                return got.value.decode(), got.revision
            return await getattr(store, op)(*args)
        finally:
            await nc.close()
    return asyncio.run(go())


def test_a_declared_key_is_written_once_and_read_as_the_client_reads_it(server, bucket):
    e = Managed(bucket).create(entry("room1.interval", "30"))
    assert e.id == "KV_device-config/room1.interval"
    assert kv(server, "get", "room1.interval") == ("30", e.outputs["revision"])
    # Declared again as it is (another `up`, or make dev again): adopted, nothing written.
    again = Managed(bucket).create(entry("room1.interval", "30"))
    assert again.outputs["revision"] == e.outputs["revision"]
    assert e.diff(entry("room1.interval", "30")).changes is False


def test_a_value_changed_on_the_server_is_drift_written_back_only_by_up(server, bucket):
    e = Managed(bucket).create(entry("room1.interval", "30"))
    kv(server, "put", "room1.interval", b"45")                 # an operator, or the device itself
    assert kv(server, "get", "room1.interval")[0] == "45"      # nothing writes it back by itself
    e.refresh()
    assert e.inputs["value"] == "45"                           # the refresh shows the drift
    d = e.diff(entry("room1.interval", "30"))
    assert d.changes and not d.replaces
    assert e.apply(entry("room1.interval", "30")) == "update"
    value, revision = kv(server, "get", "room1.interval")
    assert value == "30" and revision == e.outputs["revision"] == 3


def test_a_deleted_key_reads_as_gone_and_up_puts_it_again(server, bucket):
    e = Managed(bucket).create(entry("fw.url", "http://fw/1.bin"))
    kv(server, "delete", "fw.url")
    assert e.refresh().id == ""
    again = Managed(bucket).create(entry("fw.url", "http://fw/1.bin"))
    assert kv(server, "get", "fw.url")[0] == "http://fw/1.bin" and again.outputs["revision"] == 3


def test_removing_the_declaration_keeps_the_key_unless_the_bucket_allows_data_loss(server, bucket, capsys):
    kept = Managed(bucket).create(entry("keep.me", "1"))
    kept.delete()
    assert kv(server, "get", "keep.me") == ("1", kept.outputs["revision"])
    assert "left on the server" in capsys.readouterr().err
    gone = Managed(bucket).create(entry("drop.me", "1", allow=True))
    gone.delete()
    assert kv(server, "get", "drop.me") is None
    assert "deleted (allowDataLoss)" in capsys.readouterr().err


def test_a_bad_key_fails_check(bucket):
    failures = bucket.check({}, entry(".bad", "x")).failures
    assert [f.property for f in failures] == ["key"]


def test_check_shows_declared_keys_that_differ_without_their_values(server, bucket):
    from streams.cli.check import WARN, check_buckets

    [spec] = load_buckets({"device-config": {"history": 5, "entries": {
        "same": "1", "changed": "2", "missing": "3", "secret": {"secure": "v1:x"}}}}, KEY_VALUE)
    Managed(bucket).create(entry("same", "1"))
    Managed(bucket).create(entry("changed", "2"))
    kv(server, "put", "changed", b"hand-edited")

    async def run():
        nc = await nats.connect(server.client_url)
        try:
            return await check_buckets(nc, [spec], store_warn=0.8)
        finally:
            await nc.close()
    found = {f.subject: f for f in asyncio.run(run()) if f.subject.startswith("key ")}
    level = {key: found[f"key {key!r} of key-value bucket 'device-config'"].level
             for key in ("same", "changed", "missing", "secret")}
    assert level == {"same": "ok", "changed": WARN, "missing": WARN, "secret": "ok"}
    assert "hand-edited" not in str(found) and "differs from the declaration" in str(found)


@pytest.mark.parametrize("message, expected", [
    ({"data": "MzA=", "seq": 4}, ("30", 4)),
    ({"data": "", "seq": 2}, ("", 2)),
    ({"hdrs": "TkFUUy8xLjANCktWLU9wZXJhdGlvbjogREVMDQoNCg==", "seq": 5}, None),     # KV-Operation: DEL
    ({"hdrs": "TkFUUy8xLjANCktWLU9wZXJhdGlvbjogUFVSR0UNCg0K", "seq": 6}, None),     # KV-Operation: PURGE
])
def test_entry_from_message(message, expected):
    from stack.buckets import entry_from_message
    assert entry_from_message(message) == expected


def test_report_lists_declared_keys_with_their_status_not_their_values(server, bucket, tmp_path, capsys):
    import json

    import yaml

    from streams.cli import main
    from tests.pulumi_harness import ROOT

    doc = yaml.safe_load((ROOT / "Pulumi.homelab.yaml").read_text())
    doc["config"]["homelab-nats:keyValues"]["device-config"]["entries"] = {"same": "1", "changed": "2", "gone": "3"}
    stack_file = tmp_path / "Pulumi.keys.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    Managed(bucket).create(entry("same", "1"))
    Managed(bucket).create(entry("changed", "2"))
    kv(server, "put", "changed", b"edited-by-hand")
    assert main(["report", "--server", server.client_url, "--stack", str(stack_file), "--json"]) == 0
    out = capsys.readouterr().out
    rows = {k["key"]: (k["status"], k["revision"]) for k in json.loads(out)["keys"]}
    assert rows == {"same": ("as declared", 1), "changed": ("differs", 3), "gone": ("missing", None)}
    assert "edited-by-hand" not in out
    assert main(["report", "--server", server.client_url, "--stack", str(stack_file)]) == 0
    table = capsys.readouterr().out
    assert "DECLARED KEY" in table and "device-config/changed  differs" in table
