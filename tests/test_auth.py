"""Users and permissions on a real nats-server running the rendered nats.conf and auth file (the local mode's
own code writes them: streams/local/users.py), with real clients: nats-py as applications use it, the
provider as `pulumi up` runs it, and this project's command-line tools."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nats
import pytest

from components.auth import plan_users
from components.backup_job import backup_streams
from components.settings import load_settings
from streams.catalog import load_catalog
from streams.connection import quiet_error_cb
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import local_layout, start_server
from streams.local.users import write_local_auth
from tests.pulumi_harness import ROOT
from tests.test_settings import homelab_raw

USERS = {"iot-devices": {"publish": ["sensors.>"]},
         "analytics": {"consume": ["sensors/analytics"]}}


def secured_raw(users=USERS) -> dict:
    return {**homelab_raw(), "auth": {"enabled": True, "users": users}}


class Homelab:
    """The homelab stack with auth on, served from `workdir`; `login(user)` gives that user's connect options."""

    def __init__(self, workdir: Path, raw: dict):
        self.workdir, self.raw = workdir, raw
        self.settings = load_settings(raw)
        self.catalog = load_catalog(raw["streams"], store_limits=self.settings.jetstream.store_limits)
        self.layout = local_layout(workdir)
        self.server = None
        self.passwords: dict[str, str] = {}

    @property
    def users(self):
        return plan_users(self.settings.auth, self.catalog, backup_streams(self.settings, self.catalog))

    def write_auth(self) -> None:
        include, self.passwords = write_local_auth(self.workdir, self.users, self.url)
        self.layout = replace(self.layout, auth_include=include)

    @property
    def url(self) -> str:
        return f"nats://{self.layout.host}:{self.layout.client_port}"

    def start(self):
        self.write_auth()
        self.server = start_server(self.settings, self.layout, self.workdir)
        return self.server

    def login(self, user: str) -> dict:
        planned = {u.name: u for u in self.users}[user]
        opts = {"user": user, "password": self.passwords[user]}
        if planned.inbox_prefix:
            opts["inbox_prefix"] = planned.inbox_prefix
        return opts

    def admin(self) -> tuple[str, str]:
        return ("admin", self.passwords["admin"])


@pytest.fixture
def homelab(tmp_path):
    lab = Homelab(tmp_path / "lab", secured_raw())
    lab.start()
    apply_catalog(lab.catalog, lab.url, login=lab.admin())
    close_all_clients()
    yield lab
    lab.server.stop()


