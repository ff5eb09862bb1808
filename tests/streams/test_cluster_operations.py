"""Everyday operations against a three-node cluster on this machine: the providers apply the catalog with R3 streams,
`check` and `report` show the meta leader, the replicas and their lag, a backup of an R3 stream restores into one
node and into a cluster, and a rolling restart in lame duck mode gated on plain /healthz keeps every acked message."""
from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import nats
import nats.errors
import nats.js.errors
import pytest
import yaml

from stack.loader import load_stack
from stack.settings import load_settings
from streams.backup.snapshot import restored_replicas
from streams.cli import main
from streams.cli.check import FAIL, OK, WARN, cluster_findings
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import local_cluster_layouts, local_layout, start_cluster, start_server
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT

pytestmark = pytest.mark.server


def write_grown_stack(folder) -> str:
    """The homelab's stack file as a grown cluster's: three nodes, the sensor streams at R3."""
    doc = yaml.safe_load((ROOT / "Pulumi.homelab.yaml").read_text())
    config = doc["config"]
    config["homelab-nats:replicas"] = 3
    config["homelab-nats:cluster"] = {"standaloneStreams": "snapshotted"}
    for name in ("iot-sensors", "sensors"):
        config["homelab-nats:streams"][name]["replicas"] = 3
    path = folder / "Pulumi.grown.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    stack_file = write_grown_stack(workdir)
    stack = load_stack(stack_file)
    servers = start_cluster(load_settings({}), local_cluster_layouts(workdir, 3), workdir)
    urls = ",".join(s.client_url for s in servers)
    applied = apply_catalog(stack.catalog, servers[0].client_url, jetstream_servers=3, buckets=stack.buckets)
    close_all_clients()
    assert {a.action for a in applied} == {"created"}, [a.line() for a in applied]
    # Through another node than the one that made the streams: until the stream's subjects' interest has crossed
    # the routes to it, a publish there has no responders (and stores nothing), so the first one is retried.
    deadline = time.monotonic() + 30
    while True:
        try:
            RawJetStream(servers[1].client_url).publish("sensors.temperature.room1", [b"t0"])
            break
        except nats.js.errors.NoStreamResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    RawJetStream(servers[1].client_url).publish("sensors.temperature.room1", [b"t%d" % i for i in range(1, 25)])
    yield servers, urls, stack_file
    for server in servers:
        server.stop()


def test_the_providers_make_r3_streams_in_the_cluster(cluster):
    servers, _, _ = cluster
    raw = RawJetStream(servers[2].client_url)
    info = raw.stream("iot-sensors")
    assert info["config"]["num_replicas"] == 3 and len(info["cluster"]["replicas"]) == 2
    assert raw.stream("app-logs")["config"]["num_replicas"] == 1


