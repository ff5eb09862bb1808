"""Devices over MQTT (issue 21): the rendered config on a real nats-server, a real MQTT client (Eclipse Paho,
pinned in requirements-test.txt), the stack's device users with their generated permissions. Plus the settings,
the topic <-> subject mapping and what the deployment renders, as tables."""
from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import replace

import nats
import paho.mqtt.client as mqtt
import pytest

from render.manifests import client_service, stateful_set
from render.nats_conf import cluster_layout, render_nats_conf, restart_checksum
from stack.buckets import load_all_buckets
from stack.catalog import CatalogError, load_catalog
from stack.errors import SettingsError
from stack.settings import load_settings
from stack.subjects import mqtt_topic
from stack.users import AppUser, mqtt_device_permissions
from streams.connection import quiet_error_cb
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from tests.pulumi_harness import ROOT
from tests.stack.test_auth import Homelab, run, user_env
from tests.stack.test_settings import homelab_raw

DEVICES = {
    "esp-kitchen": {"mqtt": True, "publish": ["sensors.kitchen.>", "sensors.temperature.kitchen"],
                    "subscribe": ["commands.kitchen.>"]},
    "esp-garage": {"mqtt": True, "publish": ["sensors.garage.>"], "subscribe": ["commands.garage.>"]},
    "home-assistant": {"mqtt": True, "publish": ["commands.>"], "subscribe": ["sensors.>"]},
    "processor-app": {"consume": ["iot-sensors/processor"]},
}


def mqtt_raw(users=DEVICES, **extra) -> dict:
    raw = homelab_raw()
    streams = {**raw["streams"], "commands": {"subjects": ["commands.>"], "storage": "file", "maxAge": "1h"}}
    return {**raw, "streams": streams, "mqtt": {"enabled": True, "ackWait": "5s"},
            "auth": {"enabled": True, "users": users}, **extra}


# --------------------------------------------------------------------------- tables

# nats-server server/mqtt_test.go TestMQTTTopicAndSubjectConversion (subject -> topic, the direction devices see)
# and TestMQTTFilterConversion (wildcards), row for row where the subject is valid in a permission.
@pytest.mark.parametrize("subject, topic", [
    ("foo", "foo"), ("/.foo", "/foo"), ("/./.foo", "//foo"), ("/.foo./", "/foo/"), ("foo.bar", "foo/bar"),
    ("/.foo.bar", "/foo/bar"), ("foo.bar.baz", "foo/bar/baz"), ("bar./", "bar/"), ("bar././", "bar//"),
    ("foo./.bar", "foo//bar"), ("foo././.bar", "foo///bar"), ("//", "."), ("////", ".."), ("//foo", ".foo"),
    ("foo//", "foo."), ("//foo//", ".foo."), ("foo////.bar./", "foo../bar/"), ("foo//bar.baz", "foo.bar/baz"),
    ("//./", "./"), ("/./", "/"), ("/././", "//"),
    ("*", "+"), ("/.*", "/+"), ("*./", "+/"), ("foo.*", "foo/+"), ("foo.*.bar", "foo/+/bar"), ("foo./.*", "foo//+"),
    ("foo//bar././.*././.baz", "foo.bar///+///baz"), (">", "#"), ("/.>", "/#"), ("foo.>", "foo/#"),
    ("foo.bar//baz.>", "foo/bar.baz/#"), ("foo*.bar", "foo*/bar"), ("sensors.kitchen.>", "sensors/kitchen/#"),
])
def test_subjects_as_mqtt_topics_as_the_server_converts_them(subject, topic):
    assert mqtt_topic(subject) == topic


@pytest.mark.parametrize("user, subscribe", [
    (AppUser("d", mqtt=True, subscribe=("commands.d.>",)), ["_INBOX_d.>", "commands.d.>", "commands.d"]),
    (AppUser("d", mqtt=True, subscribe=("a.>", "a.b.>")), ["_INBOX_d.>", "a.>", "a"]),
    (AppUser("d", mqtt=True, subscribe=(">",)), ["_INBOX_d.>", ">"]),
    (AppUser("d", mqtt=True, subscribe=("a.*",)), ["_INBOX_d.>", "a.*"]),
    (AppUser("d", mqtt=True, publish=("s.d.>",)), ["_INBOX_d.>"]),
])
def test_a_device_may_subscribe_to_the_level_its_wildcard_also_matches(user, subscribe):
    assert mqtt_device_permissions(user)["subscribe"]["allow"] == subscribe


