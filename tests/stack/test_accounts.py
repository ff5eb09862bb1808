"""The accounts of issue 22 (stack/users.py, "Accounts"), on a real nats-server running the rendered config:
every application role tries, directly and through every reply subject it can set (requests, fetches, acks,
ack-next, direct gets, publishes with acks), to delete, purge, create, read or write outside its role, and
nothing changes; the streams move between the global account and STREAMS with every message, sequence and ack
floor; the script that moves them runs with only the tools its image has."""
from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import nats
import pytest

from render.auth_conf import render_auth_conf, streams_exports
from render.settle_account import SETTLE_SCRIPT
from stack.buckets import load_all_buckets
from stack.catalog import load_catalog
from stack.users import STREAMS_ACCOUNT, AppUser, Import, ServerUser, app_user_access
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import LocalServerError, settle_account
from tests.render.test_backup_job import image_path
from tests.stack.test_auth import USERS, Client, Homelab, run, secured_raw
from tests.stack.test_settings import homelab_raw

ROLES = {**USERS,
         "viewer": {"consume": ["iot-sensors/live"]},
         "thermostat": {"keyValues": {"device-config": "read"}, "objectStores": {"firmware": "read"}},
         "provisioner": {"keyValues": {"device-config": "write"}}}


def raw_with_roles() -> dict:
    raw = secured_raw(ROLES)
    streams = json.loads(json.dumps(raw["streams"]))
    # ackWait short: the admin's wiretap (a subscription to everything) takes deliveries too, and the viewer's
    # attacks need them redelivered
    streams["iot-sensors"]["consumers"]["live"] = {"deliverSubject": "deliver.live", "ackPolicy": "explicit",
                                                   "filterSubject": "sensors.>", "ackWait": "1s"}
    return {**raw, "streams": streams}


# --------------------------------------------------------------------------- what each role imports, as tables

CATALOG = load_catalog({"s": {"subjects": ["s.>"], "consumers": {"pull": {}, "push": {"deliverSubject": "d.push"}}}})


@pytest.mark.parametrize("user, publish, subscribe, imports", [
    (AppUser("pub", publish=("s.>", "s.a.>")), ["s.>"], ["_INBOX_pub.>"], [Import("service", "s.>")]),
    (AppUser("puller", consume=(("s", "pull"),)),
     ["$JS.API.CONSUMER.MSG.NEXT.s.pull", "$JS.ACK.s.pull.>"], ["_INBOX_puller.>"],
     [Import("service", "$JS.API.CONSUMER.MSG.NEXT.s.pull", streamed=True), Import("service", "$JS.ACK.s.pull.>")]),
    (AppUser("pusher", consume=(("s", "push"),)),
     ["$JS.ACK.s.push.>", "$JS.FC.s.push.>"], ["_INBOX_pusher.>", "d.push"],
     [Import("service", "$JS.ACK.s.push.>"), Import("stream", "d.push"), Import("service", "$JS.FC.s.push.>")]),
    (AppUser("reader", key_values=(("cfg", "read"),), object_stores=(("fw", "read"),)),
     ["$JS.API.DIRECT.GET.KV_cfg", "$JS.API.DIRECT.GET.KV_cfg.>", "$JS.API.DIRECT.GET.OBJ_fw",
      "$JS.API.DIRECT.GET.OBJ_fw.>"], ["_INBOX_reader.>"],
     [Import("service", "$JS.API.DIRECT.GET.KV_cfg", True), Import("service", "$JS.API.DIRECT.GET.KV_cfg.>", True),
      Import("service", "$JS.API.DIRECT.GET.OBJ_fw", True), Import("service", "$JS.API.DIRECT.GET.OBJ_fw.>", True)]),
    (AppUser("writer", key_values=(("cfg", "write"),)),
     ["$JS.API.DIRECT.GET.KV_cfg", "$JS.API.DIRECT.GET.KV_cfg.>", "$KV.cfg.>"], ["_INBOX_writer.>"],
     [Import("service", "$JS.API.DIRECT.GET.KV_cfg", True), Import("service", "$JS.API.DIRECT.GET.KV_cfg.>", True),
      Import("service", "$KV.cfg.>")]),
])
def test_each_role_imports_exactly_what_it_may_publish_or_subscribe(user, publish, subscribe, imports):
    permissions, got = app_user_access(user, CATALOG)
    assert set(permissions["publish"]["allow"]) == set(publish)
    assert {i.subject for i in got if i.kind == "service"} == set(permissions["publish"]["allow"])
    assert {i.subject for i in got if i.kind == "stream"} | {f"_INBOX_{user.name}.>"} == \
        set(permissions["subscribe"]["allow"]) == set(subscribe)
    assert set(got) == set(imports)


