"""`python -m streams check` against the local mode and against broken setups; the local mode itself."""
import contextlib
import json
import signal
import socket
import subprocess
import sys

import pytest

from render.nats_conf import render_nats_conf
from stack.buckets import load_all_buckets
from stack.catalog import load_catalog
from streams.cli import main
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import free_port, local_layout, start_server
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.stack.test_settings import homelab_raw


@pytest.fixture
def homelab(nats_server, homelab_settings):
    server = nats_server()
    apply_catalog(load_catalog(homelab_raw()["streams"]), server.client_url, buckets=load_all_buckets(homelab_raw()))
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
    # The committed stack has no S3 keys yet, but that is the cluster's CronJob's matter: not against this server.
    assert code == 0 and report["status"] == "ok", report
    assert [f for f in report["findings"] if f["level"] != "ok"] == []
    subjects = {f["subject"] for f in report["findings"]}
    assert {"server", "jetstream", "stream iot-sensors", "consumer iot-sensors/processor", "consumer sensors/analytics"} \
        <= subjects
    # The figures behind each message, for machines.
    [declared] = [f for f in report["findings"] if f["subject"] == "stream iot-sensors" and "as declared" in f["message"]]
    assert declared["numbers"]["messages"] == before["iot-sensors"] and declared["numbers"]["consumers"] == 3
    lag = [f for f in report["findings"] if f["subject"] == "consumer iot-sensors/processor"][-1]["numbers"]
    assert lag["pending"] == 1 and lag["ack_pending"] == 0
    stores = [f["numbers"] for f in report["findings"] if f["numbers"].get("store")]
    assert {n["store"] for n in stores} == {"memory", "file"} and all(n["limit_bytes"] > 0 for n in stores)
    trips = [f for f in report["findings"] if f["message"].startswith("round trip: published")]
    assert len(trips) == 4  # every file-backed stream; `events` is memory
    after = {s: raw.stream(s)["state"]["messages"] for s in before}
    assert after == before  # no probe is left behind


def test_missing_backup_keys_are_a_finding_against_the_cluster_only():
    from stack.settings import load_settings
    from streams.cli.check import cluster_only_findings
    from streams.cli.target import Target
    settings = load_settings(homelab_raw())
    for url, expected in (("nats://127.0.0.1:4333", 0), ("nats://localhost:4333,nats://[::1]:4334", 0),
                          ("nats://10.0.0.248:4222", 1), ("tls://nats.home.lan:4222", 1)):
        target = Target(url, None, "--server", "homelab")
        findings = cluster_only_findings(target, settings, present_keys=set())
        assert len(findings) == expected, url
        if expected:
            assert findings[0].subject == "backups" and "backupAccessKeyId" in findings[0].message
    assert cluster_only_findings(Target("nats://10.0.0.248:4222", None, "--server", "homelab"), settings,
                                 present_keys={"backupAccessKeyId", "backupSecretAccessKey"}) == []


@pytest.fixture
def with_backup_keys(monkeypatch):
    """The stack file as it is once `pulumi config set --secret backup…` has run (encrypted values)."""
    from streams.cli import check as health_check
    real = health_check.read_stack_file
    monkeypatch.setattr(health_check, "read_stack_file", lambda stack: {
        **real(stack), "backupAccessKeyId": {"secure": "v1:abc"}, "backupSecretAccessKey": {"secure": "v1:def"}})


def test_human_output(homelab, capsys, with_backup_keys):
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


