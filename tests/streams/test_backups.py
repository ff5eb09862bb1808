"""Backup and restore through S3 (moto on loopback) with real nats-servers."""
import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import nats
import pytest

from streams.backup import snapshot as snapshot_module
from streams.backup.s3 import BackupRef, BackupStore, s3_client
from streams.backup.service import BackupError, backup_stream, close_quietly, plan_prune, restore_backup
from streams.cli import main
from tests.conftest import S3_SECRET_KEY
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT


def fill_stream(raw: RawJetStream, name="iot-sensors", subjects=("sensors.>",), n=50, storage="file"):
    raw.api(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": list(subjects), "storage": storage})
    async def pub(nc):
        js = nc.jetstream()
        for i in range(n):
            await js.publish(f"{subjects[0].rstrip('>')}room{i % 5}", json.dumps({"value": i}).encode(),
                             headers={"Sensor-Id": f"s{i}", "Nats-Msg-Id": f"m{i}"})
    raw._run(pub)


def all_messages(url: str, stream: str) -> list[tuple]:
    async def read(nc):
        out, seq = [], 1
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
        while seq <= info["state"]["last_seq"]:
            r = json.loads((await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode(),
                                             timeout=5)).data)
            if "message" in r:
                m = r["message"]
                out.append((m["seq"], m["subject"], m.get("hdrs"), m.get("data")))
            seq += 1
        return out
    return RawJetStream(url)._run(read)


def add_consumer_with_progress(raw: RawJetStream, stream="iot-sensors", name="processor", ack=7, fetch=10):
    raw.api(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": {
        "durable_name": name, "ack_policy": "explicit", "filter_subject": "sensors.>", "max_deliver": 3}})

    async def consume(nc):
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(name, stream)
        msgs = await sub.fetch(fetch, timeout=5)
        for m in msgs[:ack]:
            await m.ack_sync()
    raw._run(consume)


def run(coro_fn, url):
    async def go():
        nc = await nats.connect(url, max_reconnect_attempts=0)  # as the CLI connects: fail fast
        try:
            return await coro_fn(nc)
        finally:
            await close_quietly(nc)
    return asyncio.run(go())


def test_backup_then_restore_gives_an_identical_stream(nats_server, s3_env):
    source, target = nats_server(), nats_server()
    raw = RawJetStream(source.client_url)
    fill_stream(raw, n=120)
    add_consumer_with_progress(raw)
    raw.api("$JS.API.STREAM.MSG.DELETE.iot-sensors", {"seq": 5})  # a gap in the sequence
    store = BackupStore(s3_client(), s3_env, "nats")
    ref = run(lambda nc: backup_stream(nc, store, "iot-sensors"), source.client_url)
    assert [r.id for r in store.list("iot-sensors")] == [ref.id]
    run(lambda nc: restore_backup(nc, store, ref), target.client_url)
    assert all_messages(target.client_url, "iot-sensors") == all_messages(source.client_url, "iot-sensors")
    a, b = RawJetStream(source.client_url), RawJetStream(target.client_url)
    sa, sb = a.stream("iot-sensors")["state"], b.stream("iot-sensors")["state"]
    for key in ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "consumer_count"):
        assert sa.get(key) == sb.get(key), key
    ca, cb = a.consumer("iot-sensors", "processor"), b.consumer("iot-sensors", "processor")
    seqs = lambda d: (d["consumer_seq"], d["stream_seq"])  # noqa: E731 (last_active is the restore time)
    assert seqs(cb["delivered"]) == seqs(ca["delivered"]) and seqs(cb["ack_floor"]) == seqs(ca["ack_floor"])
    assert cb["ack_floor"]["stream_seq"] == 7 and cb["config"]["max_deliver"] == 3


def test_backup_layout_matches_nats_stream_backup(nats_server, s3_env):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=10)
    store = BackupStore(s3_client(), s3_env, "homelab")
    ref = run(lambda nc: backup_stream(nc, store, "iot-sensors"), server.client_url)
    keys = sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket=s3_env)["Contents"])
    assert keys == [f"homelab/iot-sensors/{ref.id}/backup.json", f"homelab/iot-sensors/{ref.id}/stream.tar.s2"]
    meta = s3_client().get_object(Bucket=s3_env, Key=keys[0])["Body"].read().decode()
    doc = json.loads(meta)
    assert doc["config"]["name"] == "iot-sensors" and doc["state"]["messages"] == 10
    assert meta.startswith('{\n  "config"')  # 2-space indent, as the CLI writes it