def test_streams_exports_each_subject_to_the_accounts_importing_it_and_no_other():
    users = [ServerUser("admin"),
             ServerUser("a", {}, imports=(Import("service", "s.>"), Import("stream", "d.push"))),
             ServerUser("b", {}, imports=(Import("service", "s.>"), Import("service", "x", streamed=True)))]
    assert streams_exports(users) == [{"service": "s.>", "accounts": ["a", "b"]}, {"stream": "d.push", "accounts": ["a"]},
                                      {"service": "x", "response_type": "stream", "accounts": ["b"]}]
    conf = render_auth_conf(users, {"admin": "p", "a": "q", "b": "r"})
    assert f'"{STREAMS_ACCOUNT}": {{' in conf and '"a": {' in conf and conf.count("jetstream: enabled") == 1


# --------------------------------------------------------------------------- the attacks, with real processes

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    homelab = Homelab(tmp_path_factory.mktemp("accounts") / "lab", raw_with_roles())
    homelab.start()
    apply_catalog(homelab.catalog, homelab.url, login=homelab.admin(), buckets=load_all_buckets(homelab.raw))
    close_all_clients()

    async def seed():
        admin = await nats.connect(homelab.url, **homelab.login("admin"))
        js = admin.jetstream()
        for i in range(3):
            await js.publish(f"logs.app.{i}", b"log")
        for i in range(150):   # enough for every fetch, ack-next and delivery the attacks spend
            await js.publish(f"sensors.temperature.r{i}", b"21")
            await js.publish(f"iot.sensors.t{i}", b"t")
        await js.publish("$KV.device-config.sensor-1.interval", b"30")
        # a value holding a consumer's config: a reader's answer must not become a request
        await js.publish("$KV.device-config.evil", json.dumps(
            {"stream_name": "app-logs", "config": {"durable_name": "stolen",
                                                   "deliver_subject": "_INBOX_thermostat.stolen"}}).encode())
        await (await js.object_store("firmware")).put("esp32.bin", b"\x00" * 1000)
        await admin.close()
    run(seed())
    yield homelab
    close_all_clients()
    homelab.server.stop()


# Where an attacker would aim an answer, and what it would be if acted on.
TARGETS = ["$JS.API.STREAM.DELETE.app-logs", "$JS.API.STREAM.PURGE.app-logs", "$JS.API.STREAM.PURGE.iot-sensors",
           "$JS.API.CONSUMER.DELETE.sensors.analytics", "$JS.API.CONSUMER.DELETE.iot-sensors.processor",
           "$JS.API.CONSUMER.CREATE.app-logs", "$JS.API.STREAM.CREATE.stolen", "$JS.API.STREAM.UPDATE.app-logs",
           "$JS.API.STREAM.MSG.DELETE.app-logs", "$KV.device-config.sensor-1.interval", "$O.firmware.M.attack",
           "logs.attack", "events.attack", "_INBOX_analytics.attack", "_INBOX_admin.attack", "deliver.live"]