def test_monitor_url_from_the_environment(homelab, capsys, monkeypatch, with_backup_keys):
    """`make dev` on moved ports prints NATS_URL and NATS_MONITOR_URL; check follows both."""
    monkeypatch.setenv("NATS_URL", homelab.client_url)
    monkeypatch.setenv("NATS_MONITOR_URL", homelab.monitoring_url)
    code = main(["check", "--json", "--no-round-trip"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["monitor"] == homelab.monitoring_url, report


def test_consumer_lag_warns(homelab, capsys):
    RawJetStream(homelab.client_url).publish("sensors.temperature.room1", [b"x"] * 5)
    code, report = check(homelab, "--lag-warn", "3", "--no-round-trip", capsys=capsys)
    assert code == 1 and report["status"] == "warn"
    warned = [f for f in report["findings"] if f["level"] == "warn"]
    assert any(f["subject"] == "consumer iot-sensors/processor" and "5 pending" in f["message"] for f in warned)


def test_stopped_server_fails(homelab, capsys):
    homelab.stop()
    code, report = check(homelab, capsys=capsys)
    [failed] = [f for f in report["findings"] if f["level"] == "fail"]
    assert code == 2 and "unreachable" in failed["message"]
    assert "NATS_MONITOR_URL" in failed["message"] and "make dev" in failed["message"]  # how to point elsewhere


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
    assert "created stream iot-sensors" in first.stdout and f'"clientUrl": "nats://127.0.0.1:{port}"' in first.stdout
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


def stack_file(tmp_path, streams: dict, name: str = "trial", extra: str = "") -> str:
    """A stack file like the homelab's with another catalog (the local mode takes a path for --stack)."""
    import yaml
    doc = yaml.safe_load((ROOT / "Pulumi.homelab.yaml").read_text())
    doc["config"]["homelab-nats:streams"] = streams
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump(doc) + extra)
    return str(path)


def test_a_second_dev_on_the_same_folder_is_refused_and_names_the_first(tmp_path):
    port, http_port = free_port(), free_port()
    first = subprocess.Popen([sys.executable, "-m", "streams", "dev", "--port", str(port), "--http-port",
                              str(http_port), "--data-dir", str(tmp_path / "dev")],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in first.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert any("Ctrl-C stops it" in line for line in lines), first.stderr.read() if first.poll() else lines
        conf_before = (tmp_path / "dev" / "nats.conf").read_text()
        second = dev(tmp_path, free_port(), free_port())
        assert second.returncode == 2
        assert f"is in use by pid {first.pid} (python -m streams dev --stack homelab, nats://127.0.0.1:{port})" \
            in second.stderr, second.stderr
        assert (tmp_path / "dev" / "nats.conf").read_text() == conf_before  # nothing of the first was touched
        # The first prints the one line that points the other commands at it.
        next(first.stdout)
        export = next(first.stdout)
        assert export.strip() == f"export NATS_URL=nats://127.0.0.1:{port} NATS_MONITOR_URL=http://127.0.0.1:{http_port}"
    finally:
        first.terminate()
        first.wait(30)
    assert first.returncode == 0
    assert not (tmp_path / "dev" / "nats.pid").exists()  # no stale pid file
    again = dev(tmp_path, port, http_port)  # the lock went with the first
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "dev" / "nats.pid").exists()


def test_dev_reports_what_pulumi_up_would_do_with_undeclared_objects(tmp_path, homelab_settings):
    catalog = {"keep": {"subjects": ["keep.>"], "consumers": {"c1": {"ackPolicy": "explicit"}}},
               "full": {"subjects": ["full.>"]}, "empty": {"subjects": ["empty.>"]}}
    port, http_port = free_port(), free_port()
    first = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, catalog))
    assert first.returncode == 0, first.stderr
    layout = local_layout(tmp_path / "dev", client_port=port, monitoring_port=http_port)
    with start_server(homelab_settings, layout, tmp_path / "dev") as server:
        RawJetStream(server.client_url).publish("full.a", [b"x"] * 4)
    smaller = {"keep": {"subjects": ["keep.>"]}}
    second = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, smaller))
    assert second.returncode == 0, second.stderr
    out = second.stdout
    assert "stream full is no longer declared: `pulumi up` would delete it, and refuses to while it holds its 4 " \
           "messages" in out
    assert "stream empty is no longer declared: `pulumi up` would delete it (it is empty)" in out
    assert "consumer keep/c1 is no longer declared: `pulumi up` would delete it" in out
    with start_server(homelab_settings, layout, tmp_path / "dev") as server:  # and make dev kept them all
        assert RawJetStream(server.client_url).stream("full")["state"]["messages"] == 4


def test_dev_says_how_many_messages_a_replacement_deleted(tmp_path, homelab_settings):
    port, http_port = free_port(), free_port()
    first = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, {"s": {"subjects": ["s.>"]}}))
    assert first.returncode == 0, first.stderr
    layout = local_layout(tmp_path / "dev", client_port=port, monitoring_port=http_port)
    with start_server(homelab_settings, layout, tmp_path / "dev") as server:
        RawJetStream(server.client_url).publish("s.a", [b"x"] * 3)
    changed = {"s": {"subjects": ["s.>"], "storage": "memory"}}
    refused = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, changed))
    assert refused.returncode == 1 and "refused stream s: " in refused.stderr and "3 messages" in refused.stderr
    allowed = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, {"s": {**changed["s"], "allowDataLoss": True}}))
    assert allowed.returncode == 0, allowed.stderr
    assert "replaced stream s (storage: file -> memory cannot change in place); 3 messages deleted (allowDataLoss)" \
        in allowed.stdout


def test_dev_says_what_it_created_updated_and_left_alone(tmp_path):
    port, http_port = free_port(), free_port()
    catalog = {"a": {"subjects": ["a.>"], "consumers": {"c": {"ackPolicy": "explicit"}}}, "b": {"subjects": ["b.>"]}}
    first = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, catalog))
    assert first.returncode == 0, first.stderr
    assert {"created stream a", "created consumer a/c", "created stream b"} <= set(first.stdout.splitlines())
    catalog["a"] = {**catalog["a"], "maxAge": "1h", "description": "now described",
                    "consumers": {"c": {"ackPolicy": "explicit", "maxDeliver": 5}}}
    second = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, catalog))
    lines = set(second.stdout.splitlines())
    assert {"updated stream a: description, maxAge", "updated consumer a/c: maxDeliver", "unchanged stream b"} <= lines
    assert not [line for line in lines if line.startswith("applied ")]


