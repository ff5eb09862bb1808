"""The backup CronJob's scripts, run end to end here with a PATH that holds only what each image holds:

- `snapshot` runs in natsio/nats-box (Alpine: busybox sh, date, od, tr, rm): here dash for busybox's ash,
  the host's date/od/tr/rm for busybox's, and a `nats` stand-in (this project's snapshot code, writing the
  CLI's layout);
- `upload` runs in minio/mc (ubi9/ubi-micro + /usr/bin/mc, minio/mc Dockerfile.release): bash and `mc`
  only, no awk, sed, grep, sort, date or cat. `mc` is a stand-in speaking boto3 to moto, taking its alias
  from MC_HOST_backup as the real one does.
Then `python -m streams restore` of what they uploaded.
"""
import calendar
import json
import os
import subprocess
import sys
from pathlib import Path
from shutil import which

import pytest

from render.backup_job import SNAPSHOT_SCRIPT, UPLOAD_SCRIPT, cron_job
from stack.settings import load_settings
from streams.backup.s3 import BackupStore, s3_client
from streams.cli import main
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.streams.test_backups import all_messages, fill_stream

NATS_BOX_TOOLS = {"sh": "dash", "date": "date", "od": "od", "tr": "tr", "rm": "rm"}
MC_IMAGE_TOOLS = {"sh": "bash"}


def image_path(folder: Path, tools: dict, shims: dict) -> str:
    """A PATH folder holding exactly `tools` (host stand-ins) and `shims` (name -> module in tests/shims)."""
    folder.mkdir()
    for name, host in tools.items():
        (folder / name).symlink_to(which(host))
    for name, module in shims.items():
        shim = folder / name
        shim.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests' / 'shims' / (module + '.py')} \"$@\"\n")
        shim.chmod(0o755)
    return str(folder)


def run_in(path: str, script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([f"{path}/sh", "-c", script], env={**env, "PATH": path}, capture_output=True, text=True,
                          timeout=120)


def backup_json(seq: int) -> bytes:
    return json.dumps({"config": {"name": "iot-sensors"},
                       "state": {"last_seq": seq, "last_ts": f"2020-01-0{seq}T00:00:00Z"}}).encode()


def test_cron_job_scripts_back_up_prune_and_restore(nats_server, s3_env, tmp_path):
    server, fresh = nats_server(), nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=40)
    fill_stream(raw, name="app-logs", subjects=("logs.>",), n=15)
    store = BackupStore(s3_client(), s3_env, "nats")
    s3 = s3_client()
    for seq, ts in enumerate(("20200101T000000Z", "20200102T000000Z-0a0b0c", "20200103T000000Z"), 1):  # old ones
        s3.put_object(Bucket=s3_env, Key=f"nats/iot-sensors/{ts}/stream.tar.s2", Body=b"x")
        s3.put_object(Bucket=s3_env, Key=f"nats/iot-sensors/{ts}/backup.json", Body=backup_json(seq))
    s3.put_object(Bucket=s3_env, Key="nats/iot-sensors/notes/readme.txt", Body=b"not a backup")
    orphan = s3.create_multipart_upload(Bucket=s3_env, Key="nats/app-logs/20200101T000000Z-dead00/stream.tar.s2")
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    argv_log = tmp_path / "mc-argv.log"
    nats_box = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {"nats": "nats_shim"})
    mc_image = image_path(tmp_path / "mc-image", MC_IMAGE_TOOLS, {"mc": "mc_shim"})
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    scheme, host = endpoint.split("://", 1)
    common = {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "BACKUP_DIR": str(backup_dir)}
    snap = run_in(nats_box, SNAPSHOT_SCRIPT, {**common, "NATS_URL": server.client_url,
                                              "STREAMS": "iot-sensors app-logs missing-stream"})
    assert snap.returncode == 0, snap.stderr  # the init container lets the upload step report
    assert "snapshot of missing-stream FAILED" in snap.stderr
    upload = run_in(mc_image, UPLOAD_SCRIPT, {
        **common, "MC_CONFIG_DIR": str(tmp_path / ".mc"), "MC_SHIM_ARGV_LOG": str(argv_log),
        # as the CronJob builds it from the Secret (Kubernetes expands $(AWS_…) in the pod)
        "MC_HOST_backup": f"{scheme}://{S3_ACCESS_KEY}:{S3_SECRET_KEY}@{host}",
        "BUCKET": s3_env, "PREFIX": "nats", "KEEP": "2", "MAX_AGE_SECONDS": str(14 * 86400)})
    assert upload.returncode == 1, upload.stderr  # one stream failed: the Job fails visibly and says which...
    assert upload.stderr.strip().endswith("backups failed for: missing-stream")
    assert upload.stdout.count("uploaded s3://") == 2, upload.stdout  # ...but the others were uploaded
    assert "not found" not in upload.stderr and "command not found" not in upload.stderr
    # prune: KEEP=2 of iot-sensors (the new one and the newest old one), the stranger skipped
    assert [r.id for r in store.list("iot-sensors")][0] == "20200103T000000Z"
    assert len(store.list("iot-sensors")) == 2
    assert "pruned s3://" in upload.stdout and "notes/: not a backup" in upload.stdout
    assert s3.list_objects_v2(Bucket=s3_env, Prefix="nats/iot-sensors/notes/")["KeyCount"] == 1  # left alone
    assert [r.stream for r in store.list("app-logs")] == ["app-logs"]
    # the unfinished upload a lost connection left is aborted
    assert orphan["UploadId"] not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=s3_env).get("Uploads", [])]
    # the keys were never on a command line, nor printed
    assert S3_SECRET_KEY not in argv_log.read_text() and S3_ACCESS_KEY not in argv_log.read_text()
    assert S3_SECRET_KEY not in upload.stdout + upload.stderr + snap.stdout + snap.stderr
    # the new backups' folders are unique ids, and what the job uploaded restores with this project's CLI
    [new_id] = {r.id for r in store.list("app-logs")}
    assert len(new_id) == len("20260101T000000Z-") + 8
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", fresh.client_url]) == 0
    assert all_messages(fresh.client_url, "iot-sensors") == all_messages(server.client_url, "iot-sensors")


