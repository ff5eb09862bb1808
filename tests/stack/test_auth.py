"""Users and permissions on a real nats-server running the rendered nats.conf and auth file (the local mode's
own code writes them: streams/local/users.py), with real clients: nats-py as applications use it, the
provider as `pulumi up` runs it, and this project's command-line tools."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nats
import pytest

from stack.buckets import load_all_buckets
from stack.catalog import load_catalog
from stack.loader import backup_streams
from stack.settings import load_settings
from stack.users import plan_users
from streams.connection import quiet_error_cb
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import local_layout, start_server
from streams.local.users import write_local_auth
from tests.pulumi_harness import ROOT
from tests.stack.test_settings import homelab_raw

USERS = {"iot-devices": {"publish": ["sensors.>"]},
         "analytics": {"consume": ["sensors/analytics"]}}
BUCKET_USERS = {"thermostat": {"keyValues": {"device-config": "read"}, "objectStores": {"firmware": "read"}},
                "provisioner": {"keyValues": {"device-config": "write"}}}


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
        buckets = load_all_buckets(self.raw)
        return plan_users(self.settings.auth, self.catalog, backup_streams(self.settings, self.catalog, buckets),
                          buckets=buckets, mqtt_enabled=self.settings.mqtt.enabled)

    def write_auth(self) -> None:
        from render.manifests import mqtt_connection
        include, self.passwords = write_local_auth(self.workdir, self.users, self.url,
                                                   mqtt=mqtt_connection(self.settings, "127.0.0.1",
                                                                        self.layout.mqtt_port))
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
    apply_catalog(lab.catalog, lab.url, login=lab.admin(), buckets=load_all_buckets(lab.raw))
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
        # bound by name: asking for the consumer's info first (pull_subscribe) is JetStream's API, which its
        # account does not have (stack/users.py, "Accounts")
        sub = await js.pull_subscribe_bind("analytics", "sensors")
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
    """Streams made before auth existed live in the global account; with auth on they move to STREAMS at the
    start (render/settle_account.py) and the admin finds every one."""
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


def publish_as_admin(lab: Homelab, prefix: str, count: int, payload: bytes) -> None:
    """`count` messages on <prefix>.0 … <prefix>.<count-1>, published with acks by the admin."""
    async def publish():
        nc = await nats.connect(lab.url, **lab.login("admin"))
        try:
            for i in range(count):
                await nc.jetstream().publish(f"{prefix}.{i}", payload)
        finally:
            await nc.close()
    run(publish())


def user_env(lab: Homelab, user: str) -> dict:
    """The user's env file, as a workload gets it from its Secret."""
    text = (lab.workdir / "auth" / f"{user}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_backup_user_snapshots_its_streams_and_nothing_more(homelab, tmp_path):
    publish_as_admin(homelab, "logs.app", 20, b"line")
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
    # it reads the system account's JSZ of STREAMS (its own account has no JetStream): report sees what admin sees
    as_monitor = json.loads(cli("report", "--json", env=env).stdout)
    as_admin = json.loads(cli("report", "--json", env={**user_env(homelab, "admin"),
                                                       "NATS_MONITOR_URL": homelab.server.monitoring_url}).stdout)
    assert [r["name"] for r in as_monitor["streams"]] == [r["name"] for r in as_admin["streams"]]
    assert [(r["stream"], r["name"]) for r in as_monitor["consumers"]] == \
        [(r["stream"], r["name"]) for r in as_admin["consumers"]]


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
    reloads = homelab.server.log_path.read_text().count("Reloaded server configuration")
    homelab.server.process.send_signal(signal.SIGHUP)   # what the config reloader sends
    for _ in range(100):
        if homelab.server.log_path.read_text().count("Reloaded server configuration") > reloads:
            break
        time.sleep(0.05)
    ack, _ = run(try_logs(False))
    assert ack is not None and ack.stream == "app-logs"
    assert homelab.server.process.pid == pid and homelab.server.monitor("/varz")["start"] == started


# ---------------------------------------------------------------- the program, under Pulumi's mocks

import json  # noqa: E402

import pulumi  # noqa: E402

from tests.pulumi_harness import (  # noqa: E402
    TEST_SECRETS,
    as_manifest,
    encode_config,
    generated_password,
    is_secret,
    run_program,
    stack_config,
)

ADMIN_PASSWORD = 'adm"in\\pass$word-never-in-plaintext'
SECRET = "kubernetes:core/v1:Secret"


def secured_config(users=USERS, **extra) -> dict:
    return {**stack_config("homelab"), **encode_config({"homelab-nats:auth": {"enabled": True, "users": users},
                                                         **extra}),
            "homelab-nats:natsPassword": ADMIN_PASSWORD}


@pytest.fixture(scope="module")
def secured():
    return run_program(secured_config(), secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))


