"""`python -m streams check` against the local mode and against broken setups; the local mode itself."""
import json
import socket
import subprocess
import sys

import pytest

from components.local_server import free_port, local_layout, start_server
from components.nats_conf import render_nats_conf
from streams.apply import apply_catalog
from streams.catalog import load_catalog
from streams.cli import main
from streams.jetstream import close_all_clients
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.test_settings import homelab_raw


@pytest.fixture
def homelab(nats_server, homelab_settings):
    server = nats_server()
    apply_catalog(load_catalog(homelab_raw()["streams"]), server.client_url)
    close_all_clients()
    return server


def check(server, *extra, capsys):
    code = main(["check", "--server", server.client_url, "--monitor", server.monitoring_url, "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_healthy_local_homelab(homelab, capsys):
    raw = RawJetStream(homelab.client_url)
    raw.publish("sensors.temperature.room1", [b'{"value": 22.5}'])
    before = {s: raw.stream(s)["state"]["messages"] for s in ("iot-sensors", "app-logs", "sensors", "analytics")}
    code, report = check(homelab, capsys=capsys)
    assert code == 0 and report["status"] == "ok", report
    subjects = {f["subject"] for f in report["findings"]}
    assert {"server", "jetstream", "stream iot-sensors", "consumer iot-sensors/processor", "consumer sensors/analytics"} \
        <= subjects
    trips = [f for f in report["findings"] if f["message"].startswith("round trip: published")]
    assert len(trips) == 4  # every file-backed stream; `events` is memory
    after = {s: raw.stream(s)["state"]["messages"] for s in before}
    assert after == before  # no probe is left behind


def test_human_output(homelab, capsys):
    code = main(["check", "--server", homelab.client_url, "--monitor", homelab.monitoring_url, "--no-round-trip"])
    out = capsys.readouterr().out
    assert code == 0 and "OK   stream iot-sensors: as declared" in out and out.rstrip().endswith("overall: OK")


def test_missing_stream_and_drift_fail(homelab, capsys):
    raw = RawJetStream(homelab.client_url)
    raw.api("$JS.API.STREAM.DELETE.analytics")
    cfg = raw.stream("app-logs")["config"]
    raw.api("$JS.API.STREAM.UPDATE.app-logs", {**cfg, "max_age": 3600 * 10**9})
    code, report = check(homelab, capsys=capsys)
    assert code == 2 and report["status"] == "fail"
    fails = {f["subject"]: f["message"] for f in report["findings"] if f["level"] == "fail"}
    assert "missing on the server" in fails["stream analytics"]
    assert "drift" in fails["stream app-logs"] and "max_age" in fails["stream app-logs"]


def test_consumer_lag_warns(homelab, capsys):
    RawJetStream(homelab.client_url).publish("sensors.temperature.room1", [b"x"] * 5)
    code, report = check(homelab, "--lag-warn", "3", "--no-round-trip", capsys=capsys)
    assert code == 1 and report["status"] == "warn"
    warned = [f for f in report["findings"] if f["level"] == "warn"]
    assert any(f["subject"] == "consumer iot-sensors/processor" and "5 pending" in f["message"] for f in warned)


def test_stopped_server_fails(homelab, capsys):
    homelab.stop()
    code, report = check(homelab, capsys=capsys)
    assert code == 2 and any("unreachable" in f["message"] for f in report["findings"])


def test_jetstream_disabled_fails(homelab_settings, tmp_path, capsys):
    layout = local_layout(tmp_path)
    conf = render_nats_conf(homelab_settings, layout)
    conf = conf[:conf.index("jetstream {")]  # the same server without JetStream
    with start_server(homelab_settings, layout, tmp_path, conf_text=conf, wait=False) as server:
        import time
        for _ in range(100):
            try:
                server.monitor("/varz")
                break
            except OSError:
                time.sleep(0.05)
        code, report = check(server, capsys=capsys)
    assert code == 2
    assert any(f["level"] == "fail" and "JetStream" in f["message"] for f in report["findings"])


def dev(tmp_path, port, http_port, *extra):
    return subprocess.run([sys.executable, "-m", "streams", "dev", "--once", "--port", str(port), "--http-port",
                           str(http_port), "--data-dir", str(tmp_path / "dev"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_local_mode_is_idempotent_and_keeps_messages(tmp_path, homelab_settings):
    port, http_port = free_port(), free_port()
    first = dev(tmp_path, port, http_port)
    assert first.returncode == 0, first.stderr
    assert "applied stream iot-sensors" in first.stdout and f'"clientUrl": "nats://127.0.0.1:{port}"' in first.stdout
    layout = local_layout(tmp_path / "dev", client_port=port, monitoring_port=http_port)
    with start_server(homelab_settings, layout, tmp_path / "dev") as server:
        raw = RawJetStream(server.client_url)
        raw.publish("sensors.temperature.room1", [b"kept"] * 3)
        created = raw.stream("iot-sensors")["created"]
    second = dev(tmp_path, port, http_port)
    assert second.returncode == 0, second.stderr
    with start_server(homelab_settings, layout, tmp_path / "dev") as server:
        info = RawJetStream(server.client_url).stream("iot-sensors")
        assert info["created"] == created and info["state"]["messages"] == 3


def test_local_mode_reports_a_taken_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        result = dev(tmp_path, taken, free_port())
    assert result.returncode == 2 and f"port {taken} on 127.0.0.1 is already in use" in result.stderr


def test_local_mode_other_stack(tmp_path):
    result = dev(tmp_path, free_port(), free_port(), "--stack", "nope")
    assert result.returncode == 2 and "no stack file Pulumi.nope.yaml" in result.stderr
