"""Taking over the guide's running NATS (Helm chart 1.1.12, server 2.10.11, installed by Flux): the new
StatefulSet must find the chart's data on the same claim, the server upgrade must keep every message and
every consumer's progress, and the provider must adopt what exists without losing a message.

Facts about the chart and the homelab, read at their sources:
- nats-io/k8s, tag nats-1.1.12, helm/charts/nats: the JetStream claim template is named
  `config.jetstream.fileStore.pvc.name`, default `<fullname>-js` (values.yaml), the StatefulSet `<fullname>`,
  so release `nats` has the claim `nats-js-nats-0`; files/stateful-set/nats-container.yaml mounts it at
  `fileStore.dir`; files/config/jetstream.yaml writes `store_dir: <fileStore.dir>`.
- brannn/homelab-foundations clusters/um890/nats/helmrelease.yaml: `fileStore.dir: /data`, image tag 2.10.11,
  runAsUser/runAsGroup/fsGroup 1000 with fsGroupChangePolicy OnRootMismatch (commit 580d781 replaced the
  earlier root init container that chowned /data to 1000:1000 by that fsGroup): the files are 1000's.
The old server here is nats-server 2.10.26 (the oldest 2.10 on PyPI; 2.10.x share the storage format).
"""
import asyncio
import os
import subprocess
import time
from pathlib import Path

import nats

from render import manifests
from render.nats_conf import ConfLayout
from stack.catalog import load_catalog
from stack.settings import load_settings
from streams.cli import main
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from streams.local.server import free_port, start_server
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.stack.test_settings import homelab_raw

OLD_SERVER = Path(os.environ.get("NATS_SERVER_2_10_BIN", ROOT / ".venv" / "nats-server-2.10" / "bin" / "nats-server"))

CHART_RELEASE = "nats"
CHART_CLAIM_TEMPLATE = f"{CHART_RELEASE}-js"
CHART_FILESTORE_DIR = "/data"          # the homelab's fileStore.dir: mount path and store_dir
CHART_RUN_AS = 1000                     # the homelab's runAsUser / runAsGroup / fsGroup


def chart_nats_conf(claim: Path, run_dir: Path, port: int, http_port: int) -> str:
    """What chart 1.1.12 renders for the homelab's values (files/config/config.yaml, jetstream.yaml), with
    the claim's mount (/data) and /var/run/nats mapped to folders here and the ports to free ones."""
    return f"""server_name: $SERVER_NAME
lame_duck_grace_period: 10s
lame_duck_duration: 30s
pid_file: {run_dir}/nats.pid
port: {port}
http_port: {http_port}
jetstream {{
  max_memory_store: 1073741824
  store_dir: {claim}
  max_file_store: 10737418240
}}
"""


class OldServer:
    def __init__(self, claim: Path, run_dir: Path):
        assert OLD_SERVER.exists(), (f"{OLD_SERVER} is missing: `make test` installs it "
                                     "(requirements-upgrade-from.txt into .venv/nats-server-2.10)")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        conf = run_dir / "chart.conf"
        conf.write_text(chart_nats_conf(claim, run_dir, self.port, self.http_port))
        self.log = run_dir / "old.log"
        self.process = subprocess.Popen([str(OLD_SERVER), "-c", str(conf)], env={**os.environ, "SERVER_NAME": "nats-0"},
                                        stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        self.url = f"nats://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                import urllib.request
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the 2.10 server did not start: {self.log.read_text()[-2000:]}")

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


def new_layout(claim: Path, run_dir: Path) -> ConfLayout:
    """Our rendered config with the claim where the StatefulSet mounts it (store_dir = the mount path)."""
    return ConfLayout(host="127.0.0.1", client_port=free_port(), monitoring_port=free_port(), store_dir=str(claim),
                      pid_file=str(run_dir / "nats.pid"), server_name="nats-0")


def guide_streams(raw: RawJetStream) -> None:
    """The guide's streams and consumers as its `nats stream add` / `nats consumer add` commands make them."""
    day, hour = 24 * 3600 * 10**9, 3600 * 10**9
    for name, subjects, storage, extra in [
            ("iot-sensors", ["sensors.>"], "file", {"max_age": day, "max_msgs": -1}),
            ("app-logs", ["logs.>"], "file", {"max_age": 7 * day, "max_bytes": 10**9}),
            ("events", ["events.>"], "memory", {"max_age": hour}),
            ("sensors", ["iot.>"], "file", {"max_age": 30 * day})]:
        reply = raw.api(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": subjects, "storage": storage,
                                                         "retention": "limits", "num_replicas": 1, **extra})
        assert "error" not in reply, reply
    for stream, name, cfg in [
            ("iot-sensors", "processor", {"filter_subject": "sensors.temperature.>", "ack_policy": "explicit",
                                          "deliver_policy": "all", "max_deliver": 3}),
            ("sensors", "analytics", {"filter_subject": "iot.sensors.>", "ack_policy": "explicit",
                                      "deliver_policy": "all"})]:
        reply = raw.api(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                        {"stream_name": stream, "config": {"durable_name": name, **cfg}})
        assert "error" not in reply, reply
    raw.publish("sensors.temperature.room1", [b'{"value": 21.5}'] * 30)
    raw.publish("sensors.humidity.room1", [b'{"value": 40}'] * 10)
    raw.publish("logs.app.error", [b"boom"] * 7)
    raw.publish("iot.sensors.garage", [b"1"] * 12)
    raw.publish("events.door", [b"open"] * 2)