def test_several_backups_list_prune_and_restore_a_chosen_one(nats_server, s3_env):
    server, target = nats_server(), nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=3)
    store = BackupStore(s3_client(), s3_env, "nats")
    stamps = ["20260101T000000Z-aaaaaa", "20260201T000000Z-bbbbbb", "20260301T000000Z-cccccc"]
    for ts in stamps:
        run(lambda nc, ts=ts: backup_stream(nc, store, "iot-sensors", backup_id=ts), server.client_url)
        raw.publish("sensors.more", [b"x"] * 10)
    assert [r.id for r in store.list("iot-sensors")] == stamps
    # restore the middle one: 13 messages were there then
    ref = store.find("iot-sensors", "20260201T000000Z")  # the time alone, when it is unambiguous
    run(lambda nc: restore_backup(nc, store, ref), target.client_url)
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 13
    # prune by age: nothing is older than 400 days, so nothing goes
    now = datetime(2026, 3, 2, tzinfo=UTC)
    assert plan_prune(store.list(), keep=1, max_age=timedelta(days=400), now=now).delete == ()
    # prune by age: older than 45 days, keeping at least one
    plan = plan_prune(store.list(), keep=1, max_age=timedelta(days=45), now=now)
    assert [r.id for r in plan.delete] == ["20260101T000000Z-aaaaaa"]
    # by count, through the CLI
    assert main(["prune", "--bucket", s3_env, "--keep", "1"]) == 0
    assert [r.id for r in store.list("iot-sensors")] == ["20260301T000000Z-cccccc"]


def test_cli_backup_restore_round_trip(nats_server, s3_env, capsys):
    source, target = nats_server(), nats_server()
    fill_stream(RawJetStream(source.client_url), n=20)
    assert main(["backup", "iot-sensors", "--bucket", s3_env, "--server", source.client_url]) == 0
    out = capsys.readouterr().out
    assert f"s3://{s3_env}/nats/iot-sensors/" in out
    assert main(["list-backups", "--bucket", s3_env]) == 0
    assert "iot-sensors\t" in capsys.readouterr().out
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", target.client_url]) == 0
    assert "restored iot-sensors" in capsys.readouterr().out
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 20
    # restoring again onto the existing stream is refused, and the stream is untouched
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", target.client_url]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--as NAME" in err
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 20
    # ...but beside it, under another name and subjects
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", target.client_url,
                 "--as", "iot-restored", "--subjects", "restored.sensors.>"]) == 0
    info = RawJetStream(target.client_url).stream("iot-restored")
    assert info["config"]["subjects"] == ["restored.sensors.>"] and info["state"]["messages"] == 20
    assert main(["verify", "iot-sensors", "--bucket", s3_env]) == 0
    verify_out = capsys.readouterr().out
    assert "verified" in verify_out and "ok   messages: backup.json 20, restored 20" in verify_out


def test_all_skips_memory_streams_and_succeeds(nats_server, s3_env, capsys):
    server = nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=5)
    fill_stream(raw, name="events", subjects=("events.>",), n=5, storage="memory")
    assert main(["backup", "--all", "--bucket", s3_env, "--server", server.client_url]) == 0
    out = capsys.readouterr().out
    assert "skipped: stream 'events' uses memory storage" in out
    assert [r.stream for r in BackupStore(s3_client(), s3_env, "nats").list()] == ["iot-sensors"]


def test_missing_stream_fails_clearly(nats_server, s3_env, capsys):
    server = nats_server()
    assert main(["backup", "nope", "--bucket", s3_env, "--server", server.client_url]) == 1
    assert "stream 'nope' does not exist" in capsys.readouterr().err
    assert BackupStore(s3_client(), s3_env, "nats").list() == []


def test_missing_bucket_and_unreachable_s3(nats_server, s3_env, capsys, monkeypatch):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=2)
    assert main(["backup", "iot-sensors", "--bucket", "no-such-bucket", "--server", server.client_url]) == 1
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    from streams.local.server import free_port
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["list-backups", "--bucket", s3_env]) == 1
    err = capsys.readouterr().err
    assert "S3 endpoint unreachable" in err and S3_SECRET_KEY not in err