def test_check_and_report_show_the_meta_leader_and_the_replicas(cluster, capsys):
    servers, urls, _ = cluster
    code = main(["check", "--server", urls, "--monitor", servers[0].monitoring_url, "--json", "--no-round-trip",
                 "--stack", cluster[2]])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    [meta] = [f for f in out["findings"] if f["subject"] == "cluster"]
    assert meta["numbers"]["cluster_size"] == 3 and meta["numbers"]["meta_leader"] in {"n0", "n1", "n2"}
    [r3] = [f for f in out["findings"] if f["subject"] == "stream iot-sensors" and "R3" in f["message"]]
    assert r3["level"] == OK and sorted(r3["numbers"]["peers"]) == ["n0", "n1", "n2"] and r3["numbers"]["lag"] == 0
    assert main(["report", "--server", urls]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "LEADER" in header and "REPLICA LAG" in header
    [row] = [line for line in table.splitlines() if line.startswith("iot-sensors ")]
    assert row.split()[-2] in {"n0", "n1", "n2"} and row.split()[-1] == "0"


@pytest.mark.parametrize("jsz, infos, expected", [
    ({}, [], []),   # standalone: nothing about a cluster
    ({"meta_cluster": {"leader": "n0", "cluster_size": 3, "replicas": [{"name": "n1"}, {"name": "n2"}]}}, [],
     [(OK, "cluster")]),
    ({"meta_cluster": {"cluster_size": 3}}, [], [(FAIL, "cluster")]),
    ({"meta_cluster": {"leader": "n0", "cluster_size": 3, "replicas": [{"name": "n1"}, {"name": "n2", "offline": True}]}},
     [{"config": {"name": "s", "num_replicas": 3}, "cluster": {"name": "c", "leader": "n0", "replicas": [
         {"name": "n1", "current": True}, {"name": "n2", "current": False, "offline": True, "lag": 40}]}},
      {"config": {"name": "one", "num_replicas": 1}, "cluster": {"name": "c", "leader": "n1"}}],
     [(OK, "cluster"), (WARN, "cluster"), (WARN, "stream s")]),
    ({"meta_cluster": {"leader": "n0", "cluster_size": 3}},
     [{"config": {"name": "s", "num_replicas": 3}, "cluster": {"name": "c", "replicas": []}}],
     [(OK, "cluster"), (FAIL, "stream s")]),
])
def test_cluster_findings(jsz, infos, expected):
    assert [(f.level, f.subject) for f in cluster_findings(jsz, infos)] == expected


@pytest.mark.parametrize("backed_up, clustered, expected", [(3, False, 1), (1, False, 1), (3, True, 3), (1, True, 1)])
def test_restored_replicas(backed_up, clustered, expected):
    assert restored_replicas(backed_up, clustered) == expected


def test_a_backup_of_an_r3_stream_restores_into_one_node_and_into_a_cluster(cluster, tmp_path, capsys):
    servers, urls, _ = cluster
    raw = RawJetStream(servers[0].client_url)
    before = raw.stream("iot-sensors")["state"]
    assert main(["backup", "iot-sensors", "--to", str(tmp_path / "b"), "--server", urls]) == 0
    capsys.readouterr()
    with start_server(load_settings({}), local_layout(tmp_path / "one"), tmp_path / "one") as one:
        assert main(["restore", "iot-sensors", "--from", str(tmp_path / "b"), "--server", one.client_url]) == 0
        assert "restored at R1" in capsys.readouterr().err
        single = RawJetStream(one.client_url).stream("iot-sensors")
        assert single["config"]["num_replicas"] == 1
        assert {k: single["state"][k] for k in ("messages", "last_seq", "consumer_count")} == \
            {k: before[k] for k in ("messages", "last_seq", "consumer_count")}
    assert main(["restore", "iot-sensors", "--from", str(tmp_path / "b"), "--server", urls, "--as", "iot-copy",
                 "--subjects", "copy.>"]) == 0
    copy = raw.stream("iot-copy")
    assert copy["config"]["num_replicas"] == 3 and copy["state"]["messages"] == before["messages"]
    assert raw.api("$JS.API.STREAM.DELETE.iot-copy")["success"]
    # verify restores into a scratch standalone server: an R3 backup verifies too
    assert main(["verify", "iot-sensors", "--from", str(tmp_path / "b")]) == 0


def _healthz(server) -> int:
    try:
        with urllib.request.urlopen(server.monitoring_url + "/healthz", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_a_rolling_restart_in_lame_duck_mode_keeps_every_acked_message(tmp_path):
    """n2, n1, n0 in turn: SIGUSR2 (lame duck, as the pod's preStop does), wait for it to exit, start it again, and
    go on to the next only when it answers plain /healthz 200 (what the startup probe gates on). A publisher with
    Nats-Msg-Id retries throughout; afterwards every acked message is on every node, once."""
    settings = load_settings({})
    layouts = local_cluster_layouts(tmp_path, 3)
    servers = start_cluster(settings, layouts, tmp_path)
    urls = [s.client_url for s in servers]
    stop = threading.Event()
    acked: dict[str, int] = {}

    async def publish():
        nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream(timeout=2)
        await js.add_stream(name="ROLL", subjects=["roll.>"], num_replicas=3, duplicate_window=120)
        i = 0
        while not stop.is_set():
            msg_id = f"m{i}"
            try:
                ack = await js.publish("roll.x", msg_id.encode(), headers={"Nats-Msg-Id": msg_id})
                acked[msg_id] = ack.seq
                i += 1
                await asyncio.sleep(0.01)   # about 100 a second: enough traffic, and few to count afterwards
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.05)   # the same id again: the window absorbs a duplicate
        await nc.close()
    publisher = threading.Thread(target=lambda: asyncio.run(publish()))
    publisher.start()
    try:
        time.sleep(1.0)
        for index in (2, 1, 0):
            server = servers[index]
            server.process.send_signal(signal.SIGUSR2)   # lame duck: the preStop's `nats-server -sl=ldm`
            server.process.wait(60)
            servers[index] = start_server(settings, layouts[index], tmp_path / str(layouts[index].server_name),
                                          wait=False, standalone=False)
            deadline = time.monotonic() + 60
            while _healthz(servers[index]) != 200:
                assert time.monotonic() < deadline, servers[index].log_tail()
                time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        publisher.join(60)
    try:
        assert len(acked) > 50
        for server in servers:   # every node holds every acked message at its sequence, once
            async def read(url=server.client_url):
                nc = await nats.connect(url)
                try:
                    info = await nc.jetstream().stream_info("ROLL")
                    got = {}
                    for seq in range(1, info.state.last_seq + 1):
                        msg = await nc.jetstream().get_msg("ROLL", seq, direct=False)
                        got[msg.data.decode()] = seq
                    return info.state.messages, got
                finally:
                    await nc.close()
            count, got = asyncio.run(read())
            assert count == len(got) == len(acked), server.layout.server_name
            assert all(got[msg_id] == seq for msg_id, seq in acked.items())
    finally:
        for server in servers:
            server.stop()