def fetch_and_ack(url: str, stream: str, durable: str, subject: str, n: int) -> None:
    async def go():
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
        for msg in await sub.fetch(n, timeout=5):
            await msg.ack_sync()
        await nc.close()
    asyncio.run(go())


def state(url: str) -> dict:
    raw = RawJetStream(url)
    out = {}
    for name in ("iot-sensors", "app-logs", "sensors"):
        s = raw.stream(name)["state"]
        out[name] = (s["messages"], s["bytes"], s["first_seq"], s["last_seq"])
    for stream, name in (("iot-sensors", "processor"), ("sensors", "analytics")):
        c = raw.consumer(stream, name)
        out[f"{stream}/{name}"] = (c["delivered"]["stream_seq"], c["ack_floor"]["stream_seq"], c["num_pending"])
    return out


def test_the_new_statefulset_mounts_the_charts_claim_where_the_chart_did():
    settings = load_settings(homelab_raw())
    ss = manifests.stateful_set(settings)
    [template] = ss["spec"]["volumeClaimTemplates"]
    # Same claim: <template>-<statefulset>-0 as the chart names it.
    assert f"{template['metadata']['name']}-{ss['metadata']['name']}-0" == f"{CHART_CLAIM_TEMPLATE}-{CHART_RELEASE}-0"
    [nats_container] = [c for c in ss["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    [mount] = [m for m in nats_container["volumeMounts"] if m["name"] == template["metadata"]["name"]]
    # Same place: mounted where the chart mounted it, and the server's store_dir is that mount, so both
    # servers use <claim>/jetstream.
    assert mount["mountPath"] == CHART_FILESTORE_DIR == settings.jetstream.store_dir
    assert 'store_dir: "/data"' in manifests.config_map(settings)["data"]["nats.conf"]
    # Same owner: the chart's server wrote the files as 1000:1000; ours runs as 1000 with fsGroup 1000.
    pod = ss["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == CHART_RUN_AS
    # The claim exists already: its size in the template does not matter, and reuse keeps its data.
    assert ss["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_takeover_keeps_every_message_and_every_consumers_progress(tmp_path, s3_env, capsys):
    claim = tmp_path / "claim"   # the Longhorn volume nats-js-nats-0, mounted at /data by both
    settings = load_settings(homelab_raw())

    # Before: the chart's 2.10 server holds the guide's streams, with a consumer part way through.
    old = OldServer(claim, tmp_path / "chart")
    try:
        guide_streams(RawJetStream(old.url))
        fetch_and_ack(old.url, "iot-sensors", "processor", "sensors.temperature.>", 11)
        before = state(old.url)
        # Step 1 of the takeover: a backup of every stream with this project's tool, against the 2.10 server.
        assert main(["backup", "--all", "--bucket", s3_env, "--server", old.url]) == 0
        out = capsys.readouterr().out
        assert all(f"s3://{s3_env}/nats/{s}/" in out for s in ("iot-sensors", "app-logs", "sensors"))
    finally:
        old.stop()
    assert (claim / "jetstream" / "$G" / "streams" / "iot-sensors").is_dir()  # where the chart's server wrote

    # After: our rendered config, pinned server, same files; then the provider adopts the catalog.
    layout = new_layout(claim, tmp_path / "new")
    with start_server(settings, layout, tmp_path / "new") as server:
        assert state(server.client_url) == before
        # A standalone server keeps nothing of a memory stream across a restart, not even its definition
        # (the chart's pod restarts lose it the same way): `pulumi up` makes it again, empty.
        assert "error" in RawJetStream(server.client_url).api("$JS.API.STREAM.INFO.events")
        applied = apply_catalog(load_catalog(homelab_raw()["streams"], store_limits=settings.jetstream.store_limits),
                                server.client_url)
        close_all_clients()
        assert {a.name for a in applied} >= {"iot-sensors", "app-logs", "sensors", "iot-sensors/processor",
                                             "sensors/analytics"}
        assert all(a.messages_removed == 0 for a in applied)
        assert RawJetStream(server.client_url).stream("events")["config"]["storage"] == "memory"
        assert state(server.client_url) == before  # adopted: nothing lost, progress kept
        # The consumer carries on from where it was on the old server.
        fetch_and_ack(server.client_url, "iot-sensors", "processor", "sensors.temperature.>", 5)
        after = state(server.client_url)
        assert after["iot-sensors/processor"][1] == before["iot-sensors/processor"][1] + 5
        RawJetStream(server.client_url).publish("sensors.temperature.room2", [b"new"] * 3)
        upgraded = state(server.client_url)

    # Rollback on the same volume (chart reinstalled, 2.10 again): the data written by 2.15 is readable.
    # This worked here for these streams; the release notes document downgrades one minor at a time
    # (2.12 -> 2.11.9+, 2.11 -> 2.10 rebuilds stream state), so the README makes a Longhorn snapshot the
    # primary rollback and the backup of step 1 the last resort.
    old = OldServer(claim, tmp_path / "chart-again")
    try:
        assert state(old.url) == upgraded
    finally:
        old.stop()