# Payloads an answer or a request could carry: empty (a delete or purge), JSON configs (a create).
PAYLOADS = [b"", json.dumps({"stream_name": "app-logs", "config": {"durable_name": "stolen",
                                                                    "deliver_subject": "_INBOX_x.stolen"}}).encode(),
            json.dumps({"name": "stolen", "mirror": {"name": "app-logs"}}).encode(), b'{"seq": 1}']


def concrete(subject: str) -> str:
    return subject.replace(".>", ".attack")


async def state(lab) -> dict:
    admin = await nats.connect(lab.url, **lab.login("admin"))
    js = admin.jetstream()
    out = {}
    for info in await js.streams_info():
        consumers = {c.name: (c.ack_floor.stream_seq, c.delivered.stream_seq)
                     for c in await js.consumers_info(info.config.name)}
        out[info.config.name] = {"messages": info.state.messages, "last": info.state.last_seq,
                                 "config": json.dumps(info.config.as_dict(), sort_keys=True, default=str),
                                 "consumers": consumers}
    kv = await js.key_value("device-config")
    out["sensor-1.interval"] = (await kv.get("sensor-1.interval")).value
    await admin.close()
    return out


def without_own_effects(before: dict, after: dict, own_streams: set[str], own_consumers: set[tuple[str, str]]):
    """What the role may legitimately change: the messages of the streams it writes, the progress of the
    consumers it reads. Everything else must be exactly as it was."""
    def strip(snapshot):
        out = {}
        for name, s in snapshot.items():
            if not isinstance(s, dict):   # the key's value: the bucket's writer may change it
                out[name] = None if "KV_device-config" in own_streams else s
                continue
            s = dict(s, consumers={c: (None if (name, c) in own_consumers else v) for c, v in s["consumers"].items()})
            if name in own_streams:
                s.update(messages=None, last=None)
            out[name] = s
        return out
    return strip(before), strip(after)


async def attack(lab, user: str) -> tuple[list[str], list[str]]:
    """Every request the user's permissions allow, with every target as its reply and every payload; every ack and
    ack-next of a delivered message aimed the same way; every target published to directly. Returns what the
    admin saw published in STREAMS meanwhile, and what other users' inboxes received."""
    wiretap: list[str] = []
    admin = await nats.connect(lab.url, **lab.login("admin"))

    async def tap(msg):
        if msg.subject.startswith("deliver.") and (msg.reply.startswith(("$JS.ACK.", "$JS.FC.")) or msg.headers):
            return   # the push consumer's own deliveries, flow control and heartbeats
        wiretap.append(msg.subject)
    await admin.subscribe(">", cb=tap)
    others = []
    listener = await nats.connect(lab.url, **lab.login("analytics"))

    async def heard(msg):
        others.append(msg.subject)
    await listener.subscribe("_INBOX_analytics.>", cb=heard)
    await admin.flush()
    await listener.flush()

    c = await Client().connect(lab.url, **lab.login(user))
    planned = {u.name: u for u in lab.users}[user]
    for allowed in planned.permissions["publish"]["allow"]:
        subject = concrete(allowed)
        if allowed.startswith(("$JS.ACK.", "$JS.FC.")):
            continue   # answered below, on real deliveries
        for target in TARGETS:
            for payload in PAYLOADS:
                await c.nc.publish(subject, payload, reply=target)
    if planned.permissions and any(s.startswith("$JS.API.CONSUMER.MSG.NEXT.") for s in
                                   planned.permissions["publish"]["allow"]):
        stream, consumer = next(s for s in planned.permissions["publish"]["allow"]
                                if s.startswith("$JS.API.CONSUMER.MSG.NEXT.")).split(".")[-2:]
        sub = await c.nc.jetstream().pull_subscribe_bind(consumer, stream)
        for target in TARGETS:
            for msg in await sub.fetch(1, timeout=3):
                await c.nc.publish(msg.reply, b"+NXT", reply=target)
        for msg in await sub.fetch(1, timeout=3):
            await c.nc.publish(msg.reply, b"+ACK", reply=TARGETS[0])
    if "deliver.live" in planned.permissions["subscribe"]["allow"]:
        push = await c.nc.subscribe("deliver.live")
        for target in TARGETS:
            msg = await push.next_msg(timeout=3)
            await c.nc.publish(msg.reply, b"+NXT", reply=target)
            await c.nc.publish(msg.reply, b"+ACK", reply=target)
    for target in TARGETS:   # straight at the target: refused, or in its own account where nothing acts
        await c.nc.publish(target, b"")
    await c.nc.flush()
    await asyncio.sleep(1.0)
    await c.nc.close()
    await listener.close()
    await admin.close()
    return wiretap, others


