"""Shared fixtures: real nats-servers on free loopback ports, stopped by the tests. Tests that start processes (through
these fixtures, or by themselves: SERVER_MODULES) carry the `server` mark; `make test-fast` runs the rest."""
from __future__ import annotations

import pytest

from stack.settings import load_settings
from streams.local.server import LocalServer, local_layout, start_server
from tests.stack.test_settings import homelab_raw

# Fixtures that start a process (directly or through another fixture).
SERVER_FIXTURES = {"nats_server", "server", "moto_endpoint", "engine", "tls_server", "auth_server", "open_server",
                   "moto_over_https"}
# Modules whose tests start processes without those fixtures (subprocesses, the Pulumi program under the mocks).
SERVER_MODULES = {"test_check_and_local", "test_takeover", "test_target", "test_memory_streams", "test_program",
                  "test_kubernetes_schema", "test_homelab_git", "test_tls", "test_auth", "test_monitoring",
                  "test_backup_job", "test_backup_signals", "test_buckets", "test_ci_workflow", "test_report"}

# Single tests that start processes, or wait on a network timeout, by themselves.
SERVER_TESTS = {"test_server_restarted_between_operations", "test_unreachable_server_fails_clearly_within_the_bound",
                "test_with_nats_down_a_backup_fails_at_once_with_the_reason"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if SERVER_FIXTURES & set(item.fixturenames) or module in SERVER_MODULES or item.originalname in SERVER_TESTS:
            item.add_marker(pytest.mark.server)


@pytest.fixture
def homelab_settings():
    return load_settings(homelab_raw())


@pytest.fixture
def nats_server(tmp_path, homelab_settings):
    """A nats-server running the homelab's rendered nats.conf (paths and ports remapped)."""
    servers: list[LocalServer] = []

    def start(settings=None, workdir=None, **layout_args) -> LocalServer:
        wd = workdir or tmp_path / f"server{len(servers)}"
        layout = local_layout(wd, **layout_args)
        server = start_server(settings or homelab_settings, layout, wd)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------- the providers against one server

from streams.jetstream import close_all_clients  # noqa: E402
from streams.provider import ConsumerProvider, StreamProvider  # noqa: E402
from tests.provider_harness import RawJetStream, configured  # noqa: E402


@pytest.fixture
def server(nats_server):
    yield nats_server()
    close_all_clients()


@pytest.fixture
def raw(server):
    return RawJetStream(server.client_url)


@pytest.fixture
def streams(server):
    return configured(StreamProvider, server.client_url)


@pytest.fixture
def consumers(server):
    return configured(ConsumerProvider, server.client_url)


@pytest.fixture
def kvs(server):
    from streams.bucket_provider import KeyValueProvider
    return configured(KeyValueProvider, server.client_url)


@pytest.fixture
def objs(server):
    from streams.bucket_provider import ObjectStoreProvider
    return configured(ObjectStoreProvider, server.client_url)


# ---------------------------------------------------------------- S3: moto in server mode on loopback

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

from streams.local.server import free_port  # noqa: E402

S3_ACCESS_KEY = "homelab-test-access"
S3_SECRET_KEY = "homelab-test-SECRET-never-printed"


def start_moto(extra_env: dict | None = None, tls: tuple[Path, Path, Path] | None = None):
    """moto's S3 on a free loopback port; over https with `tls` = (certificate, key, the CA that signed it)."""
    import ssl

    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    if tls:
        cmd += ["-c", str(tls[0]), "-k", str(tls[1])]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls[2])) if tls else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1, context=context)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


@pytest.fixture(scope="session")
def moto_endpoint():
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch):
    """The standard AWS variables pointing at moto; returns a fresh bucket name."""
    import uuid

    from streams.backup.s3 import s3_client
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    s3_client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def auth_server(tmp_path, homelab_settings):
    """A nats-server with the homelab's config plus a user/password (user admin, password right-pw)."""
    from render.nats_conf import render_nats_conf
    layout = local_layout(tmp_path / "auth")
    conf = render_nats_conf(homelab_settings, layout) + '\nauthorization { user: admin, password: "right-pw" }\n'
    server = start_server(homelab_settings, layout, tmp_path / "auth", conf_text=conf)  # monitoring needs no login
    yield server
    server.stop()
