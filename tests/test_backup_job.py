"""The backup CronJob's scripts, run end to end here: `nats` and `mc` shims first on PATH (this
project's snapshot code, boto3 against moto), then `python -m streams restore` of what they uploaded."""
import json
import os
import subprocess
import sys
from pathlib import Path

from components.backup_job import SNAPSHOT_SCRIPT, UPLOAD_SCRIPT
from streams.backup_store import BackupStore, s3_client
from streams.cli import main
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.test_backups import all_messages, fill_stream


def make_shims(folder: Path) -> Path:
    folder.mkdir()
    for name, module in (("nats", "nats_shim"), ("mc", "mc_shim")):
        shim = folder / name
        shim.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests' / 'shims' / (module + '.py')} \"$@\"\n")
        shim.chmod(0o755)
    return folder


def run_script(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_cron_job_scripts_back_up_prune_and_restore(nats_server, s3_env, tmp_path, capsys):
    server, fresh = nats_server(), nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=40)
    fill_stream(raw, name="app-logs", subjects=("logs.>",), n=15)
    store = BackupStore(s3_client(), s3_env, "nats")
    s3 = s3_client()
    for seq, ts in enumerate(("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"), 1):  # old ones to prune
        meta = json.dumps({"config": {"name": "iot-sensors"}, "state": {"last_seq": seq, "last_ts": f"2020-01-0{seq}T00:00:00Z"}})
        s3.put_object(Bucket=s3_env, Key=f"nats/iot-sensors/{ts}/stream.tar.s2", Body=b"x")
        s3.put_object(Bucket=s3_env, Key=f"nats/iot-sensors/{ts}/backup.json", Body=meta.encode())
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    env = {**os.environ, "PATH": f"{make_shims(tmp_path / 'shims')}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "MC_CONFIG_DIR": str(tmp_path / ".mc"),
           "BACKUP_DIR": str(backup_dir), "NATS_URL": server.client_url,
           "STREAMS": "iot-sensors app-logs missing-stream",
           "S3_ENDPOINT": os.environ["AWS_ENDPOINT_URL"], "BUCKET": s3_env, "PREFIX": "nats", "KEEP": "2",
           "MAX_AGE_SECONDS": str(14 * 86400), "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    snap = run_script(SNAPSHOT_SCRIPT, env)
    assert snap.returncode == 0, snap.stderr  # the init container lets the upload step report
    assert "snapshot of missing-stream FAILED" in snap.stderr
    upload = run_script(UPLOAD_SCRIPT, env)
    assert upload.returncode == 1  # one stream failed: the Job fails visibly...
    assert "snapshots failed for: missing-stream" in upload.stderr
    assert upload.stdout.count("uploaded s3://") == 2  # ...but the others were uploaded
    assert "pruned s3://" in upload.stdout and S3_SECRET_KEY not in upload.stdout + upload.stderr + snap.stdout
    stamps = [r.id for r in store.list("iot-sensors")]
    assert len(stamps) == 2 and stamps[0] == "20200103T000000Z"  # KEEP=2: the newest old one stays
    assert [r.stream for r in store.list("app-logs")] == ["app-logs"]
    # What the job uploaded restores with this project's CLI.
    assert main(["restore", "iot-sensors", "--bucket", s3_env, "--server", fresh.client_url]) == 0
    assert all_messages(fresh.client_url, "iot-sensors") == all_messages(server.client_url, "iot-sensors")
