"""Where nats.conf is made: a pure function from the settings (and a file-system/network layout) to
the config text. The cluster and the local mode render through the same function; only the layout
(paths, listen addresses, ports, server name) differs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from stack.settings import CLUSTER_PORT, Settings
from stack.users import jetstream_account

CONFIG_DIR = "/etc/nats-config"
CONFIG_FILE = f"{CONFIG_DIR}/nats.conf"
PID_DIR = "/var/run/nats"
PID_FILE = f"{PID_DIR}/nats.pid"
# The users, passwords and permissions (stack/users.py render_auth_conf) come from a Secret mounted here,
# included by nats.conf: the ConfigMap holds no secret. The config reloader watches included files too
# (nats-io/nack pkg/natsreloader/natsreloader.go getIncludePaths, since v0.14.4), so a change reloads.
AUTH_DIR = "/etc/nats-auth"
AUTH_FILE = "auth.conf"
# The server's certificate (a kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt), when TLS is on. The reloader
# watches cert_file/key_file/ca_file paths written one per line (natsreloader.go getCertPaths), and the server
# reloads its certificate on SIGHUP: a renewed certificate is picked up without a restart.
TLS_DIR = "/etc/nats-tls"

# Options nats-server cannot change on a config reload (server/reload.go refuses store_dir and the
# JetStream limits; listen addresses and the server name are read once at start). A change to any of
# them must restart the pod; everything else the reloader applies in place.
RESTART_ONLY_OPTIONS = ("listen", "http", "server_name", "pid_file", "jetstream")
# The MQTT block's listener too; its ack_wait, max_ack_pending, replicas and consumer options reload
# (server/reload.go, case "mqtt": anything else changed fails the whole reload).
MQTT_RELOADABLE = ("ack_wait", "max_ack_pending", "stream_replicas", "consumer_replicas", "consumer_memory_storage",
                   "consumer_inactive_threshold")
# The cluster block joins them when there is one (a node must restart to join or leave a cluster).
CLUSTER_OPTION = "cluster"


@dataclass(frozen=True)
class ClusterLayout:
    """The cluster block: every node routes to every node (itself included, as the chart renders it), with
    `no_advertise` (clients are given the Service, not the pods' addresses)."""
    name: str
    host: str
    port: int
    routes: tuple[str, ...]


@dataclass(frozen=True)
class ConfLayout:
    """Where the server listens and keeps its files."""
    host: str
    client_port: int
    monitoring_port: int
    store_dir: str
    pid_file: str
    # A literal name, or None to take it from the SERVER_NAME environment variable (the pod name).
    server_name: str | None = None
    # The auth file, relative to nats.conf's folder (the server resolves includes that way: conf/parse.go).
    auth_include: str = f"../{AUTH_DIR.rsplit('/', 1)[-1]}/{AUTH_FILE}"
    tls_dir: str = TLS_DIR
    cluster: ClusterLayout | None = None
    mqtt_port: int | None = None   # None: the settings' (1883, or 8883 with TLS)


# The StatefulSet and its headless Service (render/manifests.py names them from these): pod DNS names are
# <statefulset>-<ordinal>.<headless service>, as the chart's routes are (nats-io/k8s helm/charts/nats
# files/config/cluster.yaml; test/config_test.go TestConfigJetStreamCluster).
STATEFUL_SET = "nats"
HEADLESS_SERVICE = "nats-headless"


def cluster_routes(settings: Settings) -> tuple[str, ...]:
    """Every pod's route URL, its own included (the server skips a route to itself)."""
    return tuple(f"nats://{STATEFUL_SET}-{i}.{HEADLESS_SERVICE}:{CLUSTER_PORT}" for i in range(settings.replicas))


def cluster_layout(settings: Settings) -> ConfLayout:
    """The layout inside the pod: every address, the store on the volume, the server name from the pod name, and a
    cluster block when there is more than one node (named after the StatefulSet, as the chart names it)."""
    cluster = ClusterLayout(STATEFUL_SET, "0.0.0.0", CLUSTER_PORT, cluster_routes(settings)) \
        if settings.replicas > 1 else None
    return ConfLayout(host="0.0.0.0", client_port=settings.ports.client,
                      monitoring_port=settings.ports.monitoring, store_dir=settings.jetstream.store_dir,
                      pid_file=PID_FILE, server_name=None, cluster=cluster)


def includes_auth(settings: Settings, layout: ConfLayout) -> bool:
    """Whether nats.conf includes the auth file: the users when auth is on, and a cluster's system user always
    (render/auth_conf.py)."""
    return bool(settings.auth.enabled) or layout.cluster is not None


def has_auth_file(settings: Settings) -> bool:
    """Whether the deployment has the auth Secret (the same rule, for the pod's layout)."""
    return includes_auth(settings, cluster_layout(settings))


def nats_conf_options(settings: Settings, layout: ConfLayout) -> dict:
    """The nats.conf options as data (ordered as rendered)."""
    return {
        "listen": f"{layout.host}:{layout.client_port}",
        "http": f"{layout.host}:{layout.monitoring_port}",
        "server_name": "$SERVER_NAME" if layout.server_name is None else layout.server_name,
        "pid_file": layout.pid_file,
        "lame_duck_duration": "30s",
        "lame_duck_grace_period": "10s",
        **({"cluster": {"name": layout.cluster.name, "listen": f"{layout.cluster.host}:{layout.cluster.port}",
                        "no_advertise": True, "routes": list(layout.cluster.routes)}} if layout.cluster else {}),
        **({"mqtt": mqtt_options(settings, layout)} if settings.mqtt.enabled else {}),
        "jetstream": {
            "store_dir": layout.store_dir,
            "max_memory_store": settings.jetstream.memory_store.bytes,
            "max_file_store": settings.jetstream.file_store.bytes,
        },
    }


def mqtt_options(settings: Settings, layout: ConfLayout) -> dict:
    """The mqtt block (nats-server server/opts.go parseMQTT): the listener, TLS-only when TLS is on, and the QoS 1
    delivery settings; replicas and consumer options only when set, so that the server keeps its own choice."""
    m = settings.mqtt
    port = layout.mqtt_port if layout.mqtt_port is not None else m.listen_port(settings.tls.enabled)
    out: dict = {"listen": f"{layout.host}:{port}", "ack_wait": m.ack_wait, "max_ack_pending": m.max_ack_pending}
    if m.stream_replicas is not None:
        out["stream_replicas"] = m.stream_replicas
    if m.consumer_replicas is not None:
        out["consumer_replicas"] = m.consumer_replicas
    if m.consumer_memory_storage:
        out["consumer_memory_storage"] = True
    if m.consumer_inactive_threshold is not None:
        out["consumer_inactive_threshold"] = m.consumer_inactive_threshold
    return out


def _value(value) -> str:
    if isinstance(value, int):
        return str(value)
    if value.startswith("$"):
        return value  # a variable reference, resolved by the server from its environment
    return json.dumps(value)


def _tls_block(layout: ConfLayout) -> list[str]:
    """The server certificate from the Secret's mount, for the client port and the MQTT listener alike."""
    return ["tls {",
            f"  cert_file: {json.dumps(layout.tls_dir.rstrip('/') + '/tls.crt')}",
            f"  key_file: {json.dumps(layout.tls_dir.rstrip('/') + '/tls.key')}",
            "  timeout: 2",
            "}"]


def render_nats_conf(settings: Settings, layout: ConfLayout) -> str:
    opts = nats_conf_options(settings, layout)
    js = opts["jetstream"]
    lines = ["# Rendered by homelab-nats (render/nats_conf.py). Do not edit in place."]
    for key, value in opts.items():
        if key not in ("jetstream", "cluster", "mqtt"):
            lines.append(f"{key}: {_value(value)}")
    if "cluster" in opts:
        c = opts["cluster"]
        lines += ["# JetStream cluster: every node routes to every node (itself included).",
                  "cluster {",
                  f"  name: {_value(c['name'])}",
                  f"  listen: {_value(c['listen'])}",
                  "  no_advertise: true",
                  "  routes: [",
                  *(f"    {_value(route)}" for route in c["routes"]),
                  "  ]",
                  "}"]
    if settings.tls.enabled:
        lines += ["# Client TLS: plain connections are refused. The monitoring port stays HTTP (probes, exporter).",
                  *_tls_block(layout)]
    if "mqtt" in opts:
        lines += ["# MQTT 3.1.1 for devices (stack/settings.py Mqtt): topics map to subjects (a/b -> a.b); the server keeps",
                  "# sessions, retained and QoS 1 messages in its own $MQTT_* streams.",
                  "mqtt {"]
        lines += [f"  {k}: {'true' if v is True else _value(v)}" for k, v in opts["mqtt"].items()]
        if settings.tls.enabled:
            lines += ["  # TLS only, with the client port's certificate: plain MQTT is refused.",
                      *(f"  {line}" for line in _tls_block(layout))]
        lines.append("}")
    if includes_auth(settings, layout):
        lines += ["# Users, passwords and permissions: a Secret (stack/users.py). Reloaded when it changes.",
                  f"include {json.dumps(layout.auth_include)}"]
    lines += [
        "jetstream {",
        f"  # data lands in {js['store_dir'].rstrip('/')}/jetstream",
        f"  store_dir: {_value(js['store_dir'])}",
        f"  max_memory_store: {js['max_memory_store']}  # {settings.jetstream.memory_store.text}",
        f"  max_file_store: {js['max_file_store']}  # {settings.jetstream.file_store.text}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def restart_checksum(settings: Settings, layout: ConfLayout) -> str:
    """A digest of the options that need a restart; it goes on the pod template as an annotation."""
    opts = nats_conf_options(settings, layout)
    restart_only = {k: opts[k] for k in (*RESTART_ONLY_OPTIONS, CLUSTER_OPTION) if k in opts}
    if "mqtt" in opts:   # the listener is read at start only
        restart_only["mqtt"] = {k: v for k, v in opts["mqtt"].items() if k not in MQTT_RELOADABLE}
        restart_only["mqtt_tls"] = settings.tls.enabled
    if settings.auth.enabled:   # the streams change account only at a start (render/settle_account.py)
        restart_only["streams_account"] = jetstream_account(True)
    return hashlib.sha256(json.dumps(restart_only, sort_keys=True).encode()).hexdigest()
