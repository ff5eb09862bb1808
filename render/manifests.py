"""Every Kubernetes object of the deployment as a plain manifest dict (camelCase, as kubectl sees it).

Pure functions of the settings: no Pulumi, no network. The components hand these to
pulumi-kubernetes unchanged, and the tests validate them against the Kubernetes OpenAPI schema.
Names follow the official NATS Helm chart (release `nats`) so an existing volume is reused.
"""
from __future__ import annotations

import json
from pathlib import Path

from render.nats_conf import (
    AUTH_DIR,
    CLUSTER_PORT,
    CONFIG_DIR,
    CONFIG_FILE,
    HEADLESS_SERVICE,
    PID_DIR,
    PID_FILE,
    STATEFUL_SET,
    TLS_DIR,
    cluster_layout,
    has_auth_file,
    render_nats_conf,
    restart_checksum,
)
from render.settle_account import INIT_CONTAINER, SETTLE_SCRIPT
from stack import homelab_git
from stack.settings import Settings, Tls, monitoring_on_lan
from stack.users import MQTT_ONLY, ServerUser, jetstream_account, secret_name
from stack.users import NATS_BOX as NATS_BOX_USER

NAME = STATEFUL_SET
CONFIG_MAP = "nats-config"
JS_VOLUME = "nats-js"
NATS_BOX = "nats-box"
NATS_BOX_CONTEXTS = "nats-box-contexts"
AUTH_SECRET = "nats-auth"
BACKUP_S3_SECRET = "nats-backup-s3"
RESTART_ANNOTATION = "homelab-nats/restart-checksum"
LONGHORN_GROUP_LABEL = "recurring-job-group.longhorn.io/{group}"
LONGHORN_NAMESPACE = "longhorn-system"


def selector_labels(component: str) -> dict:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": NAME,
            "app.kubernetes.io/component": component}


def common_labels(component: str) -> dict:
    return {**selector_labels(component), "app.kubernetes.io/managed-by": "pulumi",
            "app.kubernetes.io/part-of": "homelab-nats"}


def _meta(settings: Settings, name: str, component: str, **extra) -> dict:
    return {"name": name, "namespace": settings.namespace, "labels": common_labels(component), **extra}


def namespace(settings: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": settings.namespace, "labels": {"app.kubernetes.io/part-of": "homelab-nats"}}}


def config_map(settings: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(settings, CONFIG_MAP, "nats"),
            "data": {"nats.conf": render_nats_conf(settings, cluster_layout(settings))}}


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def _pod_security(settings: Settings) -> dict:
    uid = settings.fs_group
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def _probe(settings: Settings, path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "monitor"}, "initialDelaySeconds": 10, "timeoutSeconds": 5,
            "periodSeconds": period, "failureThreshold": failures, "successThreshold": 1}


def _nats_container(settings: Settings) -> dict:
    r = settings.resources
    return {
        "name": "nats",
        "image": settings.images.nats,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config", CONFIG_FILE],
        "ports": [{"name": "nats", "containerPort": settings.ports.client, "protocol": "TCP"},
                  {"name": "monitor", "containerPort": settings.ports.monitoring, "protocol": "TCP"}]
        + ([{"name": "cluster", "containerPort": CLUSTER_PORT, "protocol": "TCP"}] if settings.replicas > 1 else [])
        + ([{"name": "mqtt", "containerPort": settings.mqtt.listen_port(settings.tls.enabled), "protocol": "TCP"}]
           if settings.mqtt.enabled else []),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SERVER_NAME", "value": "$(POD_NAME)"},
                {"name": "GOMEMLIMIT", "value": settings.go_mem_limit_text}],
        "resources": {"limits": {"cpu": r.cpu_limit.text, "memory": r.memory_limit.text},
                      "requests": {"cpu": r.cpu_request.text, "memory": r.memory_request.text}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR},
                         {"name": "pid", "mountPath": PID_DIR},
                         {"name": JS_VOLUME, "mountPath": settings.jetstream.store_dir}] + _auth_mounts(settings),
        # Plain /healthz at startup waits for JetStream to recover; readiness must not depend on every
        # stream and consumer being healthy (one broken consumer would keep the pod unready forever).
        "startupProbe": _probe(settings, "/healthz", 10, 90),
        "readinessProbe": _probe(settings, "/healthz?js-server-only=true", 10, 3),
        "livenessProbe": _probe(settings, "/healthz?js-enabled-only=true", 30, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", f"-sl=ldm={PID_FILE}"]}}},
        "securityContext": _RESTRICTED_CONTAINER,
    }