@pytest.mark.parametrize("raw, key, says", [
    ({"mqtt": {"enabled": True, "port": 4222}}, "homelab-nats:mqtt.port", "already ports.client's port"),
    ({"mqtt": {"enabled": True, "maxAckPending": 70000}}, "homelab-nats:mqtt.maxAckPending", "between 1 and 65535"),
    ({"mqtt": {"enabled": True, "streamReplicas": 3}}, "homelab-nats:mqtt.streamReplicas", "between 1 and 1"),
    ({"mqtt": {"enabled": True, "ackWait": "soon"}}, "homelab-nats:mqtt.ackWait", "a duration"),
    ({"mqtt": {"enabled": True, "qos2": True}}, "homelab-nats:mqtt", "qos2"),
    ({"auth": {"enabled": True, "users": {"d": {"mqtt": True, "consume": ["sensors/analytics"]}}}},
     "homelab-nats:auth.users.d.consume", "an MQTT device publishes and subscribes to topics only"),
    ({"auth": {"enabled": True, "users": {"d": {"subscribe": ["commands.>"]}}}},
     "homelab-nats:auth.users.d.subscribe", "only an MQTT device"),
    ({"auth": {"enabled": True, "users": {"d": {"mqtt": True, "subscribe": ["$MQTT.sess.>"]}}}},
     "homelab-nats:auth.users.d.subscribe", "a server subject"),
])
def test_bad_mqtt_settings_name_the_key(raw, key, says):
    with pytest.raises(SettingsError) as err:
        load_settings(raw)
    assert str(err.value).startswith(key) and says in str(err.value), str(err.value)


def test_a_device_publishing_where_no_stream_keeps_it_or_without_the_listener_fails_at_preview():
    from stack.loader import build_stack
    with pytest.raises(SettingsError, match=r"^homelab-nats:auth.users.cam.publish: 'cameras.>' is not inside any "
                                            r"declared stream's subjects"):
        build_stack(mqtt_raw({"cam": {"mqtt": True, "publish": ["cameras.>"]}}))
    with pytest.raises(SettingsError, match=r"^homelab-nats:auth.users.esp-kitchen.mqtt: the MQTT listener is off"):
        build_stack({**mqtt_raw(), "mqtt": {"enabled": False}})


def test_the_servers_own_stream_names_cannot_be_declared():
    with pytest.raises(CatalogError, match=r"nats-server gives its own MQTT streams"):
        load_catalog({"$MQTT_msgs": {"subjects": ["x.>"]}})


def test_what_the_deployment_renders_for_mqtt():
    plain, secured = load_settings(homelab_raw()), load_settings(mqtt_raw())
    conf = render_nats_conf(secured, cluster_layout(secured))
    assert 'mqtt {\n  listen: "0.0.0.0:1883"\n  ack_wait: "5s"\n  max_ack_pending: 1024\n}' in conf
    assert "mqtt" not in render_nats_conf(plain, cluster_layout(plain))
    ports = {p["name"]: p["port"] for p in client_service(secured)["spec"]["ports"]}
    assert ports["mqtt"] == 1883 and "mqtt" not in {p["name"] for p in client_service(plain)["spec"]["ports"]}
    nats_container = stateful_set(secured)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "mqtt", "containerPort": 1883, "protocol": "TCP"} in nats_container["ports"]
    # TLS: port 8883, TLS only, with the server's certificate
    tls = load_settings(mqtt_raw(tls={"enabled": True, "issuer": {"name": "homelab-ca-issuer"}}))
    conf = render_nats_conf(tls, cluster_layout(tls))
    assert 'listen: "0.0.0.0:8883"' in conf and 'cert_file: "/etc/nats-tls/tls.crt"' in conf.split("mqtt {")[1]
    # the listener needs a restart, the delivery settings reload (server/reload.go)
    slower = load_settings(mqtt_raw(mqtt={"enabled": True, "ackWait": "60s", "maxAckPending": 10}))
    moved = load_settings(mqtt_raw(mqtt={"enabled": True, "port": 11883}))
    assert restart_checksum(slower, cluster_layout(slower)) == restart_checksum(secured, cluster_layout(secured))
    assert restart_checksum(moved, cluster_layout(moved)) != restart_checksum(secured, cluster_layout(secured))
    assert restart_checksum(plain, cluster_layout(plain)) != restart_checksum(
        load_settings({**homelab_raw(), "mqtt": {"enabled": True}}), cluster_layout(plain))