def test_wrong_credentials(nats_server, capsys, monkeypatch):
    from tests.conftest import start_moto
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto then checks credentials
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        server = nats_server()
        fill_stream(RawJetStream(server.client_url), n=2)
        assert main(["backup", "iot-sensors", "--bucket", "b", "--server", server.client_url]) == 1
        out = capsys.readouterr()
        assert "credentials" in out.err and S3_SECRET_KEY not in out.err + out.out
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_dies_mid_backup_leaves_no_backup(nats_server, s3_env, monkeypatch):
    monkeypatch.setattr(snapshot_module, "CHUNK_TIMEOUT", 2.0)
    server = nats_server()
    raw = RawJetStream(server.client_url)
    raw.api("$JS.API.STREAM.CREATE.big", {"name": "big", "subjects": ["big.>"]})
    import os
    raw.publish("big.x", [os.urandom(60_000) for _ in range(200)])  # ~12 MB: more than one upload part
    store = BackupStore(s3_client(), s3_env, "nats")
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 3:
            server.kill()
    from streams.backup.snapshot import SnapshotError
    with pytest.raises(SnapshotError, match="snapshot of 'big'"):
        run(lambda nc: backup_stream(nc, store, "big", progress=progress), server.client_url)
    assert store.list() == []
    assert s3_client().list_objects_v2(Bucket=s3_env).get("KeyCount", 0) == 0
    uploads = s3_client().list_multipart_uploads(Bucket=s3_env).get("Uploads", [])
    assert uploads == []  # the multipart upload was aborted


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_archive_restore_removes_the_half_restored_stream(nats_server, s3_env, damage):
    source, target = nats_server(), nats_server()
    import os
    raw = RawJetStream(source.client_url)
    raw.api("$JS.API.STREAM.CREATE.iot-sensors", {"name": "iot-sensors", "subjects": ["sensors.>"]})
    raw.publish("sensors.x", [os.urandom(2000) for _ in range(300)])
    store = BackupStore(s3_client(), s3_env, "nats")
    ref = run(lambda nc: backup_stream(nc, store, "iot-sensors"), source.client_url)
    key = store.folder(ref.stream, ref.id) + "stream.tar.s2"
    data = s3_client().get_object(Bucket=s3_env, Key=key)["Body"].read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:3000]) + data[3000:]
    s3_client().put_object(Bucket=s3_env, Key=key, Body=data)
    with pytest.raises(BackupError, match="partly restored stream 'iot-sensors' was removed"):
        run(lambda nc: restore_backup(nc, store, BackupRef(ref.stream, ref.id, len(data))), target.client_url)
    assert RawJetStream(target.client_url).stream("iot-sensors")["error"]["err_code"] == 10059


def test_incomplete_backup_is_invisible(nats_server, s3_env):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=2)
    store = BackupStore(s3_client(), s3_env, "nats")
    ref = run(lambda nc: backup_stream(nc, store, "iot-sensors", backup_id="20260101T000000Z-dddddd"), server.client_url)
    s3_client().delete_object(Bucket=s3_env, Key=store.folder(ref.stream, ref.id) + "backup.json")
    assert store.list() == []
    with pytest.raises(Exception, match="no complete backup"):
        store.find("iot-sensors")


def test_unreachable_nats_says_how_to_point_elsewhere_without_the_password(s3_env, capsys):
    from streams.local.server import free_port
    code = main(["backup", "iot-sensors", "--bucket", s3_env, "--server", f"nats://ops:s3cretpw@127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot connect to NATS at nats://ops:***@127.0.0.1:" in err
    assert "NATS_URL" in err and "make dev" in err and "port-forward" in err
    assert "s3cretpw" not in err and "Traceback" not in err


# ---------------------------------------------------------------- names and order (issue 10)
def test_backups_in_the_same_second_are_both_kept_and_the_newest_is_by_the_stream(nats_server, s3_env,
                                                                                 monkeypatch):
    """Two backups in one second used to share a folder: with a purge between, the good one was replaced
    by an empty one and both reported success."""
    from streams.backup import service as backups
    from streams.backup.s3 import new_backup_id
    second = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(backups, "new_backup_id", lambda: new_backup_id(second))  # the same second, twice
    server, target = nats_server(), nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=20)
    store = BackupStore(s3_client(), s3_env, "nats")
    full = run(lambda nc: backup_stream(nc, store, "iot-sensors"), server.client_url)
    raw.api("$JS.API.STREAM.PURGE.iot-sensors")
    empty = run(lambda nc: backup_stream(nc, store, "iot-sensors"), server.client_url)
    assert full.id != empty.id and full.id[:16] == empty.id[:16] == "20261126T030000Z"
    assert [r.id for r in store.list("iot-sensors")] == [full.id, empty.id]  # the purge comes after
    assert store.read_meta(full).state["messages"] == 20  # not overwritten
    run(lambda nc: restore_backup(nc, store, store.find("iot-sensors", full.id)), target.client_url)
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 20


def test_concurrent_backups_of_one_stream_yield_two(nats_server, s3_env):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=30)
    store = BackupStore(s3_client(), s3_env, "nats")

    async def both(nc):
        return await asyncio.gather(backup_stream(nc, store, "iot-sensors"), backup_stream(nc, store, "iot-sensors"))
    a, b = run(both, server.client_url)
    assert a.id != b.id and len(store.list("iot-sensors")) == 2