@contextlib.contextmanager
def foreground_dev(port: int, http_port: int, data_dir, *extra):
    """`python -m streams dev` in the foreground, as a person runs it: yields once it printed its export line (with
    what it printed up to there); stopped with Ctrl-C after. Its stderr is in `.stderr` of the yielded list."""
    proc = subprocess.Popen([sys.executable, "-m", "streams", "dev", "--port", str(port), "--http-port", str(http_port),
                             "--data-dir", str(data_dir), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    printed = _Printed()
    try:
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("  export NATS_URL="):
                break
        printed.process = proc
        yield printed
    finally:
        proc.send_signal(signal.SIGINT)
        _, printed.stderr = proc.communicate(timeout=30)


class _Printed(list):
    process = None
    stderr = ""


def test_a_refused_change_keeps_the_server_serving_the_last_good_state(tmp_path):
    """In the foreground a refusal is printed and the server keeps serving, the other objects applied."""
    port, http_port = free_port(), free_port()
    first = dev(tmp_path, port, http_port, "--stack", stack_file(tmp_path, {"s": {"subjects": ["s.>"]},
                                                                          "t": {"subjects": ["t.>"]}}))
    assert first.returncode == 0, first.stderr
    path = stack_file(tmp_path, {"s": {"subjects": ["s.>"], "maxMsgs": 5}, "t": {"subjects": ["t.>"], "maxAge": "1h"}})
    with foreground_dev(port, http_port, tmp_path / "dev", "--stack", path):
        raw = RawJetStream(f"nats://127.0.0.1:{port}")
        assert raw.stream("t")["config"]["max_age"] == 3600 * 10**9           # the other change was applied
        assert raw.stream("s")["config"]["max_msgs"] == 5
        raw.publish("s.a", [b"x"] * 20)
    smaller = stack_file(tmp_path, {"s": {"subjects": ["s.>"], "maxMsgs": 2}, "t": {"subjects": ["t.>"], "maxAge": "2h"}})
    with foreground_dev(port, http_port, tmp_path / "dev", "--stack", smaller) as out:
        assert out.process.poll() is None                                     # still serving
        raw = RawJetStream(f"nats://127.0.0.1:{port}")
        assert raw.stream("s")["state"]["messages"] == 5                       # the refused change left it as it was
        assert raw.stream("t")["config"]["max_age"] == 2 * 3600 * 10**9        # the rest applied
    assert "refused stream s: stream 's': refusing to lower maxMsgs: it would delete 3 of its 5 messages" in out.stderr
    assert "make dev keeps serving the last good state" in out.stderr and "backup s --to " in out.stderr
    assert "updated stream t: maxAge" in "".join(out)


@pytest.mark.parametrize("text, expected", [
    ("config:\n  homelab-nats:namespace: nats\n  homelab-nats:namespace: other\n",
     "Pulumi.bad.yaml, line 3, column 3: the key 'homelab-nats:namespace' is given twice (first on line 2)"),
    ("config:\n  homelab-nats:ports:\n    client: 4222\n   monitoring: 8222\n", "Pulumi.bad.yaml, line 4"),
    ("config:\n  homelab-nats:streams: {a: [\n", "Pulumi.bad.yaml, line 3"),
    ("- just\n- a list\n", "Pulumi.bad.yaml: expected a `config:` mapping"),
])
def test_stack_file_errors_name_the_file_and_line(tmp_path, text, expected):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    result = dev(tmp_path, free_port(), free_port(), "--stack", str(path))
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_near_miss_project_prefix_warns(tmp_path):
    path = stack_file(tmp_path, {"s": {"subjects": ["s.>"]}}, extra="  homelab-nat:replicas: 1\n")
    result = dev(tmp_path, free_port(), free_port(), "--stack", path)
    assert result.returncode == 0, result.stderr
    assert "'homelab-nat:replicas' is in namespace 'homelab-nat', not 'homelab-nats'" in result.stderr
    assert "did you mean homelab-nats:replicas?" in result.stderr


def test_make_dev_applies_to_its_own_server_whatever_nats_url_says(nats_server, monkeypatch):
    """A shell that exported another server's NATS_URL (an earlier make dev's line, or the homelab's) must not
    receive the catalog: the local apply names its server."""
    from streams.local.server import free_port

    server = nats_server()
    elsewhere = f"nats://127.0.0.1:{free_port()}"   # nothing listens there
    monkeypatch.setenv("NATS_URL", elsewhere)
    applied = apply_catalog(load_catalog(homelab_raw()["streams"]), server.client_url)
    close_all_clients()
    assert {a.action for a in applied} == {"created"}
    assert RawJetStream(server.client_url).stream("iot-sensors")["config"]["name"] == "iot-sensors"