def test_the_program_gives_each_device_its_secret_and_shows_its_topics():
    from tests.pulumi_harness import TEST_SECRETS, encode_config, run_program, stack_config
    config = {**stack_config("homelab"), **encode_config({f"homelab-nats:{k}": v for k, v in mqtt_raw().items()
                                                          if k in ("streams", "mqtt", "auth")}),
              "homelab-nats:natsPassword": "admin-pw"}
    done = run_program(config, secret_keys=(*TEST_SECRETS, "homelab-nats:natsPassword"))
    secret = done.one("kubernetes:core/v1:Secret", "nats-user-esp-kitchen").inputs["stringData"]
    secret = secret.get("value", secret)   # a secret output, as the engine sees it
    assert {k: secret[k] for k in ("MQTT_HOST", "MQTT_PORT", "MQTT_TLS", "MQTT_USER", "MQTT_CLIENT_ID")} == {
        "MQTT_HOST": "10.0.0.248", "MQTT_PORT": "1883", "MQTT_TLS": "false", "MQTT_USER": "esp-kitchen",
        "MQTT_CLIENT_ID": "esp-kitchen"}
    assert "MQTT_PASSWORD" in secret and "NATS_URL" not in secret
    entry = done.exports["users"]["esp-kitchen"]
    assert entry["account"] == "STREAMS" and entry["connectionTypes"] == ["MQTT"]
    assert entry["mqttTopics"] == {"publish": ["sensors/kitchen/#", "sensors/temperature/kitchen"],
                                   "subscribe": ["commands/kitchen/#", "commands/kitchen"]}
    assert done.exports["mqtt"]["url"] == "mqtt://10.0.0.248:1883"
    assert any("MQTT" in w for w in run_program(
        {**stack_config("homelab"), **encode_config({"homelab-nats:mqtt": {"enabled": True}})}).warnings)


# --------------------------------------------------------------------------- a real server and a real client

