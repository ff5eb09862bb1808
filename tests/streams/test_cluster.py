"""A three-node JetStream cluster on this machine, from the configs the one renderer makes (render/nats_conf.py
cluster block): it elects, and an R3 stream keeps every acknowledged message when a node is killed (kill -9) while a
publisher with Nats-Msg-Id publishes with acks. Counted by sequence and message id afterwards, on every node.
Facts behind it: ../shared/reference/clustering.md (measured on the pinned 2.15.1)."""
from __future__ import annotations

import asyncio
import json
import time

import nats
import nats.errors
import pytest

from stack.settings import load_settings
from streams.local.server import local_cluster_layouts, start_cluster, start_server, wait_cluster_ready

pytestmark = pytest.mark.server


@pytest.fixture
def cluster(tmp_path):
    settings = load_settings({})
    layouts = local_cluster_layouts(tmp_path, 3)
    servers = start_cluster(settings, layouts, tmp_path)
    yield settings, layouts, servers, tmp_path
    for server in servers:
        server.stop()


def test_the_rendered_cluster_elects_and_every_node_routes_to_the_others(cluster):
    _, layouts, servers, _ = cluster
    leader = wait_cluster_ready(servers)
    assert leader in {"n0", "n1", "n2"}
    for server in servers:
        routes = server.monitor("/routez")["routes"]
        assert {r["remote_name"] for r in routes} == {"n0", "n1", "n2"} - {server.layout.server_name}
        assert server.monitor("/varz")["cluster"]["name"] == "homelab-local"


def _stream_on(server, name: str) -> dict:
    """The node's own replica of the stream (/jsz with stream detail)."""
    jsz = server.monitor("/jsz?streams=true")
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == name:
                return stream["state"]
    return {}


async def _publish_through_a_kill(urls: list[str], count: int, kill, after: int) -> dict[str, int]:
    """Publish `count` messages with message ids, retrying each until acked; call `kill` after `after` acks.
    Returns message id -> acked sequence."""
    nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = nc.jetstream(timeout=2)
    acked: dict[str, int] = {}
    try:
        loop = asyncio.get_running_loop()
        for i in range(count):
            msg_id = f"m-{i}"
            # Bounded by time, not by tries: "no responders" comes back at once while a new stream leader is elected
            # (about 6 s here, longer on a loaded machine: bench/cluster.py), so a count of tries ran out first.
            deadline = loop.time() + 60
            while True:
                try:
                    ack = await js.publish("r3.data", msg_id.encode(), headers={"Nats-Msg-Id": msg_id})
                    acked[msg_id] = ack.seq
                    break
                except (TimeoutError, nats.errors.Error):
                    if loop.time() > deadline:
                        raise AssertionError(f"{msg_id} was never acknowledged") from None
                    await asyncio.sleep(0.1)
            if len(acked) == after:
                await asyncio.to_thread(kill)
    finally:
        await nc.close()
    return acked