def _settle_account_container(settings: Settings) -> dict:
    """Before nats-server starts, the streams move to the account the config gives them (render/settle_account.py).
    A standalone server only; nats-box's image has the shell the script needs."""
    return {
        "name": INIT_CONTAINER,
        "image": settings.images.nats_box,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", SETTLE_SCRIPT],
        "env": [{"name": "JETSTREAM_DIR", "value": settings.jetstream.store_dir.rstrip("/") + "/jetstream"},
                {"name": "ACCOUNT", "value": jetstream_account(settings.auth.enabled)}],
        "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}},
        "volumeMounts": [{"name": JS_VOLUME, "mountPath": settings.jetstream.store_dir}],
        "securityContext": _RESTRICTED_CONTAINER,
    }


def _auth_mounts(settings: Settings) -> list[dict]:
    mounts = [{"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}] if has_auth_file(settings) else []
    if settings.tls.enabled:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return mounts


def tls_volume(settings: Settings, *, ca_only: bool = False) -> dict:
    """The server certificate's Secret as a volume; clients mount only ca.crt from it.

    The clients' volume is optional: "If a key is specified which is not present in the Secret, the volume setup
    will error unless it is marked optional" (Kubernetes API, SecretVolumeSource.items), and an ACME issuer writes
    no ca.crt. Marked optional, the pod starts without the file, and the command that needs it says so."""
    secret = {"secretName": settings.tls.secret_name, "defaultMode": 0o440}
    if ca_only:
        secret["items"] = [{"key": "ca.crt", "path": "ca.crt"}]
        secret["optional"] = True
    return {"name": "tls", "secret": secret}


def tls_client_mount() -> dict:
    return {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}


def client_trusts_issuer_ca(settings: Settings) -> bool:
    """Whether in-cluster clients read ca.crt from the certificate's Secret (else the image's trust store)."""
    return settings.tls.enabled and settings.tls.trust == "issuerCa"


def client_tls_volumes(settings: Settings) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) a client pod needs to trust the server: ca.crt from the Secret, or nothing."""
    if not client_trusts_issuer_ca(settings):
        return [], []
    return [tls_volume(settings, ca_only=True)], [tls_client_mount()]


CA_FILE = f"{TLS_DIR}/ca.crt"


def certificate(settings: Settings) -> dict:
    """The cert-manager Certificate for the server (cert-manager.io/v1, fields as in cert-manager v1.21.1
    deploy/crds/cert-manager.io_certificates.yaml): every name clients dial, the load balancer's address, and a
    new private key on each renewal. cert-manager writes tls.crt, tls.key and ca.crt into the Secret."""
    t = settings.tls
    ns = settings.namespace
    names = [NAME, f"{NAME}.{ns}", f"{NAME}.{ns}.svc", f"{NAME}.{ns}.svc.cluster.local", *t.extra_dns_names]
    spec = {"secretName": t.secret_name, "issuerRef": {"name": t.issuer_name, "kind": t.issuer_kind,
                                                       "group": "cert-manager.io"},
            "dnsNames": list(dict.fromkeys(names)), "duration": "2160h", "renewBefore": "360h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "digital signature", "key encipherment"]}
    if settings.load_balancer.ip is not None:
        spec["ipAddresses"] = [settings.load_balancer.ip]
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": _meta(settings, NAME, "nats"),
            "spec": spec}


def _reloader_container(settings: Settings) -> dict:
    return {
        "name": "reloader",
        "image": settings.images.reloader,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-pid", PID_FILE, "-config", CONFIG_FILE],
        "resources": {"limits": {"cpu": "50m", "memory": "32Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}},
        # The reloader reads nats.conf's includes to watch them, so it mounts the auth Secret as well.
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR}, {"name": "pid", "mountPath": PID_DIR}]
        + _auth_mounts(settings),
        "securityContext": _RESTRICTED_CONTAINER,
    }


def exporter_args(settings: Settings) -> list[str]:
    """The prometheus-nats-exporter flags (the chart's set); the dashboard relies on these metrics."""
    return [f"-port={settings.ports.metrics}", "-connz", "-routez", "-subz", "-varz", "-prefix=nats",
            "-use_internal_server_id", "-jsz=all", f"http://localhost:{settings.ports.monitoring}/"]


def _exporter_container(settings: Settings) -> dict:
    return {
        "name": "prom-exporter",
        "image": settings.images.exporter,
        "imagePullPolicy": "IfNotPresent",
        "args": exporter_args(settings),
        "ports": [{"name": "prom-metrics", "containerPort": settings.ports.metrics, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "32Mi"}},
        "securityContext": _RESTRICTED_CONTAINER,
    }


def _js_volume_labels(settings: Settings) -> dict:
    # Longhorn binds a volume to a RecurringJob group through its claim's labels, and only copies them when
    # the claim is marked as a recurring-job source (longhorn/longhorn-manager controller/volume_controller.go
    # syncPVCRecurringJobLabels; the key is types/types.go GetRecurringJobSourceLabelKey).
    return {"app.kubernetes.io/part-of": "homelab-nats",
            "recurring-job.longhorn.io/source": "enabled",
            LONGHORN_GROUP_LABEL.format(group=settings.volume_snapshots.group): "enabled"}


def js_claim_names(settings: Settings) -> list[str]:
    """The claims the StatefulSet controller makes (or reuses): <template>-<statefulset>-<ordinal>, the
    chart's `nats-js-nats-0` included."""
    return [f"{JS_VOLUME}-{NAME}-{ordinal}" for ordinal in range(settings.replicas)]


def js_claim_label_patches(settings: Settings) -> list[dict]:
    """Server-side-apply patches that put the snapshot labels on every JetStream claim.

    volumeClaimTemplates only label claims the controller creates: it never updates an existing claim
    (kubernetes/kubernetes pkg/controller/statefulset/stateful_pod_control.go createPersistentVolumeClaims
    creates a claim that is not found and leaves an existing one as it is), so a claim left by the Helm
    chart (which has no labels) would never join the RecurringJob group without these."""
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": name, "namespace": settings.namespace, "labels": _js_volume_labels(settings)}}
            for name in js_claim_names(settings)]


def scrape_annotations(settings: Settings) -> dict:
    """For Prometheus setups that scrape annotated pods (the prometheus chart's kubernetes-pods job)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(settings.ports.metrics),
            "prometheus.io/path": "/metrics"}


def stateful_set(settings: Settings) -> dict:
    # volumeClaimTemplates are immutable, so these labels do not depend on whether snapshots are
    # enabled: turning the RecurringJob off or on must not force a StatefulSet replacement.
    js_volume_labels = _js_volume_labels(settings)
    pod_annotations = {RESTART_ANNOTATION: restart_checksum(settings, cluster_layout(settings))}
    if settings.monitoring.scrape_annotations:
        pod_annotations.update(scrape_annotations(settings))
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(settings, NAME, "nats"),
        "spec": {
            "replicas": settings.replicas,
            "serviceName": HEADLESS_SERVICE,
            "podManagementPolicy": "Parallel",
            # Deleting or scaling the StatefulSet must never take the JetStream volume with it.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "selector": {"matchLabels": selector_labels("nats")},
            "template": {
                "metadata": {"labels": common_labels("nats"), "annotations": pod_annotations},
                "spec": {
                    "shareProcessNamespace": True,
                    "terminationGracePeriodSeconds": 60,
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(settings),
                    **({"initContainers": [_settle_account_container(settings)]} if settings.replicas == 1 else {}),
                    "containers": [_nats_container(settings), _reloader_container(settings),
                                   _exporter_container(settings)],
                    "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP}},
                                {"name": "pid", "emptyDir": {}}]
                    + ([{"name": "auth", "secret": {"secretName": AUTH_SECRET, "defaultMode": 0o440}}]
                       if has_auth_file(settings) else [])
                    + ([tls_volume(settings)] if settings.tls.enabled else []),
                    **({"topologySpreadConstraints": topology_spread(settings)} if settings.replicas > 1 else {}),
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": JS_VOLUME, "labels": js_volume_labels},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": settings.jetstream.storage_class,
                         "resources": {"requests": {"storage": settings.jetstream.file_store.text}}},
            }],
        },
    }


def topology_spread(settings: Settings) -> list[dict]:
    """The pods evenly over the Kubernetes nodes (the chart leaves this empty: values.yaml). nodeTaintsPolicy Honor:
    a tainted node (a control plane) is no domain the pods must balance over, or DoNotSchedule could leave a pod
    Pending forever. On one node every pod runs there (one domain has no skew)."""
    return [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule" if settings.cluster.spread == "required" else "ScheduleAnyway",
             "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": selector_labels("nats")}}]


def cluster_port(settings: Settings) -> list[dict]:
    """The route port, between the pods (through the headless Service), never on the load balancer."""
    return [{"name": "cluster", "port": CLUSTER_PORT, "targetPort": "cluster", "protocol": "TCP",
             "appProtocol": "tcp"}] if settings.replicas > 1 else []


def _service_ports(settings: Settings) -> list[dict]:
    return [{"name": "nats", "port": settings.ports.client, "targetPort": "nats", "protocol": "TCP",
             "appProtocol": "tcp"},
            {"name": "monitor", "port": settings.ports.monitoring, "targetPort": "monitor", "protocol": "TCP",
             "appProtocol": "http"}] + (
        [{"name": "mqtt", "port": settings.mqtt.listen_port(settings.tls.enabled), "targetPort": "mqtt",
          "protocol": "TCP", "appProtocol": "tcp"}] if settings.mqtt.enabled else [])


def headless_service(settings: Settings) -> dict:
    """Stable pod DNS, and the exporter's port for Prometheus (not exposed on the load balancer)."""
    metrics = {"name": "prom-metrics", "port": settings.ports.metrics, "targetPort": "prom-metrics",
               "protocol": "TCP", "appProtocol": "http"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(settings, HEADLESS_SERVICE, "nats"),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": selector_labels("nats"),
                     "ports": _service_ports(settings) + [metrics] + cluster_port(settings)}}


