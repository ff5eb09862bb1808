"""`homelab-nats:replicas: 3`: what the pods get (the cluster block, spread, the system user), and the pods'
nats.conf, rendered for Kubernetes, running as a real three-node cluster on loopback."""
import asyncio
import re

import nats
import pytest

from render.auth_conf import render_auth_conf
from render.manifests import config_map, headless_service, stateful_set
from render.nats_conf import cluster_layout, nats_conf_options, render_nats_conf
from stack.errors import SettingsError
from stack.settings import load_settings
from stack.units import parse_duration
from stack.users import SYSTEM
from streams.local.server import free_port, local_layout, start_server, wait_cluster_ready
from tests.pulumi_harness import as_manifest, encode_config, generated_password, run_program, stack_config

GROWN = {"replicas": 3, "cluster": {"standaloneStreams": "snapshotted"}}


def test_three_replicas_render_the_chart_s_cluster_block():
    settings = load_settings(GROWN)
    conf = config_map(settings)["data"]["nats.conf"]
    # nats-io/k8s helm/charts/nats files/config/cluster.yaml: name, port 6222, no_advertise, every pod's route.
    assert 'name: "nats"' in conf and 'listen: "0.0.0.0:6222"' in conf and "no_advertise: true" in conf
    assert re.findall(r'"(nats://[^"]+)"', conf) == [f"nats://nats-{i}.nats-headless:6222" for i in range(3)]
    assert "server_name: $SERVER_NAME" in conf
    assert 'include "../nats-auth/auth.conf"' in conf   # the system user, even with auth off
    ss = stateful_set(settings)
    pod = ss["spec"]["template"]["spec"]
    assert ss["spec"]["replicas"] == 3 and ss["spec"]["podManagementPolicy"] == "Parallel"
    [spread] = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"], spread["maxSkew"], spread["nodeTaintsPolicy"]) == \
        ("kubernetes.io/hostname", "DoNotSchedule", 1, "Honor")
    assert {"name": "cluster", "containerPort": 6222, "protocol": "TCP"} in pod["containers"][0]["ports"]
    # A rolling restart goes one pod at a time on plain /healthz (every replica current), not js-enabled-only, which
    # answers 200 while replicas are still behind (clustering.md, measured).
    nats_container = pod["containers"][0]
    assert nats_container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Lame duck (preStop) gets its whole duration and grace before the kubelet's SIGKILL.
    options = nats_conf_options(settings, cluster_layout(settings))
    needed = parse_duration(options["lame_duck_duration"]) + parse_duration(options["lame_duck_grace_period"])
    assert pod["terminationGracePeriodSeconds"] * 10**9 > needed
    assert nats_container["lifecycle"]["preStop"]["exec"]["command"] == ["nats-server", "-sl=ldm=/var/run/nats/nats.pid"]
    assert "cluster" in [p["name"] for p in headless_service(settings)["spec"]["ports"]]
    # A single node renders none of it.
    single = load_settings({})
    assert "cluster {" not in config_map(single)["data"]["nats.conf"]
    assert "topologySpreadConstraints" not in stateful_set(single)["spec"]["template"]["spec"]


@pytest.mark.parametrize("raw, key, words", [
    ({"replicas": 3}, "homelab-nats:replicas", "python -m streams cluster grow"),
    ({"replicas": 3, "cluster": {"standaloneStreams": "maybe"}}, "cluster.standaloneStreams", "snapshotted, none"),
    ({**GROWN, "cluster": {**GROWN["cluster"], "spread": "always"}}, "cluster.spread", "required, preferred"),
    ({**GROWN, "cluster": {**GROWN["cluster"], "kubernetesNodes": 0}}, "cluster.kubernetesNodes", "at least 1"),
])
def test_a_cluster_without_its_safeguard_is_refused(raw, key, words):
    with pytest.raises(SettingsError) as err:
        load_settings(raw)
    assert key in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("replicas, nodes, expected", [
    (1, 1, []),
    (3, 3, []),
    (3, 1, ["a node loss is then a cluster loss"]),
    (2, 2, ["adds no fault tolerance"]),
    (4, 1, ["adds no fault tolerance", "a node loss is then a cluster loss"]),
])
def test_cluster_warnings(replicas, nodes, expected):
    raw = {"replicas": replicas, "cluster": {"kubernetesNodes": nodes}}
    if replicas > 1:
        raw["cluster"]["standaloneStreams"] = "none"
    warnings = [w for w in load_settings(raw).warnings if "homelab-nats:replicas" in w]
    assert len(warnings) == len(expected) and all(e in w for e, w in zip(expected, warnings, strict=True))


def test_the_program_deploys_three_nodes_with_a_system_user():
    run = run_program({**stack_config("homelab"), **encode_config({f"homelab-nats:{k}": v for k, v in GROWN.items()})})
    assert as_manifest(run.one("kubernetes:apps/v1:StatefulSet"))["spec"]["replicas"] == 3
    patched = sorted(r.inputs["metadata"]["name"] for r in run.resources
                     if r.type == "kubernetes:core/v1:PersistentVolumeClaimPatch")
    assert patched == ["nats-js-nats-0", "nats-js-nats-1", "nats-js-nats-2"]   # every claim joins the snapshots
    sys_secret = as_manifest(run.one("kubernetes:core/v1:Secret", "nats-user-sys"))
    assert sys_secret["stringData"]["NATS_USER"] == SYSTEM
    password = generated_password(f"nats-users-{SYSTEM}-password")
    auth = as_manifest(run.one("kubernetes:core/v1:Secret", "nats-auth"))["stringData"]["auth.conf"]
    assert password in auth and "system_account: SYS" in auth and 'no_auth_user: "anonymous"' in auth
    assert password not in str(run.one("kubernetes:core/v1:ConfigMap", "nats-config").inputs)