async def _read_all(url: str, stream: str) -> list[tuple[int, str]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("r3.>", ordered_consumer=True, stream=stream)
        out = []
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except nats.errors.TimeoutError:
                return out
            out.append((msg.metadata.sequence.stream, msg.headers["Nats-Msg-Id"]))
    finally:
        await nc.close()


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_an_r3_stream_keeps_every_acked_message_when_a_node_is_killed(cluster, victim):
    settings, layouts, servers, workdir = cluster
    urls = [s.client_url for s in servers]

    async def make_stream():
        nc = await nats.connect(urls)
        try:
            js = nc.jetstream()
            for _ in range(60):   # right after an election: "no suitable peers", or no answer (clustering.md)
                try:
                    await js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3, duplicate_window=60)
                    break
                except (TimeoutError, nats.errors.Error):
                    await asyncio.sleep(0.5)
            return (await js.stream_info("R3")).cluster.leader
        finally:
            await nc.close()
    leader = asyncio.run(make_stream())
    names = [layout.server_name for layout in layouts]
    index = names.index(leader) if victim == "leader" else next(i for i, n in enumerate(names) if n != leader)

    def kill():
        servers[index].kill()   # SIGKILL: no lame duck, no flush

    acked = asyncio.run(_publish_through_a_kill(urls, 600, kill, after=200))
    servers[index] = start_server(settings, layouts[index], workdir / str(layouts[index].server_name),
                                  standalone=False)
    wait_cluster_ready(servers)
    # Every acknowledged message at its acknowledged sequence, no duplicate, read back through the cluster...
    read = asyncio.run(_read_all(urls[0], "R3"))
    assert sorted(read) == sorted((seq, msg_id) for msg_id, seq in acked.items())
    assert len({msg_id for _, msg_id in read}) == len(read) == 600
    # ...and each node's own replica comes to hold all of them (plain /healthz tolerates a replica a few messages
    # behind, so each is given a few seconds to catch up).
    for server in servers:
        deadline = time.monotonic() + 15
        while (state := _stream_on(server, "R3")).get("last_seq") != max(acked.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (state.get("messages"), state.get("last_seq")) == (600, max(acked.values())), json.dumps(state)


def test_make_dev_runs_the_homelab_as_a_three_node_cluster(tmp_path):
    """`make dev ARGS="--servers 3"`: three servers from the rendered cluster configs on consecutive ports, the
    catalog applied once, one export line naming every node; the stream answers through any of them."""
    import subprocess
    import sys

    from streams.local.server import free_port
    from tests.provider_harness import RawJetStream
    from tests.pulumi_harness import ROOT
    base = {name: free_port() for name in ("port", "http", "route")}
    while any(not _free_run(base[k], 3) for k in base):   # three consecutive free ports each
        base = {name: free_port() for name in ("port", "http", "route")}
    done = subprocess.run([sys.executable, "-m", "streams", "dev", "--servers", "3", "--once", "--port",
                           str(base["port"]), "--http-port", str(base["http"]), "--route-port", str(base["route"]),
                           "--data-dir", str(tmp_path / "dev")], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    urls = ",".join(f"nats://127.0.0.1:{base['port'] + i}" for i in range(3))
    assert f"  export NATS_URL={urls} " in done.stdout and "created stream iot-sensors" in done.stdout
    for i in range(3):
        conf = (tmp_path / "dev" / f"n{i}" / "nats.conf").read_text()
        assert f'server_name: "n{i}"' in conf and f'listen: "127.0.0.1:{base["route"] + i}"' in conf
    # Started again from the same folders, the cluster has kept the catalog (the meta layer and R1 streams on disk).
    layouts = local_cluster_layouts(tmp_path / "dev", 3, client_port=base["port"], monitoring_port=base["http"],
                                    route_port=base["route"])
    servers = start_cluster(load_settings({}), layouts, tmp_path / "dev")
    try:
        assert "error" not in RawJetStream(servers[2].client_url).stream("iot-sensors")
    finally:
        for server in servers:
            server.stop()


def _free_run(first: int, count: int) -> bool:
    from streams.local.server import port_is_free
    return first + count < 65535 and all(port_is_free("127.0.0.1", first + i) for i in range(count))


def test_make_dev_grows_the_single_servers_data_into_the_cluster_without_losing_a_message(tmp_path):
    """The guide's streams on the single local server, a consumer part way through; then `make dev --servers 3`:
    every message at its sequence, the consumer's ack floor, and the single server's folder as it was."""
    import subprocess
    import sys

    from streams.growth import load_progress
    from streams.local.grow import GROW_FOLDER, needs_growing
    from streams.local.server import free_port
    from tests.provider_harness import RawJetStream
    from tests.pulumi_harness import ROOT
    from tests.streams.test_data_loss import fetch_and_ack

    def dev(*extra):
        return subprocess.run([sys.executable, "-m", "streams", "dev", "--once", "--data-dir", str(tmp_path / "dev"),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=180)
    single_ports = ["--port", str(free_port()), "--http-port", str(free_port())]
    first = dev(*single_ports)
    assert first.returncode == 0, first.stderr
    with start_server(load_settings({}), _single_layout(tmp_path / "dev"), tmp_path / "dev") as single:
        raw = RawJetStream(single.client_url)
        raw.publish("sensors.temperature.room1", [b"t%d" % i for i in range(40)])
        raw.publish("logs.app", [b"l"] * 7)
        fetch_and_ack(single.client_url, "iot-sensors", "processor", 15)
        before = {name: raw.stream(name)["state"] for name in ("iot-sensors", "app-logs")}
        floor = raw.consumer("iot-sensors", "processor")["ack_floor"]["stream_seq"]
    single_files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "dev" / "data").rglob("*") if p.is_file())
    assert needs_growing(tmp_path / "dev")

    base = {name: free_port() for name in ("port", "http", "route")}
    while any(not _free_run(base[k], 3) for k in base):
        base = {name: free_port() for name in ("port", "http", "route")}
    grown = dev("--servers", "3", "--port", str(base["port"]), "--http-port", str(base["http"]),
                "--route-port", str(base["route"]))
    assert grown.returncode == 0, grown.stderr
    assert "grow: snapshotted iot-sensors" in grown.stdout and "grow: restored iot-sensors" in grown.stdout
    state = load_progress(tmp_path / "dev" / GROW_FOLDER)
    assert not needs_growing(tmp_path / "dev") and set(state.restored) >= {"iot-sensors", "app-logs"}
    # The single server's folder is untouched (its copy is the way back).
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "dev" / "data").rglob("*") if p.is_file()) == single_files

    layouts = local_cluster_layouts(tmp_path / "dev", 3, client_port=base["port"], monitoring_port=base["http"],
                                    route_port=base["route"])
    servers = start_cluster(load_settings({}), layouts, tmp_path / "dev")
    try:
        raw = RawJetStream(servers[1].client_url)
        for name, state_before in before.items():
            after = raw.stream(name)["state"]
            assert {k: after[k] for k in ("messages", "bytes", "first_seq", "last_seq")} == \
                {k: state_before[k] for k in ("messages", "bytes", "first_seq", "last_seq")}, name
        assert raw.consumer("iot-sensors", "processor")["ack_floor"]["stream_seq"] == floor
        assert raw.consumer("iot-sensors", "processor")["num_pending"] == 40 - floor
        # The memory stream (gone with the single server's restart already) is declared again by the catalog.
        assert raw.stream("events")["config"]["storage"] == "memory"
    finally:
        for server in servers:
            server.stop()