def all_passwords(run) -> list[str]:
    generated = [generated_password(r.name) for r in run.of_type("random:index/randomPassword:RandomPassword")]
    assert len(generated) == 5   # nats-box, backup, monitor, iot-devices, analytics; the admin's is natsPassword
    return [ADMIN_PASSWORD, *generated]


def without_secrets(value):
    """Everything a reader of the state or the preview sees in plaintext (secret values removed)."""
    if is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def test_no_password_in_the_config_map_any_plaintext_input_or_output(secured):
    passwords = all_passwords(secured)
    config_map = as_manifest(secured.one("kubernetes:core/v1:ConfigMap", "nats-config"))
    conf = config_map["data"]["nats.conf"]
    assert 'include "../nats-auth/auth.conf"' in conf and "password:" not in conf and "user:" not in conf
    plaintext = json.dumps([without_secrets(r.inputs) for r in secured.resources]) + json.dumps(secured.exports)
    for pw in passwords:
        assert pw not in plaintext and json.dumps(pw)[1:-1] not in plaintext
    # every password is somewhere, as a secret: the server's auth file and the users' Secrets
    auth = secured.one(SECRET, "nats-auth").inputs["stringData"]
    assert is_secret(auth) or is_secret(auth["auth.conf"])
    auth_conf = as_manifest(secured.one(SECRET, "nats-auth"))["stringData"]["auth.conf"]
    for pw in passwords:
        assert pw.replace("\\", "\\\\").replace('"', '\\"') in auth_conf


def test_the_auth_file_the_program_renders_is_what_a_server_accepts(secured, tmp_path):
    """The Secret's file, with the program's passwords, loads in a real server and logs the admin and nats-box
    (with the password in its context) in."""
    from render.nats_conf import render_nats_conf
    auth_conf = as_manifest(secured.one(SECRET, "nats-auth"))["stringData"]["auth.conf"]
    settings = load_settings(secured_raw())
    layout = replace(local_layout(tmp_path), auth_include="auth.conf")
    (tmp_path / "auth.conf").write_text(auth_conf)
    with start_server(settings, layout, tmp_path, conf_text=render_nats_conf(settings, layout)) as server:
        box = json.loads(as_manifest(secured.one(SECRET, "nats-box-contexts"))["stringData"]["default.json"])

        async def go():
            infos = []
            for user, password in (("admin", ADMIN_PASSWORD), (box["user"], box["password"])):
                nc = await nats.connect(server.client_url, user=user, password=password)
                infos.append(await nc.jetstream().account_info())
                await nc.close()
            return infos
        assert all(info is not None for info in run(go()))


def test_each_user_gets_a_secret_a_workload_mounts(secured):
    secrets = {r.inputs["metadata"]["name"]: r for r in secured.of_type(SECRET)}
    for user in ("iot-devices", "analytics", "backup", "monitor"):
        secret = secrets[f"nats-user-{user}"]
        data = as_manifest(secret)["stringData"]
        assert data["NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222" and data["NATS_USER"] == user
        assert data["NATS_INBOX_PREFIX"] == f"_INBOX_{user}" and len(data["NATS_PASSWORD"]) == 32
        sd = secret.inputs["stringData"]
        assert is_secret(sd) or is_secret(sd["NATS_PASSWORD"])
    assert "nats-user-admin" not in secrets and "nats-user-nats-box" not in secrets
    box = as_manifest(secrets["nats-box-contexts"])["stringData"]["default.json"]
    [box_password] = [generated_password(r.name) for r in secured.of_type("random:index/randomPassword:RandomPassword")
                      if r.name == "nats-users-nats-box-password"]
    assert json.loads(box) == {"description": "homelab NATS (in-cluster)", "url": "nats://nats:4222",
                               "user": "nats-box", "password": box_password}
    assert is_secret(secrets["nats-box-contexts"].inputs["stringData"]) or \
        is_secret(secrets["nats-box-contexts"].inputs["stringData"]["default.json"])


def test_server_and_reloader_mount_the_auth_secret_and_the_backup_job_logs_in(secured):
    pod = as_manifest(secured.one("kubernetes:apps/v1:StatefulSet", "nats"))["spec"]["template"]["spec"]
    assert {"name": "auth", "secret": {"secretName": "nats-auth", "defaultMode": 0o440}} in pod["volumes"]
    for container in pod["containers"][:2]:   # nats and the reloader, which watches the include
        assert {"name": "auth", "mountPath": "/etc/nats-auth", "readOnly": True} in container["volumeMounts"]
    job = as_manifest(secured.one("kubernetes:batch/v1:CronJob", "nats-backup"))
    snapshot = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e for e in snapshot["env"]}
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "nats-user-backup", "key": "NATS_PASSWORD"}
    assert env["NATS_INBOX_PREFIX"]["value"] == "_INBOX_backup"