class Client:
    """A nats-py connection that records the server's permission errors (they arrive asynchronously)."""

    def __init__(self):
        self.errors: list[str] = []
        self.nc = None

    async def connect(self, url: str, **opts):
        async def on_error(exc):
            self.errors.append(str(exc))
        self.nc = await nats.connect(url, allow_reconnect=False, error_cb=on_error, **opts)
        return self

    async def refused(self, what: str) -> bool:
        """Whether the server reported a permissions violation naming `what` (waits for it briefly)."""
        for _ in range(40):
            if any("permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


def run(coro):
    return asyncio.run(coro)


def test_unauthenticated_clients_are_refused_and_wrong_passwords_too(homelab):
    async def go():
        for opts in ({}, {"user": "admin", "password": "wrong"}, {"user": "nobody", "password": "x"}):
            with pytest.raises(Exception, match="(?i)authorization violation"):
                await nats.connect(homelab.url, allow_reconnect=False, max_reconnect_attempts=0,
                                   error_cb=quiet_error_cb, **opts)
    run(go())


def test_iot_publisher_publishes_with_acks_and_nothing_else(homelab):
    async def go():
        c = await Client().connect(homelab.url, **homelab.login("iot-devices"))
        js = c.nc.jetstream()
        ack = await js.publish("sensors.temperature.room1", b'{"value": 22.5}')
        assert ack.stream == "iot-sensors" and ack.seq == 1
        # cannot read another stream's subjects, even live
        await c.nc.subscribe("logs.>")
        assert await c.refused('Subscription to "logs.>"')
        # nor someone else's inbox (where fetched messages and replies arrive)
        await c.nc.subscribe("_INBOX.>")
        assert await c.refused('Subscription to "_INBOX.>"')
        # cannot delete a stream or create a consumer: the request never reaches JetStream
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.STREAM.DELETE.iot-sensors", b"", timeout=0.5)
        assert await c.refused("$JS.API.STREAM.DELETE.iot-sensors")
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer("iot-sensors", durable_name="sneaky", timeout=0.5)
        assert await c.refused("$JS.API.CONSUMER")
        # cannot publish outside its subjects
        await c.nc.publish("logs.app", b"x")
        assert await c.refused('Publish to "logs.app"')
        await c.nc.close()

    run(go())

    async def state():
        admin = await Client().connect(homelab.url, **homelab.login("admin"))
        js = admin.nc.jetstream()
        info = await js.stream_info("iot-sensors")
        names = [ci.name for ci in await js.consumers_info("iot-sensors")]
        await admin.nc.close()
        return info.state.messages, names
    messages, names = run(state())
    assert messages == 1 and "sneaky" not in names


def test_analytics_pulls_and_acks_its_consumer_and_nothing_else(homelab):
    async def go():
        admin = await Client().connect(homelab.url, **homelab.login("admin"))
        for i in range(3):
            await admin.nc.jetstream().publish(f"iot.sensors.t{i}", str(i).encode())
        c = await Client().connect(homelab.url, **homelab.login("analytics"))
        js = c.nc.jetstream()
        sub = await js.pull_subscribe("iot.sensors.>", durable="analytics", stream="sensors")
        msgs = await sub.fetch(3, timeout=5)
        assert [m.data for m in msgs] == [b"0", b"1", b"2"]
        for m in msgs:
            await m.ack_sync(timeout=5)
        info = await admin.nc.jetstream().consumer_info("sensors", "analytics")
        assert info.ack_floor.stream_seq == 3 and info.num_ack_pending == 0
        # another consumer of a stream it may not read
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.CONSUMER.MSG.NEXT.iot-sensors.processor", b"1", timeout=0.5)
        assert await c.refused("$JS.API.CONSUMER.MSG.NEXT.iot-sensors.processor")
        # publishing into the stream, or reading it live
        await c.nc.publish("iot.sensors.t9", b"x")
        assert await c.refused('Publish to "iot.sensors.t9"')
        await c.nc.subscribe("iot.>")
        assert await c.refused('Subscription to "iot.>"')
        # the stream's messages directly
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.STREAM.MSG.GET.sensors", b'{"seq": 1}', timeout=0.5)
        await admin.nc.close()
        await c.nc.close()
    run(go())


def test_turning_auth_on_keeps_every_stream_and_message(tmp_path):
    """Streams made before auth existed live in the global account; the users live there too."""
    lab = Homelab(tmp_path / "lab", homelab_raw())
    with start_server(lab.settings, lab.layout, lab.workdir) as open_server:
        apply_catalog(lab.catalog, open_server.client_url)
        close_all_clients()

        async def publish():
            nc = await nats.connect(open_server.client_url)
            for i in range(5):
                await nc.jetstream().publish(f"sensors.humidity.r{i}", b"h")
            await nc.close()
        run(publish())
    secured = Homelab(tmp_path / "lab", secured_raw())
    secured.layout = replace(secured.layout, client_port=lab.layout.client_port,
                             monitoring_port=lab.layout.monitoring_port)
    secured.start()
    try:
        async def read():
            nc = await nats.connect(secured.url, **secured.login("admin"))
            info = await nc.jetstream().stream_info("iot-sensors")
            await nc.close()
            return info.state.messages
        assert run(read()) == 5
        applied = apply_catalog(secured.catalog, secured.url, login=secured.admin())
        assert {a.name for a in applied} >= {"iot-sensors", "sensors/analytics"}
    finally:
        close_all_clients()
        secured.server.stop()


def cli(*args, env: dict, cwd=ROOT) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    return subprocess.run([sys.executable, "-m", "streams", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def user_env(lab: Homelab, user: str) -> dict:
    """The user's env file, as a workload gets it from its Secret."""
    text = (lab.workdir / "auth" / f"{user}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_backup_user_snapshots_its_streams_and_nothing_more(homelab, tmp_path):
    async def publish():
        admin = await nats.connect(homelab.url, **homelab.login("admin"))
        for i in range(20):
            await admin.jetstream().publish(f"logs.app.{i}", b"line")
        await admin.close()
    run(publish())
    env = user_env(homelab, "backup")
    assert env["NATS_INBOX_PREFIX"] == "_INBOX_backup"
    done = cli("backup", "app-logs", "--to", str(tmp_path / "logs"), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "logs" / "backup.json").exists()
    assert env["NATS_PASSWORD"] not in done.stdout + done.stderr
    # the memory stream is not in its list (the server cannot snapshot it anyway): refused, in words
    refused = cli("backup", "events", "--to", str(tmp_path / "events"), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "$js.api.stream.info.events" in refused.stderr.lower() and "backup's permissions do not allow" in refused.stderr

    async def forbidden():
        c = await Client().connect(homelab.url, **homelab.login("backup"))
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.STREAM.DELETE.app-logs", b"", timeout=0.5)
        assert await c.refused("$JS.API.STREAM.DELETE.app-logs")
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.STREAM.RESTORE.copy", b"{}", timeout=0.5)
        assert await c.refused("$JS.API.STREAM.RESTORE.copy")
        await c.nc.subscribe("logs.>")
        assert await c.refused('Subscription to "logs.>"')
        await c.nc.close()
    run(forbidden())
    # the admin restores what the backup user took
    admin_env = user_env(homelab, "admin")
    restored = cli("restore", "app-logs", "--from", str(tmp_path / "logs"), "--as", "app-logs-copy", "--subjects", "copy.logs.>",
                   env=admin_env)
    assert restored.returncode == 0, restored.stderr


def test_monitor_user_reads_everything_check_needs_and_writes_nothing(homelab):
    import json
    env = {**user_env(homelab, "monitor"), "NATS_MONITOR_URL": homelab.server.monitoring_url}
    read_only = cli("check", "--json", "--no-round-trip", env=env)
    report = json.loads(read_only.stdout)
    assert not [f for f in report["findings"] if f["level"] == "fail"], report
    assert any(f["subject"] == "consumer sensors/analytics" and f["level"] == "ok" for f in report["findings"])
    # the probe is a write: refused, and said so once per stream, not a traceback
    probing = cli("check", "--json", env=env)
    report = json.loads(probing.stdout)
    skipped = [f for f in report["findings"] if "round trip skipped" in f["message"]]
    assert skipped and all(f["level"] == "warn" and "--no-round-trip" in f["message"] for f in skipped), report
    assert env["NATS_PASSWORD"] not in probing.stdout + probing.stderr


def test_a_permission_change_applies_on_reload_without_restart(homelab):
    pid, started = homelab.server.process.pid, homelab.server.monitor("/varz")["start"]

    async def try_logs(expect_refused: bool):
        c = await Client().connect(homelab.url, **homelab.login("iot-devices"))
        ack = None
        try:
            ack = await c.nc.jetstream().publish("logs.device.boot", b"up", timeout=1)
        except nats.errors.TimeoutError:
            pass
        refused = await c.refused('Publish to "logs.device.boot"') if expect_refused else False
        await c.nc.close()
        return ack, refused

    ack, refused = run(try_logs(True))
    assert ack is None and refused
    homelab.settings = load_settings(secured_raw({**USERS, "iot-devices": {"publish": ["sensors.>", "logs.device.>"]}}))
    homelab.write_auth()
    homelab.server.process.send_signal(signal.SIGHUP)   # what the config reloader sends
    for _ in range(50):
        ack, _ = run(try_logs(False))
        if ack is not None:
            break
    assert ack is not None and ack.stream == "app-logs"
    assert homelab.server.process.pid == pid and homelab.server.monitor("/varz")["start"] == started