def _single_layout(workdir):
    from streams.local.server import local_layout
    return local_layout(workdir)


@pytest.mark.parametrize("stop_after", ["grow: snapshotted app-logs", "grow: restored app-logs"])
def test_an_interrupted_grow_resumes_and_loses_nothing(tmp_path, stop_after):
    """Ctrl-C in the middle (after the snapshots, or after the first restore): the recorded state resumes it, every
    stream comes into the cluster once, whole."""
    from streams.local.grow import grow
    from streams.local.server import local_layout
    from streams.local.users import local_system_login
    from tests.provider_harness import RawJetStream
    settings = load_settings({})
    with start_server(settings, local_layout(tmp_path), tmp_path) as single:
        raw = RawJetStream(single.client_url)
        for name, n in (("app-logs", 5), ("iot-sensors", 9)):
            raw.api(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": [f"{name}.>"]})
            raw.publish(f"{name}.x", [b"m"] * n)
    servers = start_cluster(settings, local_cluster_layouts(tmp_path, 3), tmp_path)
    urls = ",".join(s.client_url for s in servers)
    system = local_system_login(tmp_path)
    try:
        def interrupt(line):
            if line.startswith(stop_after):
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            grow(settings, tmp_path, urls, say=interrupt, system=system)
        said = []
        state = grow(settings, tmp_path, urls, say=said.append, system=system)
        assert sorted(state.restored) == ["app-logs", "iot-sensors"]
        raw = RawJetStream(servers[0].client_url)
        assert raw.stream("app-logs")["state"]["messages"] == 5 and raw.stream("iot-sensors")["state"]["messages"] == 9
    finally:
        for server in servers:
            server.stop()
