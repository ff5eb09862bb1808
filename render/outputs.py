"""The connection details the stack exports (and the local mode prints): one pure function."""
from __future__ import annotations

from render import manifests
from stack.errors import config_key
from stack.settings import Settings, monitoring_on_lan
from stack.subjects import mqtt_topic
from stack.users import NATS_BOX, inbox_prefix, secret_name


def connection_details(settings: Settings, users=(), buckets=()) -> dict:
    """Addresses users and tools need. External URLs are present only when the load balancer is on. With auth
    on, `users` lists each user's Secret, inbox prefix and permissions (never a password): the permissions live
    in a Secret, so this output is where `pulumi preview` shows them change."""
    ns = settings.namespace
    details = {
        "namespace": ns,
        "inClusterUrl": manifests.in_cluster_url(settings),
        "clusterDnsUrl": manifests.cluster_dns_url(settings),
        "natsBoxCommand": f"kubectl exec -n {ns} deploy/{manifests.NATS_BOX} -- nats",
        "jetstreamLimits": {
            "maxMemoryStore": settings.jetstream.memory_store.text,
            "maxMemoryStoreBytes": settings.jetstream.memory_store.bytes,
            "maxFileStore": settings.jetstream.file_store.text,
            "maxFileStoreBytes": settings.jetstream.file_store.bytes,
            "storeDir": settings.jetstream.data_dir,
            "storageClass": settings.jetstream.storage_class,
        },
    }
    if buckets:  # the declared key-value buckets and object stores, and the stream each one is
        details["keyValues"] = {b.name: b.stream_name for b in buckets if b.kind.kind == "keyValue"}
        details["objectStores"] = {b.name: b.stream_name for b in buckets if b.kind.kind == "objectStore"}
    if settings.auth.enabled:
        details["users"] = {u.name: users_entry(settings, u) for u in users}
    if settings.mqtt.enabled:
        details["mqtt"] = mqtt_details(settings)
    if settings.load_balancer.ip is not None:
        details.update(external_urls(settings.load_balancer.ip, settings.ports.client, settings.ports.monitoring,
                                     settings.tls.scheme))
        if not monitoring_on_lan(settings):
            for key in MONITORING_URLS:
                details.pop(key)
            details["monitoringAccess"] = monitoring_access(settings)
    return details


MONITORING_URLS = ("monitoringUrl", "healthUrl", "jetstreamHealthUrl", "varzUrl", "jszUrl")


def monitoring_access(settings: Settings) -> str:
    """How to reach the monitoring port when the load balancer does not carry it."""
    port = settings.ports.monitoring
    return (f"kubectl -n {settings.namespace} port-forward pod/{manifests.NAME}-0 {port}:{port}, then "
            f"http://127.0.0.1:{port} (e.g. python -m streams check --monitor http://127.0.0.1:{port})")


def external_urls(host: str, client_port: int, monitoring_port: int, scheme: str = "nats") -> dict:
    """Client and monitoring URLs for one reachable address (the load balancer, or 127.0.0.1 locally)."""
    monitor = f"http://{host}:{monitoring_port}"
    return {
        "clientUrl": f"{scheme}://{host}:{client_port}",
        "monitoringUrl": monitor,
        "healthUrl": f"{monitor}/healthz",
        "jetstreamHealthUrl": f"{monitor}/healthz?js-enabled-only=true",
        "varzUrl": f"{monitor}/varz",
        "jszUrl": f"{monitor}/jsz",
    }


def users_entry(settings: Settings, user) -> dict:
    """One user for review: its account, where its password is, its permissions and, for an application user, what
    its account imports from the streams' account."""
    if user.name == NATS_BOX:
        return {"account": user.account, "permissions": "all",
                "password": f"generated, in the {settings.namespace}/nats-box-contexts Secret"}
    if user.permissions is None:
        return {"account": user.account, "permissions": "all", "password": f"the {config_key('natsPassword')} secret"}
    entry = {"account": user.account, "secret": f"{user.namespace or settings.namespace}/{secret_name(user.name)}",
             "inboxPrefix": user.inbox_prefix, "permissions": user.permissions}
    if user.imports is not None:
        entry["imports"] = [f"{i.kind} {i.subject}" + (" (streamed)" if i.streamed else "") for i in user.imports]
    if manifests.is_mqtt_device(user):   # what the device sees: topics, and MQTT only
        del entry["inboxPrefix"]
        entry["connectionTypes"] = list(user.connection_types)
        entry["mqttTopics"] = {"publish": [mqtt_topic(s) for s in user.permissions["publish"]["allow"]],
                               "subscribe": [mqtt_topic(s) for s in user.permissions["subscribe"]["allow"]
                                             if not s.startswith(inbox_prefix(user.name))]}
    return entry


def mqtt_details(settings: Settings, host: str | None = None, port: int | None = None) -> dict:
    """Where devices connect over MQTT (the load balancer's address on the LAN), and how topics become subjects."""
    host, port, tls = manifests.mqtt_endpoint(settings, host, port)
    return {"url": f"{'mqtts' if tls else 'mqtt'}://{host}:{port}", "host": host, "port": port, "tls": tls,
            "topics": "a topic's levels are a subject's tokens: sensors/kitchen/temp is sensors.kitchen.temp"}