def pod_monitor(settings: Settings) -> dict:
    """For the Prometheus Operator: scrape the exporter on every NATS pod."""
    meta = _meta(settings, NAME, "nats")
    # kube-prometheus-stack selects PodMonitors labelled `release: <its release>` unless
    # podMonitorSelectorNilUsesHelmValues is false (prometheus-community/helm-charts
    # charts/kube-prometheus-stack/templates/prometheus/prometheus.yaml): monitoring.podMonitorLabels.
    meta["labels"] = {**meta["labels"], **settings.monitoring.pod_monitor_labels}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": meta,
            "spec": {"selector": {"matchLabels": selector_labels("nats")},
                     "namespaceSelector": {"matchNames": [settings.namespace]},
                     "podMetricsEndpoints": [{"port": "prom-metrics", "path": "/metrics",
                                              "interval": settings.monitoring.scrape_interval}]}}


DASHBOARD_FILE = Path(__file__).resolve().parent / "dashboards" / "nats-jetstream.json"


def grafana_dashboard(settings: Settings) -> dict:
    """The dashboard as a ConfigMap that Grafana's sidecar loads (label `monitoring.dashboardLabel`)."""
    m = settings.monitoring
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "nats-grafana-dashboard", "namespace": m.dashboard_namespace or settings.namespace,
                         "labels": {**common_labels("monitoring"), m.dashboard_label: "1"}},
            "data": {"nats-jetstream.json": DASHBOARD_FILE.read_text()}}