@pytest.mark.parametrize("user, own_streams, own_consumers", [
    ("iot-devices", {"iot-sensors"}, set()),
    ("analytics", set(), {("sensors", "analytics")}),
    ("viewer", set(), {("iot-sensors", "live")}),
    ("thermostat", set(), set()),
    ("provisioner", {"KV_device-config"}, set()),
    ("monitor", set(), set()),
])
def test_no_role_reaches_jetstream_or_another_user_through_any_reply(lab, user, own_streams, own_consumers):
    before = run(state(lab))
    wiretap, others = run(attack(lab, user))
    after = run(state(lab))
    expected, got = without_own_effects(before, after, own_streams, own_consumers)
    assert got == expected
    if user != "provisioner":
        assert after["sensor-1.interval"] == before["sensor-1.interval"]
    assert "stolen" not in after and not any("stolen" in s["consumers"] for s in after.values() if isinstance(s, dict))
    # nothing the user sent or was answered with arrived on JetStream's management API, another stream or an inbox
    acted = [s for s in wiretap if s.startswith(("$JS.API.STREAM.", "$JS.API.CONSUMER.CREATE", "$JS.API.CONSUMER.DELETE",
                                                 "$O.", "logs.", "events.", "_INBOX_", "deliver."))
             or (s.startswith("$KV.") and user != "provisioner")]
    assert acted == [], acted
    assert others == [] or user == "analytics", others


def test_operators_live_with_the_streams_and_applications_alone(lab):
    accounts = {u.name: u.account for u in lab.users}
    assert {n for n, a in accounts.items() if a == STREAMS_ACCOUNT} == {"admin", "nats-box", "backup"}
    assert accounts["monitor"] == "monitor"
    assert all(accounts[n] == n for n in ROLES)

    async def go():
        # an application's account has no JetStream at all: not even its own account information
        c = await Client().connect(lab.url, **lab.login("iot-devices"))
        with pytest.raises(nats.errors.TimeoutError):
            await c.nc.request("$JS.API.INFO", b"", timeout=0.5)
        assert await c.refused("$JS.API.INFO")
        await c.nc.close()
    run(go())


# --------------------------------------------------------------------------- moving the streams

SETTLE_TOOLS = {"sh": "dash", "mv": "mv", "mkdir": "mkdir", "rmdir": "rmdir"}   # busybox's, in nats-box


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def make(root: Path, paths: list[str]) -> None:
    for p in paths:
        (root / p).mkdir(parents=True, exist_ok=True)
        (root / p / "msgs").write_text(p)


