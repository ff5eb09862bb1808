"""What the homelab's own Git declares beside this stack, and MetalLB's rule for sharing an address.

Read in brannn/homelab-foundations `clusters/um890/` at 93b30ae (2025-07-15, the guide's era: the commit this
stack was checked against) and at 1380d7a (2026-03-22, HEAD). Pure data and pure functions: preview checks the
settings against them, and the tests check the README's changes to that Git against MetalLB's rule.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GUIDE_COMMIT = "93b30ae"
HEAD_COMMIT = "1380d7a"

# MetalLB v0.15.3 controller/service.go: AnnotationAllowSharedIP, and the deprecated prefix it still reads
# (SharingKey: the new key wins when both are set).
SHARING_ANNOTATION = "metallb.io/allow-shared-ip"
DEPRECATED_SHARING_ANNOTATION = "metallb.universe.tf/allow-shared-ip"


@dataclass(frozen=True)
class KnownAddress:
    owner: str                       # namespace/name of the Service, or what holds the address
    source: str                      # the file in the homelab's Git
    manifest: Mapping | None = None  # the Service as Git has it, where sharing with it is worth modelling


# ClickHouse's Service exactly as clusters/um890/clickhouse/services.yaml has it (94e0dd0, 2025-07-15, still at
# HEAD; `clickhouse` is in clusters/um890/kustomization.yaml in both eras). No sharing key, Cluster traffic policy.
CLICKHOUSE_LB = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "clickhouse-lb", "namespace": "clickhouse",
                 "labels": {"app.kubernetes.io/name": "clickhouse", "app.kubernetes.io/component": "server",
                            "app.kubernetes.io/service": "loadbalancer"},
                 "annotations": {"metallb.universe.tf/loadBalancerIPs": "10.0.0.248"}},
    "spec": {"type": "LoadBalancer",
             "ports": [{"port": 8123, "targetPort": 8123, "protocol": "TCP", "name": "http"},
                       {"port": 9000, "targetPort": 9000, "protocol": "TCP", "name": "native"},
                       {"port": 9363, "targetPort": 9363, "protocol": "TCP", "name": "metrics"}],
             "selector": {"clickhouse.altinity.com/chi": "homelab-clickhouse"}},
}

# Addresses of the MetalLB pool 10.0.0.240-10.0.0.250 (clusters/um890/metallb-config/metallb.yaml) that a
# manifest in the homelab's Git asks for.
KNOWN_ADDRESSES: dict[str, KnownAddress] = {
    "10.0.0.241": KnownAddress("garage/garage-s3 (MinIO's S3 API in the guide's era)", "garage/values.yaml"),
    "10.0.0.243": KnownAddress("monitoring/grafana", "clusters/um890/monitoring/grafana/helmrelease.yaml"),
    "10.0.0.245": KnownAddress("the HAProxy ingress controller", "clusters/um890/haproxy-ingress/helmrelease.yaml"),
    "10.0.0.246": KnownAddress("trino/trino", "clusters/um890/trino/services.yaml"),
    "10.0.0.247": KnownAddress("the Iceberg REST catalog", "clusters/um890/trino/services.yaml"),
    "10.0.0.248": KnownAddress("clickhouse/clickhouse-lb", "clusters/um890/clickhouse/services.yaml", CLICKHOUSE_LB),
    "10.0.0.249": KnownAddress("the Pi-hole DNS services", "clusters/um890/dns/pihole-services.yaml"),
    # Committed 2025-07-17 (after the guide); temporal left the cluster's kustomization in a642d94.
    "10.0.0.250": KnownAddress("the Temporal services (not applied at HEAD)", "clusters/um890/temporal/services.yaml"),
}
# No Service manifest under clusters/ asks for these (at 93b30ae or HEAD).
FREE_ADDRESSES = ("10.0.0.240", "10.0.0.242", "10.0.0.244")

# Secrets that objects in the homelab's Git own, by (namespace, name). cert-manager v1.19.3 makes a Certificate
# named after an Ingress's tls.secretName (pkg/controller/certificate-shim/sync.go), and lets only one Certificate
# own a Secret (internal/controller/certificates/certificates.go CertificateOwnsSecret): a second one is skipped
# without a word (pkg/controller/certificates/trigger/trigger_controller.go).
KNOWN_SECRETS: dict[tuple[str, str], str] = {
    ("nats", "nats-tls"): ("the homelab's Ingress nats-monitoring (clusters/um890/nats/ingress.yaml, cluster-issuer "
                           "selfsigned-issuer, host nats.homelab.local): cert-manager issues its certificate there"),
}

# cert-manager objects in the homelab's Git: the ClusterIssuers, and names that are something else.
CLUSTER_ISSUERS = ("selfsigned-issuer", "homelab-ca-issuer")
NOT_ISSUERS: dict[str, str] = {
    "homelab-ca": ("the CA Certificate in namespace cert-manager (clusters/um890/cert-manager-ca/), not an issuer; "
                   "the ClusterIssuer that signs with it is homelab-ca-issuer"),
}


@dataclass(frozen=True)
class AddressClaim:
    """What MetalLB's allocator keeps of a Service for one address (internal/allocator/allocator.go `key`, `Port`)."""
    service: str
    ports: frozenset[tuple[str, int]]   # (protocol, port)
    sharing_key: str                    # "" when the Service allows no sharing
    backend_key: str                    # "" for the Cluster traffic policy, else the pod selector