class Device:
    """A paho MQTT 3.1.1 client, with what it received and the codes the server answered."""

    def __init__(self, lab, user: str, client_id: str | None = None, password: str | None = None, tls_ca=None):
        self.received: list[tuple[str, bytes, int, bool]] = []
        self.connected = threading.Event()
        self.reason = None
        self.granted: list = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or user,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.username_pw_set(user, password if password is not None else lab.passwords[user])
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload, m.qos, m.retain))
        self.client.on_subscribe = self._on_subscribe
        self.port = lab.server.layout.mqtt_port

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.reason = reason
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        self.granted = reasons
        self.subscribed.set()

    def connect(self) -> Device:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connected.wait(30), "no CONNACK"   # the first connection of an account makes $MQTT_* streams
        return self

    def subscribe(self, topic: str, qos: int = 1) -> list:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=qos)
        assert self.subscribed.wait(30)
        return [r.value for r in self.granted]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(30)

    def wait_for(self, count: int, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_lab(tmp_path, raw=None) -> Homelab:
    lab = Homelab(tmp_path / "lab", raw or mqtt_raw())
    lab.start()
    apply_catalog(lab.catalog, lab.url, login=lab.admin(), buckets=load_all_buckets(lab.raw))
    close_all_clients()
    return lab


@pytest.fixture
def lab(tmp_path):
    homelab = start_lab(tmp_path)
    yield homelab
    close_all_clients()
    homelab.server.stop()


def messages(lab, stream: str) -> list[tuple[str, bytes]]:
    async def go():
        nc = await nats.connect(lab.url, **lab.login("admin"))
        js = nc.jetstream()
        info = await js.stream_info(stream)
        seqs = range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else range(0)
        out = [(m.subject, m.data) for m in [await js.get_msg(stream, seq) for seq in seqs]]
        await nc.close()
        return out
    return run(go())


def test_qos_1_and_0_publishes_land_in_the_stream_and_a_nats_consumer_gets_them(lab):
    kitchen = Device(lab, "esp-kitchen").connect()
    assert kitchen.reason == 0
    kitchen.publish("sensors/temperature/kitchen", b'{"value": 21.5}', qos=1)
    kitchen.publish("sensors/kitchen/humidity", b"40", qos=0)
    deadline = time.monotonic() + 20
    while len(messages(lab, "iot-sensors")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert messages(lab, "iot-sensors") == [("sensors.temperature.kitchen", b'{"value": 21.5}'),
                                            ("sensors.kitchen.humidity", b"40")]
    kitchen.close()

    async def consume():   # the catalog's consumer processor (sensors.temperature.>), as a NATS application
        nc = await nats.connect(lab.url, **lab.login("processor-app"))
        sub = await nc.jetstream().pull_subscribe_bind("processor", "iot-sensors")
        got = await sub.fetch(1, timeout=5)
        await got[0].ack_sync()
        await nc.close()
        return got[0].subject, got[0].data
    assert run(consume()) == ("sensors.temperature.kitchen", b'{"value": 21.5}')


def test_a_device_receives_nats_publishes_and_other_devices_commands(lab):
    kitchen = Device(lab, "esp-kitchen").connect()
    assert kitchen.subscribe("commands/kitchen/#", qos=1) == [1]

    async def publish():
        nc = await nats.connect(lab.url, **lab.login("admin"))
        await nc.jetstream().publish("commands.kitchen.light", b"on")
        await nc.close()
    run(publish())
    ha = Device(lab, "home-assistant").connect()
    ha.publish("commands/kitchen/fan", b"off", qos=1)
    got = kitchen.wait_for(2)
    assert sorted((t, p) for t, p, _, _ in got) == [("commands/kitchen/fan", b"off"), ("commands/kitchen/light", b"on")]
    for device in (kitchen, ha):
        device.close()


def test_retained_messages_survive_a_restart(tmp_path):
    lab = start_lab(tmp_path)
    try:
        ha = Device(lab, "home-assistant").connect()
        ha.publish("commands/kitchen/light", b"on", qos=1, retain=True)
        kitchen = Device(lab, "esp-kitchen").connect()
        kitchen.publish("sensors/kitchen/status", b"online", qos=1, retain=True)
        for device in (ha, kitchen):
            device.close()
        lab.server.stop()
        lab.start()
        kitchen = Device(lab, "esp-kitchen", client_id="esp-kitchen-2").connect()
        assert kitchen.subscribe("commands/kitchen/#") == [1]
        assert kitchen.wait_for(1) == [("commands/kitchen/light", b"on", 1, True)]
        ha = Device(lab, "home-assistant", client_id="ha-2").connect()
        assert ha.subscribe("sensors/#") == [1]
        assert ha.wait_for(1) == [("sensors/kitchen/status", b"online", 1, True)]
        for device in (ha, kitchen):
            device.close()
    finally:
        close_all_clients()
        lab.server.stop()


def test_a_device_stays_inside_its_topics_and_out_of_other_sessions(lab):
    kitchen = Device(lab, "esp-kitchen").connect()
    assert kitchen.subscribe("commands/kitchen/#") == [1]
    kitchen.close()   # its session keeps the subscription (clean_session false)

    garage = Device(lab, "esp-garage").connect()
    garage.publish("sensors/kitchen/temp", b"spoofed", qos=1)      # another device's topic
    garage.publish("logs/app", b"x", qos=1)                        # another stream
    garage.publish("$JS/API/STREAM/DELETE/iot-sensors", b"", qos=1)
    assert garage.subscribe("commands/kitchen/#") == [128]         # another device's commands: refused
    assert garage.subscribe("#") == [128]
    assert garage.subscribe("$MQTT/sess/#") == [128]               # the server's own subjects
    garage.close()
    # taking over the kitchen's session by its client id gives nothing the garage may not read
    thief = Device(lab, "esp-garage", client_id="esp-kitchen").connect()
    assert thief.subscribe("commands/garage/#") == [1]

    async def command():   # the kitchen's command first, then the garage's own: only the second arrives
        nc = await nats.connect(lab.url, **lab.login("admin"))
        await nc.jetstream().publish("commands.kitchen.light", b"on")
        await nc.jetstream().publish("commands.garage.door", b"open")
        await nc.close()
    run(command())
    assert [(t, p) for t, p, _, _ in thief.wait_for(1)] == [("commands/garage/door", b"open")]
    time.sleep(0.5)
    assert len(thief.received) == 1
    thief.close()
    log = lab.server.log_path.read_text()
    assert 'Publish Violation - Subject "sensors.kitchen.temp"' in log and 'Publish Violation - Subject "logs.app"' in log
    assert messages(lab, "iot-sensors") == [] and messages(lab, "app-logs") == []

    async def streams():
        nc = await nats.connect(lab.url, **lab.login("admin"))
        names = [s.config.name for s in await nc.jetstream().streams_info()]
        await nc.close()
        return names
    assert "iot-sensors" in run(streams())


def test_wrong_passwords_and_the_nats_port_are_refused_to_devices(lab):
    wrong = Device(lab, "esp-kitchen", password="not-it")
    wrong.client.connect("127.0.0.1", wrong.port)
    wrong.client.loop_start()
    assert wrong.connected.wait(30) and wrong.reason != 0 and "authorized" in str(wrong.reason).lower()
    wrong.client.loop_stop()

    async def over_nats():
        await nats.connect(lab.url, user="esp-kitchen", password=lab.passwords["esp-kitchen"], allow_reconnect=False,
                           max_reconnect_attempts=0, error_cb=quiet_error_cb)
    with pytest.raises(Exception, match="(?i)authorization violation"):
        run(over_nats())
    env = user_env(lab, "esp-kitchen")
    assert env["MQTT_PORT"] == str(lab.server.layout.mqtt_port) and env["MQTT_CLIENT_ID"] == "esp-kitchen"


def test_with_tls_plain_mqtt_is_refused(tmp_path):
    from tests.render.test_tls import issue, make_ca
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_key, ca_cert = make_ca(certs)
    issue(certs, ca_key, ca_cert)
    lab = Homelab(tmp_path / "lab", mqtt_raw(tls={"enabled": True, "issuer": {"name": "homelab-ca-issuer"}}))
    lab.layout = replace(lab.layout, tls_dir=str(certs))
    lab.start()
    try:
        secure = Device(lab, "esp-kitchen", tls_ca=certs / "ca.crt").connect()
        assert secure.reason == 0
        secure.publish("sensors/kitchen/t", b"1")
        secure.close()
        plain = Device(lab, "esp-kitchen")
        with pytest.raises((ConnectionError, OSError, ssl.SSLError, TimeoutError)):
            plain.client.connect("127.0.0.1", plain.port)
            plain.client.loop_start()
            if not plain.connected.wait(3) or plain.reason != 0:
                raise ConnectionError("refused")
        plain.client.loop_stop()
    finally:
        close_all_clients()
        lab.server.stop()


def test_check_report_and_backups_treat_the_mqtt_streams_as_the_servers(lab, tmp_path):
    kitchen = Device(lab, "esp-kitchen").connect()
    kitchen.subscribe("commands/kitchen/#")
    kitchen.publish("sensors/kitchen/status", b"online", retain=True)
    kitchen.close()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **user_env(lab, "admin"),
           "NATS_MONITOR_URL": lab.server.monitoring_url}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "streams", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    report = json.loads(cli("report", "--json").stdout)
    mqtt_rows = [r for r in report["streams"] if r["name"].startswith("$MQTT_")]
    assert mqtt_rows and all(r["kind"] == "server's own (MQTT)" and not r["declared"] for r in mqtt_rows)
    checked = json.loads(cli("check", "--json", "--no-round-trip").stdout)
    assert not [f for f in checked["findings"] if f["level"] == "fail" or "$MQTT_" in f["subject"] + f["message"]]
    backed = cli("backup", "--all", "--to", str(tmp_path / "backups"))
    assert backed.returncode == 0, backed.stderr
    assert "leaves out the server's own streams" in backed.stderr
    assert not [p for p in (tmp_path / "backups").iterdir() if p.name.startswith("$MQTT_")]
    assert (tmp_path / "backups" / "iot-sensors").exists()