def test_a_users_secret_goes_to_its_namespace():
    run = run_program(secured_config({**USERS, "analytics": {"consume": ["sensors/analytics"], "namespace": "trino"}}),
                      secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))
    secret = run.one(SECRET, "nats-user-analytics").inputs
    assert secret["metadata"]["namespace"] == "trino" and run.exports["users"]["analytics"]["secret"] == \
        "trino/nats-user-analytics"
    assert run.one(SECRET, "nats-user-iot-devices").inputs["metadata"]["namespace"] == "nats"


def test_users_output_shows_permissions_for_review(secured):
    users = secured.exports["users"]
    assert users["iot-devices"] == {"account": "iot-devices", "secret": "nats/nats-user-iot-devices",
                                    "inboxPrefix": "_INBOX_iot-devices",
                                    "permissions": {"publish": {"allow": ["sensors.>"]},
                                                    "subscribe": {"allow": ["_INBOX_iot-devices.>"]}},
                                    "imports": ["service sensors.>"]}
    assert users["analytics"]["imports"] == ["service $JS.API.CONSUMER.MSG.NEXT.sensors.analytics (streamed)",
                                             "service $JS.ACK.sensors.analytics.>"]
    assert users["admin"]["permissions"] == "all" and users["admin"]["account"] == "STREAMS"
    assert users["backup"]["account"] == "STREAMS" and "imports" not in users["backup"]
    assert users["monitor"]["account"] == "monitor" and users["monitor"]["imports"] == [
        "service $SYS.REQ.ACCOUNT.STREAMS.JSZ (streamed)"]
    assert not any("without authentication" in w for w in secured.warnings)


@pytest.mark.parametrize("users, key, says", [
    ({"cam": {"publish": ["cameras.>"]}}, "homelab-nats:auth.users.cam.publish",
     "'cameras.>' is not inside any declared stream's subjects"),
    ({"cam": {"publish": [">"]}}, "homelab-nats:auth.users.cam.publish", "is not inside any declared stream"),
    ({"bi": {"consume": ["sensors/dashboard"]}}, "homelab-nats:auth.users.bi.consume",
     "sensors/dashboard is not a declared consumer"),
    ({"bi": {"consume": ["sensors"]}}, "homelab-nats:auth.users.bi.consume", "is not STREAM/CONSUMER"),
    ({"backup": {"publish": ["sensors.>"]}}, "homelab-nats:auth.users.backup", "a user this project makes itself"),
    ({"Bad_Name": {"publish": ["sensors.>"]}}, "homelab-nats:auth.users.Bad_Name", "user names are"),
    ({"idle": {}}, "homelab-nats:auth.users.idle", "give it something to do"),
    ({"cam": {"publish": ["sensors..x"]}}, "homelab-nats:auth.users.cam.publish", "empty token"),
])
def test_users_naming_what_the_catalog_lacks_fail_at_preview(users, key, says):
    with pytest.raises(pulumi.RunError) as err:
        run_program(secured_config(users), secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))
    assert str(err.value).startswith(key) and says in str(err.value), str(err.value)