def client_service(settings: Settings) -> dict:
    lb = settings.load_balancer
    annotations = {}
    ports = _service_ports(settings)
    if lb.enabled and not monitoring_on_lan(settings):
        ports = [p for p in ports if p["name"] != "monitor"]   # the probes and the exporter reach it in the pod
    spec = {"selector": selector_labels("nats"), "ports": ports}
    if lb.enabled:
        # MetalLB >= 0.14.9 reads metallb.io/*, falling back to the deprecated metallb.universe.tf/* and
        # raising a `deprecatedAnnotation` event for it (metallb/metallb controller/service.go
        # valueForAnnotation, controller/main.go). Older MetalLB reads only the old prefix.
        prefixes = ["metallb.io"] + (["metallb.universe.tf"] if lb.legacy_annotations else [])
        for prefix in prefixes:
            annotations[f"{prefix}/loadBalancerIPs"] = lb.ip
            if lb.address_pool:
                annotations[f"{prefix}/address-pool"] = lb.address_pool
            if lb.sharing_key:
                annotations[f"{prefix}/allow-shared-ip"] = lb.sharing_key
        spec["type"] = "LoadBalancer"
        # Local keeps client source addresses visible to the server (connz). MetalLB shares an address only
        # between Services with the same backend key, which for Local is the pod selector
        # (internal/allocator/k8salloc/k8salloc.go BackendKey): sharing with another application needs Cluster.
        spec["externalTrafficPolicy"] = "Cluster" if lb.sharing_key else "Local"
    else:
        spec["type"] = "ClusterIP"
    meta = _meta(settings, NAME, "nats")
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