@pytest.mark.parametrize("account, present, code, expected", [
    # auth turned on: the whole global account's folder becomes STREAMS'
    ("STREAMS", ["$G/streams/a", "$G/streams/b"], 0, ["STREAMS/streams/a", "STREAMS/streams/b"]),
    # turned off again
    ("$G", ["STREAMS/streams/a"], 0, ["$G/streams/a"]),
    # already there (every start after the first), and a fresh server
    ("STREAMS", ["STREAMS/streams/a"], 0, ["STREAMS/streams/a"]),
    ("STREAMS", [], 0, []),
    # a reload before the restart made STREAMS' folder: the streams join it one by one
    ("STREAMS", ["$G/streams/a", "STREAMS/streams/new"], 0, ["STREAMS/streams/a", "STREAMS/streams/new"]),
    # the same stream in both: neither is touched, and the start stops
    ("STREAMS", ["$G/streams/a", "$G/streams/b", "STREAMS/streams/a"], 1,
     ["$G/streams/a", "STREAMS/streams/a", "STREAMS/streams/b"]),
])
def test_the_settle_script_in_nats_box_tools(tmp_path, account, present, code, expected):
    js = tmp_path / "jetstream"
    js.mkdir()
    make(js, present)
    box = image_path(tmp_path / "box", SETTLE_TOOLS, {})
    done = subprocess.run([f"{box}/sh", "-c", SETTLE_SCRIPT], env={"PATH": box, "JETSTREAM_DIR": str(js),
                                                                    "ACCOUNT": account},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == code, done.stderr
    streams = {p for p in tree(js) if p.count("/") == 2}
    assert streams == set(expected)
    for p in expected:   # each folder kept its content
        assert (js / p / "msgs").read_text().split("/")[-1] == p.split("/")[-1]
    if code:
        assert "exist in both account $G and account STREAMS" in done.stderr and " a " in done.stderr


def test_a_clash_stops_the_local_start_saying_which(tmp_path):
    make(tmp_path / "jetstream", ["$G/streams/a", "STREAMS/streams/a"])
    with pytest.raises(LocalServerError, match=r"stream\(s\) a exist in both"):
        settle_account(str(tmp_path), STREAMS_ACCOUNT)


def test_auth_on_then_off_keeps_messages_sequences_consumers_and_keys(tmp_path):
    """The guide's running data, auth turned on over it (the streams move to STREAMS), roles changed, then auth
    turned off again (back to the global account): every message at its sequence, every ack floor, every key."""
    from dataclasses import replace

    from tests.stack.test_auth import Homelab as Lab
    open_lab = Lab(tmp_path / "lab", homelab_raw())
    from streams.local.server import start_server

    async def fill(url, login):
        nc = await nats.connect(url, **login)
        js = nc.jetstream()
        for i in range(20):
            await js.publish(f"iot.sensors.t{i}", str(i).encode())
        sub = await js.pull_subscribe_bind("analytics", "sensors")
        for m in await sub.fetch(7, timeout=5):
            await m.ack_sync()
        await (await js.key_value("device-config")).put("sensor-1.interval", b"30")
        await nc.close()

    async def snapshot(url, login):
        nc = await nats.connect(url, **login)
        js = nc.jetstream()
        info = await js.stream_info("sensors")
        consumer = await js.consumer_info("sensors", "analytics")
        msgs = [(await js.get_msg("sensors", seq)).data for seq in range(1, 21)]
        value = (await (await js.key_value("device-config")).get("sensor-1.interval")).value
        await nc.close()
        return (info.state.first_seq, info.state.last_seq, msgs, consumer.ack_floor.stream_seq,
                consumer.num_pending, value)

    with start_server(open_lab.settings, open_lab.layout, open_lab.workdir) as server:
        apply_catalog(open_lab.catalog, server.client_url, buckets=load_all_buckets(open_lab.raw))
        close_all_clients()
        run(fill(server.client_url, {}))
        before = run(snapshot(server.client_url, {}))
    assert before[3] == 7 and before[4] == 13

    for raw in (secured_raw(), secured_raw({**USERS, "reader": {"keyValues": {"device-config": "read"}}})):
        lab = Lab(tmp_path / "lab", raw)
        lab.layout = replace(lab.layout, client_port=open_lab.layout.client_port,
                             monitoring_port=open_lab.layout.monitoring_port)
        lab.start()
        try:
            assert run(snapshot(lab.url, lab.login("admin"))) == before
            assert (tmp_path / "lab" / "data" / "jetstream" / "STREAMS" / "streams" / "sensors").is_dir()
            assert not (tmp_path / "lab" / "data" / "jetstream" / "$G").exists()
        finally:
            lab.server.stop()
    with start_server(open_lab.settings, open_lab.layout, open_lab.workdir) as server:
        assert run(snapshot(server.client_url, {})) == before


# --------------------------------------------------------------------------- what the deployment renders for it

@pytest.mark.parametrize("raw, account", [({}, "$G"), (secured_raw(), "STREAMS")])
def test_the_nats_pod_settles_the_streams_before_the_server_starts(raw, account):
    from render.manifests import JS_VOLUME, stateful_set
    from stack.settings import load_settings
    settings = load_settings(raw)
    pod = stateful_set(settings)["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "settle-account" and init["image"] == settings.images.nats_box
    assert init["command"] == ["sh", "-c", SETTLE_SCRIPT]
    assert {e["name"]: e["value"] for e in init["env"]} == {"JETSTREAM_DIR": "/data/jetstream", "ACCOUNT": account}
    assert init["volumeMounts"] == [{"name": JS_VOLUME, "mountPath": "/data"}]


def test_turning_auth_on_restarts_the_pod_and_a_cluster_is_warned_instead():
    """A reload would leave the streams in the old account (render/settle_account.py): the account is in the
    restart checksum. Deployments with auth off keep the checksum they had, so upgrading restarts nothing."""
    import hashlib

    from render.manifests import stateful_set
    from render.nats_conf import CLUSTER_OPTION, RESTART_ONLY_OPTIONS, cluster_layout, nats_conf_options
    from stack.settings import load_settings
    plain, secured = load_settings({}), load_settings(secured_raw())

    def annotations(s):
        return stateful_set(s)["spec"]["template"]["metadata"]["annotations"]
    assert annotations(plain) != annotations(secured)
    opts = nats_conf_options(plain, cluster_layout(plain))
    before = hashlib.sha256(json.dumps({k: opts[k] for k in (*RESTART_ONLY_OPTIONS, CLUSTER_OPTION) if k in opts},
                                       sort_keys=True).encode()).hexdigest()
    assert before in annotations(plain).values()
    cluster = load_settings({**secured_raw(), "replicas": 3, "cluster": {"standaloneStreams": "none",
                                                                         "kubernetesNodes": 3}})
    assert "initContainers" not in stateful_set(cluster)["spec"]["template"]["spec"]
    assert [w for w in cluster.warnings if "does not move them between the global account and STREAMS" in w]
    assert not [w for w in secured.warnings if "global account and STREAMS" in w]


def _answer(server: str, *streams: tuple[str, str | None, int]) -> dict:
    return {"server": {"name": server}, "data": {"stream_detail": [
        {"name": n, "cluster": {"leader": leader} if leader else {}, "state": {"messages": m}} for n, leader, m in streams]}}


@pytest.mark.parametrize("answers, expected", [
    ([_answer("n0", ("a", "n0", 5))], {"a": 5}),
    # a replica answers first, the leader after: the leader's state counts
    ([_answer("n1", ("a", "n0", 4)), _answer("n0", ("a", "n0", 5))], {"a": 5}),
    ([_answer("n0", ("a", "n0", 5)), _answer("n1", ("a", "n0", 4))], {"a": 5}),
    # an R1 stream only its node hosts, and a standalone server (no leader named)
    ([_answer("n0", ("a", "n0", 5)), _answer("n2", ("b", "n2", 7))], {"a": 5, "b": 7}),
    ([_answer("solo", ("a", None, 3))], {"a": 3}),
    ([{"server": {"name": "n0"}, "error": {"description": "x"}}, _answer("n1", ("a", "n1", 1))], {"a": 1}),
])
def test_the_monitor_merges_each_servers_jsz_keeping_the_leaders(answers, expected):
    from streams.cli.view import merge_jsz
    assert {name: d["state"]["messages"] for name, d in merge_jsz(answers).items()} == expected
