"""`python -m streams cluster grow|shrink|status` on real processes, as the homelab runs them around `pulumi up`.

The `up` is played as Kubernetes plays it: the standalone server stops, and the three nodes start from the rendered
cluster configs, nats-0 on the standalone server's own volume (the one that would delete its streams 30 s after
joining: clustering.md). Shrink: every stream onto n0 at R1, the other peers removed, then n0 alone without the cluster
block keeps every message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from stack.loader import load_stack
from stack.settings import load_settings
from streams import growth
from streams.cli import cluster as cli
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import local_cluster_layouts, local_layout, start_cluster, start_server
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.streams.test_data_loss import fetch_and_ack

pytestmark = pytest.mark.server
FILE_STREAMS = ("analytics", "app-logs", "iot-sensors", "sensors", "KV_device-config", "OBJ_firmware")


def command(*args, env=None, timeout=180):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    return subprocess.run([sys.executable, "-m", "streams", "cluster", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**environ, **(env or {})})


def system_env(workdir):
    password = json.loads((workdir / "auth" / "passwords.json").read_text())["sys"]
    return {"NATS_SYSTEM_PASSWORD": password}


def the_up(settings, workdir, single_store):
    """What `pulumi up` with replicas: 3 does to the pods: nats-0 keeps its volume, nats-1 and nats-2 start empty."""
    layouts = local_cluster_layouts(workdir, 3)
    layouts[0] = replace(layouts[0], store_dir=single_store)
    return start_cluster(settings, layouts, workdir)


def homelab_with_traffic(settings, workdir):
    """The single server with the homelab's catalog, messages, and a consumer part way through."""
    stack = load_stack("homelab")
    single = start_server(settings, local_layout(workdir / "single"), workdir / "single")
    applied = apply_catalog(stack.catalog, single.client_url, jetstream_servers=1, buckets=stack.buckets)
    close_all_clients()
    assert not [a for a in applied if a.action == "refused"]
    raw = RawJetStream(single.client_url)
    raw.publish("sensors.temperature.room1", [b"t%d" % i for i in range(40)])
    raw.publish("logs.app", [b"l"] * 7)
    raw.publish("iot.sensors.a", [b"i"] * 11)
    fetch_and_ack(single.client_url, "iot-sensors", "processor", 15)
    return single, raw


def state_of(raw, streams):
    """Messages, bytes and sequences (an empty stream's first sequence is 0 or 1 as it was made: not data)."""
    out = {}
    for name in streams:
        state = raw.stream(name)["state"]
        keys = ("messages", "bytes", "last_seq") + (("first_seq",) if state["messages"] else ())
        out[name] = {k: state[k] for k in keys}
    return out


def test_grow_carries_every_stream_into_the_cluster_and_shrink_brings_them_back_to_one_node(tmp_path):
    settings = load_settings({})
    single, raw = homelab_with_traffic(settings, tmp_path)
    folder = tmp_path / "grow"
    try:
        before = state_of(raw, FILE_STREAMS)
        floor = raw.consumer("iot-sensors", "processor")["ack_floor"]["stream_seq"]
        first = command("grow", "--server", single.client_url, "--folder", str(folder))
        assert first.returncode == cli.WAITING_FOR_UP, first.stderr
        assert "grow: memory stream events cannot be snapshotted" in first.stdout
        assert "pulumi config set --path homelab-nats:cluster.standaloneStreams snapshotted" in first.stdout
        again = command("grow", "--server", single.client_url, "--folder", str(folder))   # nothing moved: no work
        assert again.returncode == cli.WAITING_FOR_UP and "snapshotted" not in again.stdout.split("every file")[0]
    finally:
        single.stop()

    servers = the_up(settings, tmp_path, str(tmp_path / "single" / "data"))
    urls = ",".join(s.client_url for s in servers)
    try:
        grown = command("grow", "--server", urls, "--folder", str(folder), env=system_env(tmp_path))
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert "grow: restored iot-sensors" in grown.stdout and "grow: done" in grown.stdout
        raw = RawJetStream(servers[2].client_url)
        assert state_of(raw, FILE_STREAMS) == before
        for name in FILE_STREAMS:
            info = raw.stream(name)
            assert info["config"]["num_replicas"] == 3 and len(info["cluster"]["replicas"]) == 2, name
        consumer = raw.consumer("iot-sensors", "processor")
        assert consumer["ack_floor"]["stream_seq"] == floor and consumer["num_pending"] == 40 - floor
        status = command("status", "--server", urls, env=system_env(tmp_path))
        assert status.returncode == 0 and "meta leader: n" in status.stdout
        assert "stream iot-sensors: R3, 40 messages" in status.stdout

        # Shrink: onto n0, R1, the other peers out of the meta group.
        raw.publish("logs.app", [b"after"] * 3)
        before = state_of(raw, FILE_STREAMS)
        shrunk = command("shrink", "--server", urls, env=system_env(tmp_path))
        assert shrunk.returncode == 0, shrunk.stdout + shrunk.stderr
        assert "shrink: peer n2 removed" in shrunk.stdout and "shrink: peer n1 removed" in shrunk.stdout, shrunk.stdout
        for name in FILE_STREAMS:
            info = raw.stream(name)
            assert (info["config"]["num_replicas"], info["cluster"]["leader"]) == (1, "n0"), name
    finally:
        for server in servers:
            server.stop()
    # `pulumi up` with replicas: 1: nats-0 restarts without the cluster block, on its own volume.
    alone = local_layout(tmp_path / "n0", server_name="nats-0")
    with start_server(settings, replace(alone, store_dir=str(tmp_path / "single" / "data")), tmp_path / "n0") as n0:
        raw = RawJetStream(n0.client_url)
        assert state_of(raw, FILE_STREAMS) == before
        assert raw.consumer("iot-sensors", "processor")["ack_floor"]["stream_seq"] == floor