# How long `pulumi up` waits for the load balancer's address (pulumi-kubernetes waits 10 minutes by default:
# provider/pkg/await/service.go DefaultServiceTimeoutMins); the Service is created after the pods are ready, so this
# is the wait for MetalLB alone, which answers in seconds when it can.
ADDRESS_TIMEOUT = "2m"
# pulumi-kubernetes' words when the wait ends without an address (provider/pkg/await/service.go errorMessages).
NO_ADDRESS_ERROR = "was not allocated an IP address"


def no_address_hint(settings: Settings, errors: list[str]) -> str | None:
    """What to check when `pulumi up` failed on the client Service for want of an address, or None when `errors`
    (pulumi-kubernetes' messages for that Service) are about something else."""
    lb = settings.load_balancer
    if not lb.enabled or not any(NO_ADDRESS_ERROR in e for e in errors):
        return None
    ns, ip = settings.namespace, lb.ip
    ports = ", ".join(str(p["port"]) for p in _service_ports(settings))
    key = (f"metallb.io/allow-shared-ip: {lb.sharing_key} (as homelab-nats:loadBalancer.sharingKey gives this one)"
           if lb.sharing_key else "the same metallb.io/allow-shared-ip key, and this one has none: set "
           "homelab-nats:loadBalancer.sharingKey")
    free = ", ".join(homelab_git.FREE_ADDRESSES)
    return (f"The Service {ns}/{NAME} got no address from MetalLB within {ADDRESS_TIMEOUT} (homelab-nats:loadBalancer.ip "
            f"{ip}). Check: (1) `kubectl get svc -A | grep {ip}`: a Service already holding {ip} must carry {key}, "
            f"and none of its ports may be {ports}; (2) `kubectl describe svc -n {ns} {NAME}`: MetalLB's reason is "
            f"in the events (\"existing service does not allow sharing\", \"port ... is already in use\"); (3) {ip} is "
            f"in a MetalLB IPAddressPool (`kubectl get ipaddresspools -A`). Addresses nothing in the homelab's Git "
            f"asks for: {free}. Nothing else was changed by this failure; fix it and run `pulumi up` again.")


def pod_disruption_budget(settings: Settings) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(settings, NAME, "nats"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels("nats")}}}


def in_cluster_url(settings: Settings) -> str:
    """The guide's in-cluster address; resolves inside the NATS namespace (nats-box lives there)."""
    return f"{settings.tls.scheme}://{NAME}:{settings.ports.client}"


def cluster_dns_url(settings: Settings) -> str:
    """The address that resolves from any namespace."""
    return f"{settings.tls.scheme}://{NAME}.{settings.namespace}.svc.cluster.local:{settings.ports.client}"


def nats_box_context(settings: Settings, password: str | None = None) -> str:
    """The nats CLI context inside nats-box (natscli context JSON: url, user, password). With auth on it logs in
    as the nats-box user; the Secret holding it is then a secret in Pulumi's state too."""
    context = {"description": "homelab NATS (in-cluster)", "url": in_cluster_url(settings)}
    if settings.auth.enabled:
        context.update(user=NATS_BOX_USER, password=password or "")
    if client_trusts_issuer_ca(settings):
        context["ca"] = CA_FILE
    return json.dumps(context, indent=2) + "\n"


