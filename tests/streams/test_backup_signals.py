"""Ctrl-C and SIGTERM during `python -m streams backup|restore`: real processes, real signals, a real
nats-server and moto's S3 server. Stopped promptly, exit 130/143, no traceback, nothing visible left."""
import os
import signal
import subprocess
import sys
import time

import pytest

from streams.backup.s3 import BackupStore, s3_client
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT


def big_stream(raw: RawJetStream, name: str = "big", mib: int = 48) -> None:
    raw.api(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": [f"{name}.>"], "storage": "file"})
    # incompressible, and no two alike: the archive is as big as the stream
    raw.publish(f"{name}.x", [os.urandom(64 * 1024) for _ in range(mib * 16)])


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streams", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(condition, what: str, timeout: float = 30.0, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def uploads(bucket: str) -> list[dict]:
    return s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_backup_leaves_nothing(nats_server, s3_env, signum, code):
    server = nats_server()
    big_stream(RawJetStream(server.client_url))
    proc = start("backup", "big", "--bucket", s3_env, "--server", server.client_url)
    s3 = s3_client()

    def parts_uploaded():
        ups = uploads(s3_env)
        return ups and s3.list_parts(Bucket=s3_env, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"]).get("Parts")
    wait_for(parts_uploaded, "the first part of the upload", process=proc)  # mid-upload
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)  # stops, rather than finishing a 48 MiB backup
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and f"stopped by {signal.Signals(signum).name}" in err
    assert "multipart upload aborted" in err
    assert BackupStore(s3, s3_env, "nats").list("big") == []  # no visible backup
    assert uploads(s3_env) == []                               # and no orphaned upload
    assert not any(o["Key"].endswith("backup.json") for o in s3.list_objects_v2(Bucket=s3_env).get("Contents", []))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_restore_removes_the_half_restored_stream(nats_server, s3_env, signum, code):
    source, target = nats_server(), nats_server()
    big_stream(RawJetStream(source.client_url))
    done = subprocess.run([sys.executable, "-m", "streams", "backup", "big", "--bucket", s3_env, "--server",
                           source.client_url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    proc = start("restore", "big", "--bucket", s3_env, "--server", target.client_url)
    raw = RawJetStream(target.client_url)
    wait_for(lambda: "error" not in raw.api("$JS.API.STREAM.INFO.big"), "the restore to begin", process=proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and "the partly restored stream 'big' was removed" in err
    assert raw.api("$JS.API.STREAM.INFO.big")["error"]["err_code"] == 10059  # gone