def test_auth_without_the_admin_password_fails_at_preview_saying_how():
    config = {k: v for k, v in secured_config().items() if k != "homelab-nats:natsPassword"}
    with pytest.raises(pulumi.RunError, match=r"natsPassword is not set.*pulumi config set --secret natsPassword"):
        run_program(config)


def test_the_guide_stack_warns_that_the_load_balancer_is_open():
    run = run_program(stack_config("homelab"))
    assert any("10.0.0.248:4222 without authentication" in w for w in run.warnings)
    assert not run.of_type("random:index/randomPassword:RandomPassword") and "users" not in run.exports


# ---------------------------------------------------------------- the permissions, as tables

from render.auth_conf import render_auth_conf  # noqa: E402
from stack.users import AppUser, Auth, ServerUser, app_user_permissions, backup_permissions, monitor_permissions  # noqa: E402


def test_pull_consumer_permissions_equal_the_documented_set():
    """nats.docs using-nats/jetstream/nats_api_reference.md, "ACLs": a pull consumer's message flow is
    CONSUMER.MSG.NEXT and the $JS.ACK subjects of its stream and consumer, and the user's own inbox. No
    CONSUMER.INFO: JetStream's API answers in the requester's account, which has no JetStream."""
    catalog = load_catalog(homelab_raw()["streams"])
    perms = app_user_permissions(AppUser("analytics", consume=(("sensors", "analytics"),)), catalog)
    assert perms == {"publish": {"allow": ["$JS.API.CONSUMER.MSG.NEXT.sensors.analytics",
                                           "$JS.ACK.sensors.analytics.>"]},
                     "subscribe": {"allow": ["_INBOX_analytics.>"]}}