def test_upload_script_fails_loudly_when_s3_refuses(nats_server, s3_env, tmp_path):
    server = nats_server()
    fill_stream(RawJetStream(server.client_url), n=5)
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    nats_box = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {"nats": "nats_shim"})
    mc_image = image_path(tmp_path / "mc-image", MC_IMAGE_TOOLS, {"mc": "mc_shim"})
    common = {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "BACKUP_DIR": str(backup_dir)}
    assert run_in(nats_box, SNAPSHOT_SCRIPT, {**common, "NATS_URL": server.client_url,
                                              "STREAMS": "iot-sensors"}).returncode == 0
    scheme, host = os.environ["AWS_ENDPOINT_URL"].split("://", 1)
    upload = run_in(mc_image, UPLOAD_SCRIPT, {**common, "MC_HOST_backup": f"{scheme}://{S3_ACCESS_KEY}:wrong@{host}",
                                              "BUCKET": "no-such-bucket", "PREFIX": "nats", "KEEP": "2",
                                              "MAX_AGE_SECONDS": "86400"})
    assert upload.returncode == 1
    assert "upload of iot-sensors FAILED" in upload.stderr and "backups failed for: iot-sensors" in upload.stderr


EPOCH_CASES = ["19700101T000000Z", "20000229T235959Z", "20200101T000000Z-0a0b0c", "20261126T030000Z-3fa9c1",
               "20380119T031408Z", "21000301T120000Z", "19991231T235959Z"]


@pytest.mark.parametrize("stamp", EPOCH_CASES)
def test_the_scripts_date_arithmetic_matches_the_calendar(tmp_path, stamp):
    """epoch_of in the upload script (no date command in the mc image) against Python's calendar."""
    mc_image = image_path(tmp_path / "mc-image", MC_IMAGE_TOOLS, {})
    function = UPLOAD_SCRIPT[UPLOAD_SCRIPT.index("epoch_of() {"):UPLOAD_SCRIPT.index("\n}\n") + 3]
    result = run_in(mc_image, f"{function}\nepoch_of {stamp}", {})
    assert result.returncode == 0, result.stderr
    expected = calendar.timegm((int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                                int(stamp[11:13]), int(stamp[13:15])))
    assert int(result.stdout) == expected


def test_the_cron_job_hands_mc_its_keys_through_the_environment():
    job = cron_job(load_settings({"backups": {"enabled": True, "endpoint": "https://minio.lan:9000"}}), ["a"])
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [upload] = pod["containers"]
    names = [e["name"] for e in upload["env"]]
    host = next(e for e in upload["env"] if e["name"] == "MC_HOST_backup")
    # $(VAR) is expanded from variables defined earlier in the list (Kubernetes dependent variables).
    assert names.index("AWS_ACCESS_KEY_ID") < names.index("MC_HOST_backup")
    assert names.index("AWS_SECRET_ACCESS_KEY") < names.index("MC_HOST_backup")
    assert host["value"] == "https://$(AWS_ACCESS_KEY_ID):$(AWS_SECRET_ACCESS_KEY)@minio.lan:9000"
    assert "alias set" not in UPLOAD_SCRIPT and upload["command"] == ["sh", "-c", UPLOAD_SCRIPT]


@pytest.mark.parametrize("ca", ["missing", "empty", "present"])
def test_the_snapshot_step_says_why_when_the_secret_has_no_ca(tmp_path, ca):
    """The CA volume is optional (an ACME issuer writes no ca.crt): the pod starts, and the snapshot step, run with
    nats-box's tools only, stops before any `nats` call and says what to set."""
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    nats_box = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {})
    called = tmp_path / "nats-was-called"
    fake_nats = Path(nats_box) / "nats"
    fake_nats.write_text(f"#!{which('dash')}\n: > {called}\nexit 0\n")
    fake_nats.chmod(0o755)
    ca_file = tmp_path / "etc-nats-tls" / "ca.crt"
    if ca != "missing":
        ca_file.parent.mkdir()
        ca_file.write_text("" if ca == "empty" else "-----BEGIN CERTIFICATE-----\n")
    snap = run_in(nats_box, SNAPSHOT_SCRIPT, {"HOME": str(tmp_path), "BACKUP_DIR": str(backup_dir),
                                              "NATS_URL": "tls://127.0.0.1:1", "NATS_CA": str(ca_file),
                                              "STREAMS": "iot-sensors"})
    if ca == "present":
        assert snap.returncode == 0 and called.exists(), snap.stderr
    else:
        assert snap.returncode == 1 and not called.exists()
        assert f"no CA certificate at {ca_file}" in snap.stderr and "tls.trust to system" in snap.stderr