def address_claim(manifest: Mapping) -> AddressClaim:
    """A Service manifest as MetalLB v0.15.3 sees it: controller/service.go SharingKey, k8salloc.go Ports and
    BackendKey (Local traffic policy: the selector as `labels.Set.String()`, sorted `k=v` joined by commas)."""
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    annotations = meta.get("annotations") or {}
    if SHARING_ANNOTATION in annotations:
        sharing = annotations[SHARING_ANNOTATION]
    else:
        sharing = annotations.get(DEPRECATED_SHARING_ANNOTATION, "")
    backend = ""
    if spec.get("externalTrafficPolicy") == "Local":
        backend = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    ports = frozenset((p.get("protocol", "TCP"), int(p["port"])) for p in spec.get("ports") or [])
    return AddressClaim(f"{meta.get('namespace', 'default')}/{meta.get('name')}", ports, sharing, backend)


def sharing_problem(existing: AddressClaim, new: AddressClaim) -> str | None:
    """Why MetalLB v0.15.3 refuses `new` an address `existing` holds, in its own words, or None.

    internal/allocator/allocator.go: checkSharing (a key mismatch, then every port) and sharingOK (both keys set,
    equal, and equal backend keys)."""
    if not existing.sharing_key:
        return f"existing service does not allow sharing ({existing.service} has no {SHARING_ANNOTATION})"
    if not new.sharing_key:
        return f"new service does not allow sharing ({new.service} has no {SHARING_ANNOTATION})"
    if existing.sharing_key != new.sharing_key:
        return f"sharing key {new.sharing_key!r} does not match existing sharing key {existing.sharing_key!r}"
    if existing.backend_key != new.backend_key:
        return (f"backend key {new.backend_key!r} does not match existing backend key {existing.backend_key!r} (a "
                "Service with externalTrafficPolicy: Local shares only with one that selects the same pods)")
    for proto, port in sorted(new.ports & existing.ports):
        return f"port {proto}/{port} is already in use on the address by {existing.service}"
    return None


def with_sharing_key(manifest: Mapping, key: str) -> dict:
    """`manifest` with MetalLB's sharing annotation added: the change the README asks of the homelab's Git."""
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), SHARING_ANNOTATION: key}
    return {**manifest, "metadata": meta}

# One Kubernetes node: README.md of the homelab's Git, both eras ("Single-node cluster (assumes K3s)", l.20), and the
# one cluster folder clusters/um890/ (a Minisforum UM890 Pro). A NATS cluster there shares that node's fate.
HOMELAB_KUBERNETES_NODES = 1