def nats_box_contexts_secret(settings: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(settings, NATS_BOX_CONTEXTS, "nats-box"),
            "type": "Opaque", "stringData": {"default.json": nats_box_context(settings)}}


def auth_secret(settings: Settings) -> dict:
    """The Secret nats.conf includes (stack/users.py render_auth_conf); its content is filled by the component."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(settings, AUTH_SECRET, "nats"), "type": "Opaque"}


def is_mqtt_device(user: ServerUser) -> bool:
    return user.connection_types == MQTT_ONLY


def password_key(user: ServerUser) -> str:
    """The Secret key of the user's password (filled by the component)."""
    return "MQTT_PASSWORD" if is_mqtt_device(user) else "NATS_PASSWORD"


def mqtt_endpoint(settings: Settings, host: str | None = None, port: int | None = None) -> tuple[str, int, bool]:
    """Where devices reach the MQTT listener (host, port, TLS): the load balancer's address on the LAN, else the
    Service's name; `make dev` gives its own host and port."""
    lb = settings.load_balancer
    return (host or lb.ip or f"{NAME}.{settings.namespace}.svc.cluster.local",
            port or settings.mqtt.listen_port(settings.tls.enabled), settings.tls.enabled)


def mqtt_connection(settings: Settings, host: str | None = None, port: int | None = None) -> dict:
    """An MQTT device's connection settings, as its Secret and `make dev` give them."""
    host, port, tls = mqtt_endpoint(settings, host, port)
    return {"MQTT_HOST": host, "MQTT_PORT": str(port), "MQTT_TLS": "true" if tls else "false"}


def user_secret(settings: Settings, user: ServerUser) -> dict:
    """What a workload mounts to connect as `user`: NATS_URL (no password in it), NATS_USER, NATS_INBOX_PREFIX
    and NATS_PASSWORD (filled by the component). The names are the nats CLI's environment variables
    (natscli nats/main.go); the inbox prefix is a flag there (--inbox-prefix). An MQTT device gets MQTT_HOST,
    MQTT_PORT, MQTT_TLS, MQTT_USER, MQTT_CLIENT_ID (its name: one session per device) and MQTT_PASSWORD."""
    ns = user.namespace or settings.namespace
    if is_mqtt_device(user):
        data = {**mqtt_connection(settings), "MQTT_USER": user.name, "MQTT_CLIENT_ID": user.name}
    else:
        data = {"NATS_URL": cluster_dns_url(settings), "NATS_USER": user.name}
        if user.inbox_prefix:
            data["NATS_INBOX_PREFIX"] = user.inbox_prefix
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name(user.name), "namespace": ns, "labels": common_labels("auth")},
            "type": "Opaque", "stringData": data}


NATS_BOX_CONFIG_HOME = "/etc/nats-box"


def nats_box_deployment(settings: Settings) -> dict:
    labels = selector_labels("nats-box")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(settings, NATS_BOX, "nats-box"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                # `app: nats-box` keeps the guide's `kubectl get pods -l app=nats-box` working.
                "metadata": {"labels": {**common_labels("nats-box"), "app": "nats-box"}},
                "spec": {
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(settings),
                    "containers": [{
                        "name": "nats-box",
                        "image": settings.images.nats_box,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "trap true INT TERM; sleep infinity & wait"],
                        # The nats CLI reads $XDG_CONFIG_HOME/nats/context/<NATS_CONTEXT>.json: no --server
                        # flag needed inside the box.
                        "env": [{"name": "XDG_CONFIG_HOME", "value": NATS_BOX_CONFIG_HOME},
                                {"name": "NATS_CONTEXT", "value": "default"},
                                {"name": "HOME", "value": "/tmp"}],
                        "resources": {"limits": {"cpu": "200m", "memory": "128Mi"},
                                      "requests": {"cpu": "10m", "memory": "32Mi"}},
                        "volumeMounts": [{"name": "contexts", "mountPath": f"{NATS_BOX_CONFIG_HOME}/nats/context",
                                          "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}] + client_tls_volumes(settings)[1],
                        "securityContext": _RESTRICTED_CONTAINER,
                    }],
                    "volumes": [{"name": "contexts", "secret": {"secretName": NATS_BOX_CONTEXTS}},
                                {"name": "tmp", "emptyDir": {}}] + client_tls_volumes(settings)[0],
                },
            },
        },
    }