def meta_json(last_ts: str, last_seq: int, first_seq: int, *, description: str = "") -> bytes:
    """backup.json as `nats stream backup` writes it: config first (whose own `first_seq`, and a description
    that may say "state", must not be read as the state's), then state."""
    return json.dumps({"config": {"name": "s", "first_seq": 999, "description": description},
                       "state": {"messages": last_seq - first_seq + 1, "first_seq": first_seq, "last_seq": last_seq,
                                 "first_ts": "2020-01-01T00:00:00Z", "last_ts": last_ts}}, indent=2).encode()


# (folder id, backup.json or None for an unfinished one). The ids carry the taking node's clock; the states are
# the server's account of the stream.
PRUNE_TABLE = {
    "node clock behind": [("20200101T000000Z-aaaa01", meta_json("2020-03-01T00:00:00.5Z", 300, 1)),
                          ("20200102T000000Z-aaaa02", meta_json("2020-01-01T00:00:00Z", 100, 1)),
                          ("20200103T000000Z-aaaa03", meta_json("2020-02-01T00:00:00Z", 200, 1))],
    "same last message, more since": [("20200101T000000Z-bbbb01", meta_json("2020-01-05T00:00:00Z", 50, 1)),
                                      ("20200102T000000Z-bbbb02", meta_json("2020-01-05T00:00:00Z", 40, 1)),
                                      ("20200103T000000Z-bbbb03", meta_json("2020-01-05T00:00:00Z", 40, 7))],
    "nanoseconds and an empty stream": [
        ("20200101T000000Z-cccc01", meta_json("2020-01-05T00:00:00.000000002Z", 5, 1)),
        ("20200102T000000Z-cccc02", meta_json("2020-01-05T00:00:00.00000001Z", 5, 1)),
        ("20200103T000000Z-cccc03", meta_json("0001-01-01T00:00:00Z", 0, 0, description='the "state" of x')),
        ("20200104T000000Z-cccc04", None)],
}


@pytest.mark.parametrize("case", PRUNE_TABLE)
def test_the_cron_job_and_prune_keep_the_same_backups(s3_env, tmp_path, case):
    """One order for both: the CronJob's upload script (mc image tools only) and `python -m streams prune`
    (streams/backup/service.py plan_prune) keep the same backups of the same table."""
    from datetime import timedelta

    from streams.backup.service import plan_prune
    s3 = s3_client()
    for folder, meta in PRUNE_TABLE[case]:
        s3.put_object(Bucket=s3_env, Key=f"nats/s/{folder}/stream.tar.s2", Body=b"x")
        if meta is not None:
            s3.put_object(Bucket=s3_env, Key=f"nats/s/{folder}/backup.json", Body=meta)
    store = BackupStore(s3, s3_env, "nats")
    python_keeps = {b.id for b in plan_prune(store.list("s"), keep=1, max_age=timedelta(days=1)).keep}
    backup_dir = tmp_path / "backup"
    (backup_dir / "streams").mkdir(parents=True)
    (backup_dir / "ID").write_text("20260101T000000Z-00000000\n")
    (backup_dir / "NOW").write_text(f"{calendar.timegm((2026, 1, 1, 0, 0, 0))}\n")
    (backup_dir / "FAILED").write_text("")
    mc_image = image_path(tmp_path / "mc-image", MC_IMAGE_TOOLS, {"mc": "mc_shim"})
    scheme, host = os.environ["AWS_ENDPOINT_URL"].split("://", 1)
    upload = run_in(mc_image, UPLOAD_SCRIPT, {
        "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "BACKUP_DIR": str(backup_dir),
        "MC_CONFIG_DIR": str(tmp_path / ".mc"), "MC_HOST_backup": f"{scheme}://{S3_ACCESS_KEY}:{S3_SECRET_KEY}@{host}",
        "BUCKET": s3_env, "PREFIX": "nats", "KEEP": "1", "MAX_AGE_SECONDS": str(86400)})
    assert upload.returncode == 0, upload.stderr
    complete = {f for f, meta in PRUNE_TABLE[case] if meta is not None}
    script_keeps = {b.id for b in store.list("s")} & complete
    assert script_keeps == python_keeps and len(python_keeps) == 1
    unfinished = {f for f, meta in PRUNE_TABLE[case] if meta is None}
    for folder in unfinished:   # never pruned by either
        assert s3.list_objects_v2(Bucket=s3_env, Prefix=f"nats/s/{folder}/")["KeyCount"] == 1