def test_order_follows_the_stream_not_the_backup_hosts_clock(nats_server, s3_env, capsys):
    """The second backup is taken by a machine whose clock is a year behind: restore and prune still
    treat it as the newest, because the stream had moved on."""
    server, target = nats_server(), nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=5)
    store = BackupStore(s3_client(), s3_env, "nats")
    first = run(lambda nc: backup_stream(nc, store, "iot-sensors", backup_id="20270101T000000Z-111111"),
                server.client_url)
    raw.publish("sensors.more", [b"x"] * 7)
    second = run(lambda nc: backup_stream(nc, store, "iot-sensors", backup_id="20260101T000000Z-222222"),
                 server.client_url)
    assert [r.id for r in store.list("iot-sensors")] == [first.id, second.id]
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", target.client_url]) == 0
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 12
    assert main(["prune", "--bucket", s3_env, "--keep", "1"]) == 0
    assert [r.id for r in store.list("iot-sensors")] == [second.id]
    # --at still takes the time (or the whole id)
    assert store.find("iot-sensors", "20260101T000000Z").id == second.id


def test_folders_that_are_not_backups_are_skipped_with_a_warning(nats_server, s3_env, capsys):
    server, target = nats_server(), nats_server()
    fill_stream(RawJetStream(server.client_url), n=4)
    store = BackupStore(s3_client(), s3_env, "nats")
    real = run(lambda nc: backup_stream(nc, store, "iot-sensors"), server.client_url)
    s3 = s3_client()
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/notes/readme.txt", Body=b"hello")
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/zzzz/backup.json", Body=b"{}")
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/zzzz/stream.tar.s2", Body=b"x")
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/29990101T000000Z-abcdef/stream.tar.s2", Body=b"x")
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/29990101T000000Z-abcdef/backup.json", Body=b"not json")
    s3.put_object(Bucket=s3_env, Key="nats/README", Body=b"top-level file")
    assert [r.id for r in store.list("iot-sensors")] == [real.id]
    assert main(["prune", "--bucket", s3_env, "--keep", "1", "--dry-run"]) == 0   # no crash
    err = capsys.readouterr().err
    assert "nats/iot-sensors/notes/ is not a backup" in err and "nats/iot-sensors/zzzz/ is not a backup" in err
    assert "29990101T000000Z-abcdef/: backup.json is not JSON" in err and "skipped" in err
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", target.client_url]) == 0
    assert real.id in capsys.readouterr().out  # the real newest, not the stranger
    assert "Traceback" not in err