def _pod_conf(conf: str, i: int, ports: list[dict], tmp_path) -> str:
    """The pod's nats.conf on this machine: the pods' DNS names and ports become loopback ports, /data a folder,
    and the auth Secret's mount a folder beside it. Nothing else changes."""
    p = ports[i]
    conf = conf.replace('"0.0.0.0:4222"', f'"127.0.0.1:{p["client"]}"').replace(
        '"0.0.0.0:8222"', f'"127.0.0.1:{p["http"]}"').replace('"0.0.0.0:6222"', f'"127.0.0.1:{p["route"]}"')
    for j, other in enumerate(ports):
        conf = conf.replace(f"nats://nats-{j}.nats-headless:6222", f"nats://127.0.0.1:{other['route']}")
    conf = conf.replace('"/data"', f'"{tmp_path / f"nats-{i}" / "data"}"').replace(
        '"/var/run/nats/nats.pid"', f'"{tmp_path / f"nats-{i}" / "nats.pid"}"')
    return conf   # `include "../nats-auth/auth.conf"` stays: each node's nats.conf is in tmp_path/nats-<i>


@pytest.mark.server
def test_the_pods_rendered_configs_run_as_a_three_node_cluster(tmp_path):
    settings = load_settings(GROWN)
    conf = render_nats_conf(settings, cluster_layout(settings))
    (tmp_path / "nats-auth").mkdir()
    (tmp_path / "nats-auth" / "auth.conf").write_text(render_auth_conf((), {}, system_password="sys-pass-for-test"))
    ports = [{"client": free_port(), "http": free_port(), "route": free_port()} for _ in range(3)]
    servers = []
    try:
        for i in range(3):
            layout = local_layout(tmp_path / f"nats-{i}", client_port=ports[i]["client"],
                                  monitoring_port=ports[i]["http"], server_name=f"nats-{i}")
            servers.append(start_server(settings, layout, tmp_path / f"nats-{i}", wait=False,
                                        conf_text=_pod_conf(conf, i, ports, tmp_path)))
        leader = wait_cluster_ready(servers)
        assert leader in {"nats-0", "nats-1", "nats-2"}

        async def use_it():
            anonymous = await nats.connect(f"nats://127.0.0.1:{ports[1]['client']}", max_reconnect_attempts=1)
            info = await anonymous.jetstream().add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
            assert len(info.cluster.replicas) == 2
            system = await nats.connect(f"nats://127.0.0.1:{ports[2]['client']}", user=SYSTEM,
                                        password="sys-pass-for-test", max_reconnect_attempts=1)
            pongs = []
            sub = await system.subscribe(system.new_inbox())
            await system.publish("$SYS.REQ.SERVER.PING", b"", reply=sub.subject)
            for _ in range(3):
                pongs.append((await sub.next_msg(timeout=5)).data)
            await anonymous.close()
            await system.close()
            return pongs
        assert len(asyncio.run(use_it())) == 3   # the system user sees every node
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("servers, streams, refused", [
    # Per-node stores of 10Gi (the homelab's fileStore); maxBytes in GiB and replicas per stream.
    (1, [(6, 1), (4, 1)], None),
    (1, [(6, 1), (5, 1)], "b"),
    (3, [(6, 3), (4, 3)], None),          # every node holds both: 10Gi each
    (3, [(6, 3), (5, 3)], "b"),           # 11Gi on every node
    (3, [(9, 1), (9, 1), (9, 1)], None),  # one on each node
    (3, [(9, 3), (9, 1)], "b"),
])
def test_store_reservations_count_replicas_against_every_node(servers, streams, refused):
    from stack.catalog import CatalogError, load_catalog

    raw = {name: {"subjects": [f"{name}.>"], "maxBytes": f"{gib}GiB", "replicas": replicas}
           for name, (gib, replicas) in zip("abc", streams, strict=False)}
    limits = load_settings({}).jetstream.store_limits
    if refused is None:
        load_catalog(raw, max_replicas=servers, store_limits=limits)
        return
    with pytest.raises(CatalogError) as err:
        load_catalog(raw, max_replicas=servers, store_limits=limits)
    assert f"stream '{refused}'" in str(err.value) and "per node" in str(err.value)


@pytest.mark.parametrize("servers, expected", [(1, 1), (3, 3), (7, 5)])
def test_a_stream_follows_the_cluster(servers, expected):
    from stack.buckets import KEY_VALUE, bucket_wire_config
    from stack.catalog import stream_wire_config

    cfg = stream_wire_config("s", {"subjects": ["s.>"], "replicas": "cluster"}, max_replicas=servers)
    assert cfg["num_replicas"] == expected
    kv = bucket_wire_config(KEY_VALUE, "b", {"replicas": "cluster"}, max_replicas=servers)
    assert kv["num_replicas"] == expected


def test_a_grown_stack_can_say_replicas_3_or_follow_the_cluster():
    from stack.catalog import CatalogError, load_catalog

    [spec] = load_catalog({"s": {"subjects": ["s.>"], "replicas": 3}}, max_replicas=3)
    assert spec.config["num_replicas"] == 3
    with pytest.raises(CatalogError, match="3 replicas need 3 JetStream servers; this deployment runs 1"):
        load_catalog({"s": {"subjects": ["s.>"], "replicas": 3}}, max_replicas=1)
    with pytest.raises(CatalogError, match="replicas"):
        load_catalog({"s": {"subjects": ["s.>"], "replicas": "all"}}, max_replicas=3)