@pytest.mark.parametrize("user, publish, subscribe", [
    (AppUser("iot", publish=("sensors.>",)), ["sensors.>"], ["_INBOX_iot.>"]),
    (AppUser("both", publish=("logs.app.>",), consume=(("iot-sensors", "processor"),)),
     ["logs.app.>", "$JS.API.CONSUMER.MSG.NEXT.iot-sensors.processor",
      "$JS.ACK.iot-sensors.processor.>"], ["_INBOX_both.>"]),
])
def test_app_user_permissions(user, publish, subscribe):
    perms = app_user_permissions(user, load_catalog(homelab_raw()["streams"]))
    assert perms == {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def test_push_consumer_users_also_get_the_delivery_subject_and_flow_control():
    streams = {"cams": {"subjects": ["cam.>"], "consumers": {"live": {"deliverSubject": "deliver.cams"}}}}
    perms = app_user_permissions(AppUser("viewer", consume=(("cams", "live"),)), load_catalog(streams))
    assert "deliver.cams" in perms["subscribe"]["allow"] and "$JS.FC.cams.live.>" in perms["publish"]["allow"]


def test_backup_and_monitor_permissions():
    assert backup_permissions(["a", "b"])["publish"]["allow"] == [
        "$JS.API.STREAM.INFO.a", "$JS.API.STREAM.SNAPSHOT.a", "$JS.SNAPSHOT.ACK.a.>",
        "$JS.API.STREAM.INFO.b", "$JS.API.STREAM.SNAPSHOT.b", "$JS.SNAPSHOT.ACK.b.>"]
    # JetStream's information from the system account, and the probe that finds its own account has no JetStream
    assert monitor_permissions()["publish"]["allow"] == ["$JS.API.INFO", "$SYS.REQ.ACCOUNT.STREAMS.JSZ"]


@pytest.mark.parametrize("password", ['plain', 'quo"te', 'back\\slash', '$VARIABLE', "tab\tnew\nline", "ünï€ode",
                                      "'single'", "semi;colon # hash", "}{][ ,"])
def test_any_password_survives_the_auth_file(password, tmp_path):
    """Rendered, read by a real server, and accepted at login."""
    from render.nats_conf import render_nats_conf
    settings = load_settings(secured_raw())
    layout = replace(local_layout(tmp_path), auth_include="auth.conf")
    (tmp_path / "auth.conf").write_text(render_auth_conf([ServerUser("admin")], {"admin": password}))
    with start_server(settings, layout, tmp_path, conf_text=render_nats_conf(settings, layout)) as server:
        async def go():
            nc = await nats.connect(server.client_url, user="admin", password=password)
            await nc.close()
        run(go())


def test_auth_off_renders_no_users():
    assert Auth().enabled is False
    assert plan_users(Auth(), load_catalog(homelab_raw()["streams"]), []) == ()


def test_the_cron_jobs_snapshot_script_logs_in_as_the_backup_user(homelab, tmp_path):
    """SNAPSHOT_SCRIPT in nats-box's tools, with the environment the CronJob gives it from nats-user-backup."""
    from render.backup_job import SNAPSHOT_SCRIPT
    from tests.render.test_backup_job import NATS_BOX_TOOLS, image_path, run_in

    publish_as_admin(homelab, "analytics.events", 10, b"e")
    box = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {"nats": "nats_shim"})
    (tmp_path / "backup" / "streams").mkdir(parents=True)
    env = {**user_env(homelab, "backup"), "STREAMS": "analytics app-logs", "BACKUP_DIR": str(tmp_path / "backup"),
           "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = run_in(box, SNAPSHOT_SCRIPT, env)
    assert done.returncode == 0 and (tmp_path / "backup" / "FAILED").read_text() == "", done.stderr
    meta = json.loads((tmp_path / "backup" / "streams" / "analytics" / "backup.json").read_text())
    assert meta["state"]["messages"] == 10
    # without the inbox prefix the replies would go to _INBOX.>, which the backup user may not read
    no_prefix = {**{k: v for k, v in env.items() if k != "NATS_INBOX_PREFIX"}, "STREAMS": "analytics"}
    (tmp_path / "backup" / "streams" / "analytics").rename(tmp_path / "first")
    failed = run_in(box, SNAPSHOT_SCRIPT, no_prefix)
    assert "analytics" in (tmp_path / "backup" / "FAILED").read_text(), failed.stderr


def test_make_dev_runs_with_the_stacks_auth_and_says_how_to_log_in(tmp_path):
    import stat

    import yaml

    from streams.local.server import free_port
    doc = yaml.safe_load((ROOT / "Pulumi.homelab.yaml").read_text())
    doc["config"]["homelab-nats:auth"] = {"enabled": True, "users": {
        **USERS, "esp-hall": {"mqtt": True, "publish": ["sensors.hall.>"]}}}
    doc["config"]["homelab-nats:mqtt"] = {"enabled": True}
    stack = tmp_path / "Pulumi.secured.yaml"
    stack.write_text(yaml.safe_dump(doc))
    port, http_port, mqtt_port = free_port(), free_port(), free_port()

    def dev():
        return subprocess.run([sys.executable, "-m", "streams", "dev", "--once", "--stack", str(stack), "--port",
                               str(port), "--http-port", str(http_port), "--mqtt-port", str(mqtt_port),
                               "--data-dir", str(tmp_path / "dev")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    first = dev()
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "dev" / "auth"
    assert f"set -a; . {folder / 'admin.env'}; set +a" in first.stdout and "created consumer sensors/analytics" in first.stdout
    passwords = json.loads((folder / "passwords.json").read_text())
    assert set(passwords) == {"admin", "nats-box", "backup", "monitor", "iot-devices", "analytics", "esp-hall"}
    assert f'"url": "mqtt://127.0.0.1:{mqtt_port}"' in first.stdout
    assert f"MQTT_PORT={mqtt_port}" in (folder / "esp-hall.env").read_text()
    for pw in passwords.values():
        assert pw not in first.stdout + first.stderr
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert '"users"' in first.stdout and '"inboxPrefix": "_INBOX_analytics"' in first.stdout
    second = dev()   # passwords are kept: what workloads were given still logs in
    assert second.returncode == 0, second.stderr
    assert json.loads((folder / "passwords.json").read_text()) == passwords


def test_bucket_readers_and_writers_through_direct_gets(tmp_path):
    """What a bucket's application users do from their own accounts: nats-py's KeyValue bound by name (its
    `js.key_value()` asks for the stream's info first, JetStream's API, which their accounts do not have), the
    history and every key's last value by direct get, and an object read by direct gets of its metadata and
    chunks, exactly as the README shows them."""
    import base64
    import hashlib

    from nats.js.kv import KeyValue
    lab = Homelab(tmp_path / "lab", secured_raw({**USERS, **BUCKET_USERS}))
    lab.start()
    try:
        apply_catalog(lab.catalog, lab.url, login=lab.admin(), buckets=load_all_buckets(lab.raw))
        close_all_clients()
        firmware = os.urandom(300_000)

        async def go():
            admin = await Client().connect(lab.url, **lab.login("admin"))
            await (await admin.nc.jetstream().object_store("firmware")).put("esp32.bin", firmware)
            writer = await Client().connect(lab.url, **lab.login("provisioner"))
            kv = KeyValue(name="device-config", stream="KV_device-config", pre="$KV.device-config.",
                          js=writer.nc.jetstream(), direct=True)
            await kv.put("sensor-1.interval", b"10")
            await kv.put("sensor-1.interval", b"30")
            await kv.put("sensor-2.interval", b"60")

            reader = await Client().connect(lab.url, **lab.login("thermostat"))
            rkv = KeyValue(name="device-config", stream="KV_device-config", pre="$KV.device-config.",
                           js=reader.nc.jetstream(), direct=True)
            assert (await rkv.get("sensor-1.interval")).value == b"30"
            history, seq = [], 0
            while True:   # the key's history: next message on its subject after the last one seen
                m = await reader.nc.request("$JS.API.DIRECT.GET.KV_device-config", json.dumps(
                    {"seq": seq + 1, "next_by_subj": "$KV.device-config.sensor-1.interval"}).encode(), timeout=2)
                if m.headers and m.headers.get("Status") == "404":
                    break
                history.append(m.data)
                seq = int(m.headers["Nats-Sequence"])
            assert history == [b"10", b"30"]
            # every key's last value in one batch
            inbox = reader.nc.new_inbox()
            batch = await reader.nc.subscribe(inbox)
            await reader.nc.publish("$JS.API.DIRECT.GET.KV_device-config", json.dumps(
                {"multi_last": ["$KV.device-config.>"], "batch": 100}).encode(), reply=inbox)
            last = {}
            while True:
                m = await batch.next_msg(timeout=2)
                if m.headers.get("Status") == "204":
                    break
                last[m.headers["Nats-Subject"]] = m.data
            assert last == {"$KV.device-config.sensor-1.interval": b"30", "$KV.device-config.sensor-2.interval": b"60"}
            # an object: its metadata by name, then its chunks by their subject
            name = base64.urlsafe_b64encode(b"esp32.bin").decode()
            meta = await reader.nc.request(f"$JS.API.DIRECT.GET.OBJ_firmware.$O.firmware.M.{name}", b"", timeout=2)
            info = json.loads(meta.data)
            chunks, seq = [], 0
            while True:
                m = await reader.nc.request("$JS.API.DIRECT.GET.OBJ_firmware", json.dumps(
                    {"seq": seq + 1, "next_by_subj": f"$O.firmware.C.{info['nuid']}"}).encode(), timeout=2)
                if m.headers and m.headers.get("Status") == "404":
                    break
                chunks.append(m.data)
                seq = int(m.headers["Nats-Sequence"])
            data = b"".join(chunks)
            assert data == firmware and info["digest"] == "SHA-256=" + base64.urlsafe_b64encode(
                hashlib.sha256(data).digest()).decode()
            # a reader does not write, and neither reaches JetStream's API
            await reader.nc.publish("$KV.device-config.sensor-1.interval", b"0")
            assert await reader.refused('Publish to "$KV.device-config.sensor-1.interval"')
            with pytest.raises(nats.errors.TimeoutError):
                await writer.nc.request("$JS.API.STREAM.INFO.iot-sensors", b"", timeout=0.5)
            assert await writer.refused("$JS.API.STREAM.INFO.iot-sensors")
            assert (await kv.get("sensor-1.interval")).value == b"30"
            for c in (admin, reader, writer):
                await c.nc.close()
        run(go())
    finally:
        close_all_clients()
        lab.server.stop()


def test_an_application_user_may_read_an_object_store_not_write_it():
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:auth.users.cam.objectStores.firmware: an application "
                                              r"user can read an object store, not write it"):
        run_program(secured_config({"cam": {"objectStores": {"firmware": "write"}}}),
                    secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))


def test_a_user_naming_an_undeclared_bucket_fails_at_preview():
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:auth.users.cam.objectStores: 'snapshots' is not a "
                                              r"declared bucket \(declared: firmware\)"):
        run_program(secured_config({"cam": {"objectStores": {"snapshots": "write"}}}),
                    secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))