def test_an_interrupted_grow_resumes_at_every_step_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """Ctrl-C after each recorded step in turn (and between a restore and its record): run again, it goes on."""
    settings = load_settings({})
    single = start_server(settings, local_layout(tmp_path / "single"), tmp_path / "single")
    raw = RawJetStream(single.client_url)
    for name, n in (("a", 5), ("b", 9)):
        raw.api(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": [f"{name}.>"]})
        raw.publish(f"{name}.x", [b"m"] * n)
    folder = tmp_path / "grow"
    real_save = growth.save_progress
    saves = {"left": 0}

    def interrupting_save(path, progress):
        if saves["left"] == 0:
            raise KeyboardInterrupt   # before the record: the step happened, its record did not
        saves["left"] -= 1
        real_save(path, progress)
    monkeypatch.setattr(growth, "save_progress", interrupting_save)

    def run_until(url, env, expected):
        monkeypatch.setattr(os, "environ", {**{k: v for k, v in os.environ.items() if not k.startswith("NATS_")},
                                            **env})
        args = cli.argparse.Namespace(server=url, stack=None, folder=folder, replicas=3, timeout=60.0,
                                      cluster_command="grow", monitor=None)
        interrupted = 0
        for allowed in range(0, 30):   # each run records one step more before it is stopped
            saves["left"] = allowed
            try:
                code = cli.run(args)
            except KeyboardInterrupt:
                interrupted += 1
                continue
            assert code == expected
            return interrupted
        raise AssertionError("the grow never finished")
    try:
        interruptions = run_until(single.client_url, {}, cli.WAITING_FOR_UP)
        assert interruptions == 2   # after each snapshot (each taken again: its record was lost)
    finally:
        single.stop()
    servers = the_up(settings, tmp_path, str(tmp_path / "single" / "data"))
    try:
        interruptions = run_until(",".join(s.client_url for s in servers), system_env(tmp_path), 0)
        assert interruptions >= 3   # after a restore (before its record), an adoption, a raise
        assert "grow: a was restored before an interruption" in capsys.readouterr().out
        raw = RawJetStream(servers[1].client_url)
        assert [raw.stream(n)["state"]["messages"] for n in ("a", "b")] == [5, 9]
        assert [raw.stream(n)["config"]["num_replicas"] for n in ("a", "b")] == [3, 3]
    finally:
        for server in servers:
            server.stop()


def test_grow_refuses_a_stream_written_to_in_the_cluster_before_its_restore(tmp_path):
    settings = load_settings({})
    single = start_server(settings, local_layout(tmp_path / "single"), tmp_path / "single")
    RawJetStream(single.client_url).api("$JS.API.STREAM.CREATE.a", {"name": "a", "subjects": ["a.>"]})
    RawJetStream(single.client_url).publish("a.x", [b"m"] * 4)
    folder = tmp_path / "grow"
    try:
        assert command("grow", "--server", single.client_url, "--folder", str(folder)).returncode == \
            cli.WAITING_FOR_UP
    finally:
        single.stop()
    servers = the_up(settings, tmp_path, str(tmp_path / "single" / "data"))
    try:
        raw = RawJetStream(servers[0].client_url)
        assert raw.api("$JS.API.STREAM.CREATE.a", {"name": "a", "subjects": ["a.>"]}).get("error") is None
        raw.publish("a.x", [b"new"] * 2)
        urls = ",".join(s.client_url for s in servers)
        refused = command("grow", "--server", urls, "--folder", str(folder), env=system_env(tmp_path))
        assert refused.returncode == 1 and "holds 2 messages" in refused.stderr and "Nothing was changed" in \
            refused.stderr
        assert raw.stream("a")["state"]["messages"] == 2   # as it was
    finally:
        for server in servers:
            server.stop()