def longhorn_recurring_job(settings: Settings) -> dict:
    snap = settings.volume_snapshots
    return {
        "apiVersion": "longhorn.io/v1beta2", "kind": "RecurringJob",
        "metadata": {"name": f"{settings.namespace}-jetstream-snapshot", "namespace": LONGHORN_NAMESPACE,
                     "labels": common_labels("volume-snapshots")},
        "spec": {"name": f"{settings.namespace}-jetstream-snapshot", "task": "snapshot", "cron": snap.cron,
                 "retain": snap.retain, "concurrency": snap.concurrency, "groups": [snap.group],
                 "labels": {"app.kubernetes.io/part-of": "homelab-nats"}},
    }


def own_secret_problem(settings: Settings, name: str) -> str | None:
    """What else `name` is among the Secrets this stack makes in its namespace, or None."""
    own = {AUTH_SECRET: "the server's users", NATS_BOX_CONTEXTS: "nats-box's contexts",
           BACKUP_S3_SECRET: "the backup CronJob's S3 keys"}
    if name in own:
        return f"this stack's Secret for {own[name]}"
    if name.startswith(secret_name("")):
        return "the prefix of the users' Secrets (nats-user-<name>)"
    return None


def homelab_git_conflicts(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings): what in the settings collides with an object the homelab's Git declares
    (stack/homelab_git.py) or with another object of this stack. Pure; `__main__` reports them at preview."""
    errors, warnings = [], []
    t, lb = settings.tls, settings.load_balancer
    if t.enabled:
        owner = homelab_git.KNOWN_SECRETS.get((settings.namespace, t.secret_name)) or own_secret_problem(
            settings, t.secret_name)
        if owner:
            errors.append(f"homelab-nats:tls.secretName: the Secret {settings.namespace}/{t.secret_name} belongs to "
                          f"{owner}. cert-manager lets one Certificate own a Secret and skips the others without a "
                          "word, so the server would serve the wrong certificate. Use a name of this stack's own "
                          f"(the default is {Tls().secret_name})")
        if t.issuer_name in homelab_git.NOT_ISSUERS:
            warnings.append(f"homelab-nats:tls.issuer.name: in the homelab's Git {t.issuer_name} is "
                            f"{homelab_git.NOT_ISSUERS[t.issuer_name]}. Its ClusterIssuers are "
                            f"{' and '.join(homelab_git.CLUSTER_ISSUERS)}; cert-manager leaves the Certificate "
                            "unissued and the nats pod waits for its Secret")
    known = homelab_git.KNOWN_ADDRESSES.get(lb.ip) if lb.ip is not None else None
    if known is not None:
        where = f"{lb.ip} is requested by {known.owner} in the homelab's Git ({known.source})"
        free = ", ".join(homelab_git.FREE_ADDRESSES)
        if known.manifest is None or not lb.sharing_key:
            warnings.append(
                f"homelab-nats:loadBalancer.ip: {where}. MetalLB gives an address in use to a second Service only "
                "when both carry the same metallb.io/allow-shared-ip key and their ports differ; otherwise the "
                "Service `nats` gets no address and `pulumi up` fails after 2 minutes. Set "
                "homelab-nats:loadBalancer.sharingKey and put the same key on that Service (README, \"The load "
                f"balancer address\"), or use an address nothing asks for ({free})")
        else:
            shared = homelab_git.with_sharing_key(known.manifest, lb.sharing_key)
            problem = homelab_git.sharing_problem(homelab_git.address_claim(shared),
                                                  homelab_git.address_claim(client_service(settings)))
            if problem:
                errors.append(f"homelab-nats:loadBalancer.ip: {where}, and even with the sharing key on both MetalLB "
                              f"would refuse NATS: {problem}. Move homelab-nats:ports off that Service's ports, or "
                              f"use an address nothing asks for ({free})")
    return errors, warnings