def test_wrong_nats_credentials_fail_at_once_and_say_so(auth_server, s3_env, capsys):
    url = f"nats://admin:wrong-pw@127.0.0.1:{auth_server.layout.client_port}"
    code = main(["backup", "iot-sensors", "--bucket", s3_env, "--server", url])
    err = capsys.readouterr().err
    assert code == 1 and "refused the credentials" in err and "Authorization Violation" in err
    assert "wrong-pw" not in err and "Traceback" not in err and "port-forward" not in err
    code = main(["check", "--server", url, "--monitor", auth_server.monitoring_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and "refused the credentials" in out
    assert "wrong-pw" not in out + err and "Traceback" not in err
    assert json.loads(out)["server"] == f"nats://admin:***@127.0.0.1:{auth_server.layout.client_port}"


def test_s3_lost_mid_upload_leaves_an_upload_that_prune_cleans(nats_server, s3_env, capsys):
    """S3 goes away after two parts (and so does the abort): the backup fails clearly, nothing is visible,
    and the orphaned 10 MiB upload is aborted by the next prune."""
    from botocore.exceptions import EndpointConnectionError
    server = nats_server()
    raw = RawJetStream(server.client_url)
    raw.api("$JS.API.STREAM.CREATE.big", {"name": "big", "subjects": ["big.>"], "storage": "file"})
    raw.publish("big.x", [os.urandom(64 * 1024) for _ in range(400)])  # 25 MiB, incompressible
    s3 = s3_client()
    store = BackupStore(s3, s3_env, "nats")
    real_upload, parts = s3.upload_part, []

    def flaky_upload(**kw):
        if len(parts) >= 2:
            raise EndpointConnectionError(endpoint_url="http://s3.gone")
        parts.append(kw["PartNumber"])
        return real_upload(**kw)

    def gone(**kw):
        raise EndpointConnectionError(endpoint_url="http://s3.gone")
    s3.upload_part, s3.abort_multipart_upload = flaky_upload, gone
    with pytest.raises(Exception) as err:
        run(lambda nc: backup_stream(nc, store, "big"), server.client_url)
    assert "S3 endpoint unreachable" in str(err.value)
    fresh = s3_client()
    [orphan] = fresh.list_multipart_uploads(Bucket=s3_env)["Uploads"]
    assert BackupStore(fresh, s3_env, "nats").list() == []
    # A young upload may be a backup still running: prune leaves it until it is a day old (by S3's clock)...
    fresh_store = BackupStore(fresh, s3_env, "nats")
    begun = orphan["Initiated"]
    assert fresh_store.stale_uploads(timedelta(days=1), now=begun + timedelta(hours=1)) == []
    assert [u["UploadId"] for u in fresh_store.stale_uploads(timedelta(days=1), now=begun + timedelta(hours=25))] \
        == [orphan["UploadId"]]
    # ...and aborts it once past the age (dry run first).
    assert main(["prune", "--bucket", s3_env, "--keep", "1", "--incomplete-older-than", "0s", "--dry-run"]) == 0
    assert f"would abort the unfinished upload s3://{s3_env}/{orphan['Key']}" in capsys.readouterr().out
    assert main(["prune", "--bucket", s3_env, "--keep", "1", "--incomplete-older-than", "0s"]) == 0
    assert f"aborted the unfinished upload s3://{s3_env}/{orphan['Key']}" in capsys.readouterr().out
    assert fresh.list_multipart_uploads(Bucket=s3_env).get("Uploads", []) == []


def test_a_failed_backup_aborts_its_upload_when_s3_answers(nats_server, s3_env):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=10)
    s3 = s3_client()
    store = BackupStore(s3, s3_env, "nats")

    async def failing_write_then_backup(nc):
        from streams.backup import service as backups
        real = backups.snapshot

        async def broken(nc, stream, write, **kw):
            await write(b"x" * 1024)
            raise RuntimeError("server went away")
        backups.snapshot = broken
        try:
            return await backup_stream(nc, store, "iot-sensors")
        finally:
            backups.snapshot = real
    with pytest.raises(RuntimeError):
        run(failing_write_then_backup, server.client_url)
    assert s3.list_multipart_uploads(Bucket=s3_env).get("Uploads", []) == []


@pytest.fixture(scope="module")
def moto_over_https(tmp_path_factory):
    """moto's S3 over TLS (a CA made here; boto3 trusts it through AWS_CA_BUNDLE): botocore sends trailing checksums
    only over https."""
    from tests.conftest import start_moto
    from tests.render.test_tls import issue, make_ca
    certs = tmp_path_factory.mktemp("s3-certs")
    issue(certs, *make_ca(certs))
    proc, url = start_moto(tls=(certs / "tls.crt", certs / "tls.key", certs / "ca.crt"))
    yield url, certs / "ca.crt"
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("scheme, mode, trailer", [
    ("http", None, False), ("http", "when_required", False),
    ("https", None, True), ("https", "when_supported", True), ("https", "when_required", False),
])
def test_uploads_send_trailing_checksums_only_over_https_and_unless_told_not_to(
        nats_server, s3_env, moto_over_https, monkeypatch, scheme, mode, trailer):
    """botocore (1.44, httpchecksum.py resolve_request_checksum_algorithm) moves the CRC32 into an unsigned
    aws-chunked trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER) over https only; over http the payload is signed and
    the CRC32 is a header. Garage before v1.1.0 refuses the trailer ("Invalid content sha256 hash":
    deuxfleurs-org/garage v1.0.1 src/api/signature/payload.rs), and AWS_REQUEST_CHECKSUM_CALCULATION=when_required
    turns it off. Every way, the backup restores whole."""
    from streams.backup.s3 import CHECKSUM_ENV
    if mode:
        monkeypatch.setenv(CHECKSUM_ENV, mode)
    if scheme == "https":
        url, ca = moto_over_https
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
        s3_client().create_bucket(Bucket=s3_env)
    server, fresh = nats_server(), nats_server()
    fill_stream(RawJetStream(server.client_url), n=30)
    client = s3_client()
    sent = []
    client.meta.events.register("before-send.s3.UploadPart", lambda request, **kw: sent.append(
        {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}))
    store = BackupStore(client, s3_env, "nats")

    async def run():
        nc = await nats.connect(server.client_url)
        try:
            return await backup_stream(nc, store, "iot-sensors")
        finally:
            await nc.close()
    asyncio.run(run())
    assert sent, "no part was uploaded"
    for headers in sent:
        assert (headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER") is trailer, headers
        assert ("x-amz-trailer" in headers) is trailer
        if mode == "when_required":
            assert not [k for k in headers if k.startswith("x-amz-checksum-")], headers
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", fresh.client_url]) == 0
    assert all_messages(fresh.client_url, "iot-sensors") == all_messages(server.client_url, "iot-sensors")


def test_a_wrong_checksum_mode_names_the_variable(monkeypatch, capsys):
    from streams.backup.s3 import CHECKSUM_ENV
    monkeypatch.setenv(CHECKSUM_ENV, "sometimes")
    assert main(["list-backups", "--bucket", "nats-backups", "--endpoint", "http://127.0.0.1:1"]) == 1
    assert "AWS_REQUEST_CHECKSUM_CALCULATION='sometimes': expected when_supported or when_required" in \
        capsys.readouterr().err


def _two_backups_at_once(url: str, tmp_path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-m", "streams", "backup", "big", "--to", str(tmp_path / f"b{i}"),
                               "--server", url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in procs]


def _big_stream(url: str) -> None:
    raw = RawJetStream(url)
    raw.api("$JS.API.STREAM.CREATE.big", {"name": "big", "subjects": ["big.>"]})
    raw.publish("big.a", [os.urandom(10_000) for _ in range(2000)])   # incompressible: the snapshot takes a while


@pytest.mark.parametrize("server", ["2.10", "2.15.1"])
def test_two_backups_of_one_stream_started_together_both_succeed(nats_server, tmp_path, server):
    """nats-server 2.10 refuses a second snapshot while one runs (filestore.go Snapshot: 10064 "snapshot in
    progress"); 2.15.1's v2 snapshots stream both. Either way both backups complete, whole."""
    from tests.streams.test_takeover import OldServer
    old = OldServer(tmp_path / "claim", tmp_path / "run") if server == "2.10" else None
    url = old.url if old else nats_server().client_url
    try:
        _big_stream(url)
        results = _two_backups_at_once(url, tmp_path)
    finally:
        if old:
            old.stop()
    for r in results:
        assert r.returncode == 0, r.stderr
    for i in (1, 2):
        meta = json.loads((tmp_path / f"b{i}" / "backup.json").read_text())
        assert meta["state"]["messages"] == 2000 and (tmp_path / f"b{i}" / "stream.tar.s2").stat().st_size > 10**7


def test_with_nats_down_a_backup_fails_at_once_with_the_reason(tmp_path, capsys):
    """One connect and one retry, not nats-py's 60 rounds 2 s apart: the reason is the refused connection, not a
    timeout (the figures are in bench/fail_fast.py)."""
    from streams.local.server import free_port
    assert main(["backup", "iot-sensors", "--to", str(tmp_path / "b"), "--server",
                 f"nats://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert "ConnectionRefusedError" in err and "TimeoutError" not in err and not (tmp_path / "b").exists()
