"""Memory streams come back after a restart with no one running `pulumi up` (render/memory_streams.py): the
nats-box container's script, run here with a PATH holding only what nats-box has (busybox sh, wget, sleep, mkdir,
and a `nats` stand-in speaking to the real server as natscli v0.4.0 does), against a real nats-server that is
restarted; the rendered ConfigMap and Deployment under the mocks."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from render import memory_streams
from stack.catalog import load_catalog
from stack.settings import load_settings
from streams.local.apply import apply_catalog
from streams.local.server import free_port, local_layout, start_server
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT, as_manifest, run_program, stack_config
from tests.render.test_backup_job import image_path

NATS_BOX_TOOLS = {"sh": "dash", "wget": "wget", "sleep": "sleep", "mkdir": "mkdir"}
CATALOG = {"events": {"subjects": ["events.>"], "storage": "memory", "maxAge": "1h",
                      "consumers": {"audit": {"ackPolicy": "explicit", "filterSubject": "events.audit.>"}}},
           "logs": {"subjects": ["logs.>"]}}


def wait_for(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def exists(raw, stream, consumer=None) -> bool:
    found = raw.consumer(stream, consumer) if consumer else raw.stream(stream)
    return "error" not in found


@pytest.fixture
def lab(tmp_path, homelab_settings):
    catalog = load_catalog(CATALOG)
    folder = tmp_path / "declarations"
    folder.mkdir()
    for name, text in memory_streams.declarations(catalog).items():
        (folder / name).write_text(text)
    layout = local_layout(tmp_path / "server", client_port=free_port(), monitoring_port=free_port())
    return catalog, folder, layout


def test_memory_streams_and_their_consumers_come_back_after_a_restart_and_only_then(tmp_path, homelab_settings, lab):
    catalog, folder, layout = lab
    workdir = tmp_path / "server"
    path = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {"nats": "nats_shim"})
    log = tmp_path / "nats-argv.log"
    server = start_server(homelab_settings, layout, workdir)
    script = None
    try:
        apply_catalog(catalog, server.client_url)
        raw = RawJetStream(server.client_url)
        raw.publish("events.audit.login", [b"before the restart"] * 3)
        script = subprocess.Popen(
            [f"{path}/sh", "-c", memory_streams.SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": path, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
                 "DECLARATIONS": str(folder), "STATE": str(tmp_path / "state"), "INTERVAL": "1",
                 "MONITOR_URL": server.monitoring_url, "NATS_URL": server.client_url, "NATS_SHIM_ARGV_LOG": str(log)})
        assert wait_for(lambda: log.exists() and "stream info events" in log.read_text())
        server.stop()
        server = start_server(homelab_settings, layout, workdir)            # a restart: memory streams are gone
        raw = RawJetStream(server.client_url)
        assert exists(raw, "logs")                                          # the file stream is on disk
        assert wait_for(lambda: exists(raw, "events") and exists(raw, "events", "audit"))
        info = raw.stream("events")
        assert info["config"]["storage"] == "memory" and info["config"]["max_age"] == 3600 * 10**9
        assert info["config"]["metadata"]["homelab-nats.managed-by"] == "pulumi"   # the provider adopts it as its own
        assert info["state"]["messages"] == 0                               # what was in memory is gone, as stated
        assert raw.consumer("events", "audit")["config"]["filter_subject"] == "events.audit.>"
        # Deleted on purpose under the same server (pulumi up removing it): left alone.
        raw.api("$JS.API.STREAM.DELETE.events")
        calls = log.read_text().count("stream info events")
        assert wait_for(lambda: log.read_text().count("stream info events") >= calls + 3)
        assert not exists(raw, "events")
    finally:
        if script is not None:
            script.terminate()
            out, err = script.communicate(timeout=10)
        server.stop()
    assert "made memory stream events again after the server started at" in out
    assert "made consumer events/audit again" in out
    assert out.count("made memory stream events again") == 1


def test_the_script_uses_only_what_nats_box_has(tmp_path, lab):
    """No other tool: with nats-box's PATH and the server down, it keeps trying and complains of nothing missing."""
    _, folder, _ = lab
    path = image_path(tmp_path / "nats-box", NATS_BOX_TOOLS, {"nats": "nats_shim"})
    script = subprocess.Popen([f"{path}/sh", "-c", memory_streams.SCRIPT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={"PATH": path, "DECLARATIONS": str(folder), "STATE": str(tmp_path / "state"),
                                   "INTERVAL": "1", "MONITOR_URL": f"http://127.0.0.1:{free_port()}",
                                   "NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    time.sleep(2.5)
    script.terminate()
    out, err = script.communicate(timeout=10)
    assert script.returncode == 0 and "not found" not in err and out == ""


def test_the_declarations_are_what_the_provider_sends():
    from streams.provider import ConsumerProvider, StreamProvider, _mark
    from streams.resources import consumer_props, stream_props
    catalog = load_catalog(CATALOG)
    data = memory_streams.declarations(catalog)
    assert data["streams"] == "events stream-0.json\n" and data["consumers"] == "events audit stream-0-consumer-0.json\n"
    [events] = [s for s in catalog if s.name == "events"]
    assert json.loads(data["stream-0.json"]) == _mark(StreamProvider()._wire(stream_props(events, jetstream_servers=1)))
    assert json.loads(data["stream-0-consumer-0.json"]) == _mark(ConsumerProvider()._wire(consumer_props(
        events.consumers[0])))


def test_nats_box_runs_the_script_beside_it_for_the_homelabs_events_stream():
    run = run_program(stack_config("homelab"))
    cm = as_manifest(run.one("kubernetes:core/v1:ConfigMap", "nats-memory-streams"))
    assert cm["data"]["streams"] == "events stream-0.json\n"
    pod = as_manifest(run.one("kubernetes:apps/v1:Deployment", "nats-box"))["spec"]["template"]["spec"]
    box, sidecar = pod["containers"]
    assert sidecar["name"] == "memory-streams" and sidecar["image"] == box["image"]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["MONITOR_URL"] == "http://nats:8222" and env["NATS_CONTEXT"] == "default"
    assert {"name": "memory-streams", "configMap": {"name": "nats-memory-streams"}} in pod["volumes"]
    assert sidecar["command"] == ["sh", "-c", memory_streams.SCRIPT]


def test_no_memory_stream_no_container():
    settings = load_settings({})
    catalog = load_catalog({"logs": {"subjects": ["logs.>"]}})
    pod = memory_streams.nats_box_deployment(settings, catalog)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["nats-box"]


def test_check_says_a_memory_stream_was_made_again_and_what_was_lost(tmp_path, homelab_settings, lab, capsys):
    from stack.units import parse_server_time
    from streams.cli import main
    catalog, folder, layout = lab
    workdir = tmp_path / "server"
    stack = tmp_path / "Pulumi.mem.yaml"
    stack.write_text(json.dumps({"config": {"homelab-nats:streams": CATALOG}}))
    with start_server(homelab_settings, layout, workdir) as server:
        apply_catalog(catalog, server.client_url)
    time.sleep(1.1)
    with start_server(homelab_settings, layout, workdir) as server:          # restarted: `events` is gone
        argv = ["check", "--server", server.client_url, "--monitor", server.monitoring_url, "--stack", str(stack),
                "--json", "--no-round-trip"]
        assert main(argv) == 2
        [missing] = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["subject"] == "stream events"]
        assert "a memory stream a restart forgot" in missing["message"] and "within a minute" in missing["message"]
        apply_catalog(catalog, server.client_url)                            # what the container (or an up) does
        assert main(argv) == 0
        findings = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["subject"] == "stream events"]
    [note] = [f for f in findings if "memory stream" in f["message"]]
    assert "after the server (re)started" in note["message"] and "messages from before that start are gone" in \
        note["message"]
    assert parse_server_time(note["numbers"]["created"]) > parse_server_time(note["numbers"]["server_start"])
