"""The settings model: the guide's defaults, derived values, warnings, and bad config named by key."""
import pytest
import yaml

from stack.errors import SettingsError
from stack.settings import load_settings
from tests.pulumi_harness import ROOT


def homelab_raw() -> dict:
    doc = yaml.safe_load((ROOT / "Pulumi.homelab.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in doc.items()}


def test_defaults_equal_the_guide():
    s = load_settings({})
    assert s.namespace == "nats"
    assert s.load_balancer.ip == "10.0.0.248"
    assert (s.ports.client, s.ports.monitoring, s.ports.metrics) == (4222, 8222, 7777)
    r = s.resources
    assert (r.cpu_limit.text, r.memory_limit.text, r.cpu_request.text, r.memory_request.text) == \
        ("500m", "512Mi", "100m", "128Mi")
    assert s.go_mem_limit_text == "450MiB"
    assert s.jetstream.memory_store.bytes == 2**30 and s.jetstream.file_store.bytes == 10 * 2**30
    assert s.jetstream.storage_class == "longhorn" and s.jetstream.data_dir == "/data/jetstream"
    assert s.fs_group == 1000 and s.replicas == 1
    assert s.images.nats_version == "2.15.1"


def test_homelab_stack_file_gives_the_defaults():
    """The stack file writes the defaults out; it only adds the nightly backups, the homelab's monitoring and the
    key that shares 10.0.0.248 with ClickHouse."""
    import dataclasses
    homelab = load_settings(homelab_raw())
    defaults = load_settings({})
    assert homelab.load_balancer == dataclasses.replace(defaults.load_balancer, sharing_key="homelab-248")
    assert dataclasses.replace(homelab, backups=defaults.backups, monitoring=defaults.monitoring,
                               load_balancer=defaults.load_balancer) == defaults
    # The homelab's kube-prometheus-stack and Grafana (see Pulumi.homelab.yaml and the README).
    assert homelab.monitoring.prometheus_operator and homelab.monitoring.dashboard_namespace == "monitoring"
    assert homelab.backups.enabled and homelab.backups.schedule == "0 3 * * *"


def test_guide_numbers_warn_about_oom_and_an_open_load_balancer():
    open_lb, oom = load_settings({}).warnings
    assert "homelab-nats:jetstream.memoryStore" in oom and "OOM" in oom and "512Mi" in oom
    assert "10.0.0.248:4222 without authentication" in open_lb and "homelab-nats:auth.enabled" in open_lb


def test_no_warning_when_memory_store_fits_and_nothing_is_exposed_unauthenticated():
    assert load_settings({"jetstream": {"memoryStore": "256Mi"}, "loadBalancer": {"ip": None}}).warnings == ()
    assert load_settings({"jetstream": {"memoryStore": "256Mi"}, "auth": {"enabled": True},
                          "tls": {"enabled": True}}).warnings == ()


@pytest.mark.parametrize("raw, warned", [
    ({"auth": {"enabled": True}}, ["passwords cross the network in clear to 10.0.0.248:4222"]),
    ({"auth": {"enabled": True}, "loadBalancer": {"ip": None}}, []),        # no address on the LAN
    ({"auth": {"enabled": True}, "tls": {"enabled": True}, "loadBalancer": {"monitoring": True}},
     ["loadBalancer.monitoring is true with auth on"]),
    ({}, ["without authentication"]),
])
def test_warnings_about_what_crosses_the_lan(raw, warned):
    warnings = load_settings({"jetstream": {"memoryStore": "256Mi"}, **raw}).warnings
    assert len(warnings) == len(warned) and all(w in text for w, text in zip(warned, warnings, strict=True)), warnings


@pytest.mark.parametrize("raw, on_lan", [
    ({}, True),                                                        # auth off: as the guide has it
    ({"auth": {"enabled": True}}, False),                              # auth on: not by default
    ({"auth": {"enabled": True}, "loadBalancer": {"monitoring": True}}, True),
    ({"loadBalancer": {"monitoring": False}}, False),
    ({"loadBalancer": {"ip": None}}, False),
])
def test_the_monitoring_port_on_the_lan(raw, on_lan):
    from render.manifests import client_service
    from render.outputs import connection_details
    from stack.settings import monitoring_on_lan

    settings = load_settings(raw)
    assert monitoring_on_lan(settings) is on_lan
    ports = [p["port"] for p in client_service(settings)["spec"]["ports"]]
    details = connection_details(settings)
    if settings.load_balancer.enabled:
        assert (8222 in ports) is on_lan
        assert ("monitoringUrl" in details) is on_lan and ("monitoringAccess" in details) is not on_lan
    if settings.load_balancer.enabled and not on_lan:
        assert "port-forward pod/nats-0 8222:8222" in details["monitoringAccess"]


@pytest.mark.parametrize("limit, derived", [("512Mi", "450MiB"), ("1Gi", "901MiB"), ("2Gi", "1802MiB")])
def test_gomemlimit_derived_from_limit(limit, derived):
    assert load_settings({"resources": {"limits": {"memory": limit}}}).go_mem_limit_text == derived


def test_gomemlimit_explicit():
    assert load_settings({"goMemLimit": "400MiB"}).go_mem_limit == 400 * 2**20


BAD = [
    ({"loadBalancer": {"ip": "10.0.0.256"}}, "homelab-nats:loadBalancer.ip", "not an IP address"),
    ({"loadBalancer": {"ip": "nats.local"}}, "homelab-nats:loadBalancer.ip", "not an IP address"),
    ({"jetstream": {"storageClass": "Longhorn_SSD"}}, "homelab-nats:jetstream.storageClass", "storage class"),
    ({"jetstream": {"fileStore": "0Gi"}}, "homelab-nats:jetstream.fileStore", "greater than zero"),
    ({"jetstream": {"memoryStore": "512MB"}}, "homelab-nats:jetstream.memoryStore", 'did you mean "512Mi"'),
    ({"jetstream": {"fileStore": "-10Gi"}}, "homelab-nats:jetstream.fileStore", "not a Kubernetes quantity"),
    ({"jetstream": {"storeDir": "data"}}, "homelab-nats:jetstream.storeDir", "absolute path"),
    ({"jetstream": {"fileStorage": "10Gi"}}, "homelab-nats:jetstream", "unknown key(s) fileStorage"),
    ({"resources": {"limits": {"memory": "512MB"}}}, "homelab-nats:resources.limits.memory", 'did you mean'),
    ({"resources": {"limits": {"cpu": "0"}}}, "homelab-nats:resources.limits.cpu", "greater than zero"),
    ({"resources": {"requests": {"memory": "1Gi"}}}, "homelab-nats:resources.requests.memory", "above the limit"),
    ({"goMemLimit": "512MiB"}, "homelab-nats:goMemLimit", "not below the container memory limit"),
    ({"goMemLimit": "600MiB"}, "homelab-nats:goMemLimit", "not below the container memory limit"),
    ({"goMemLimit": "450Mi"}, "homelab-nats:goMemLimit", "MiB, not Mi"),
    ({"replicas": 3}, "homelab-nats:replicas", "deletes every stream it holds 30 s after it joins"),
    ({"replicas": 0}, "homelab-nats:replicas", "at least 1"),
    ({"ports": {"client": 70000}}, "homelab-nats:ports.client", "between 1 and 65535"),
    ({"ports": {"client": 8222}}, "homelab-nats:ports", "must differ"),
    ({"namespace": "NATS"}, "homelab-nats:namespace", "namespace name"),
    ({"fsGroup": "1000"}, "homelab-nats:fsGroup", "whole number"),
    ({"images": {"nats": "nats:latest"}}, "homelab-nats:images.nats", "not pinned"),
    ({"images": {"nats": "nats"}}, "homelab-nats:images.nats", "explicit tag"),
    ({"volumeSnapshots": {"cron": "every 6 hours"}}, "homelab-nats:volumeSnapshots.cron", "cron schedule"),
    ({"volumeSnapshots": {"retain": 0}}, "homelab-nats:volumeSnapshots.retain", "between 1 and 250"),
    ({"volumeSnapshots": {"enabled": "yes"}}, "homelab-nats:volumeSnapshots.enabled", "true or false"),
    ({"jetStream": {"fileStore": "10Gi"}}, "homelab-nats:jetStream", "unknown config key"),
    ({"backups": {"schedule": "nightly"}}, "homelab-nats:backups.schedule", "cron schedule"),
    ({"backups": {"bucket": "Bad_Bucket"}}, "homelab-nats:backups.bucket", "S3 bucket name"),
    ({"backups": {"endpoint": "10.0.0.241"}}, "homelab-nats:backups.endpoint", "S3 endpoint URL"),
    ({"backups": {"streams": ["a.b"]}}, "homelab-nats:backups.streams", "may not contain"),
    ({"backups": {"maxAge": "2h"}}, "homelab-nats:backups.maxAge", "under a day"),
    ({"backups": {"maxAge": "2 weeks"}}, "homelab-nats:backups.maxAge", "not a duration"),
    ({"backups": {"keep": 0}}, "homelab-nats:backups.keep", "at least 1"),
    # Passed preview before and broke later:
    ({"loadBalancer": {"ip": 167772408}}, "homelab-nats:loadBalancer.ip", "not an address written as text"),
    ({"goMemLimit": "4MiB"}, "homelab-nats:goMemLimit", "below what nats-server needs at rest"),
    ({"backups": {"maxAge": "300y"}}, "homelab-nats:backups.maxAge", "longer than a duration can be"),
    ({"loadBalancer": {"ip": "10.0.0.248", "sharingKey": "a b"}}, "homelab-nats:loadBalancer.sharingKey", "no spaces"),
    ({"tls": {"enabled": True, "trust": "acme"}}, "homelab-nats:tls.trust", "not one of issuerCa, system"),
]


@pytest.mark.parametrize("raw, key, fragment", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD)])
def test_bad_settings_name_the_key(raw, key, fragment):
    with pytest.raises(SettingsError) as err:
        load_settings(raw)
    assert key in str(err.value)
    assert fragment in str(err.value)


def test_load_balancer_off():
    assert not load_settings({"loadBalancer": {"ip": None}}).load_balancer.enabled
    assert not load_settings({"loadBalancer": None}).load_balancer.enabled


@pytest.mark.parametrize("raw, monitor, local, refused", [
    ({"auth": {"enabled": True}}, None, False, True),                       # the cluster, nothing named: say how
    ({"auth": {"enabled": True}}, "http://127.0.0.1:18222", False, False),   # port-forwarded and named
    ({"auth": {"enabled": True}}, None, True, False),                        # make dev: its own monitor
    ({}, None, False, False),                                                # auth off: on the address
    ({"auth": {"enabled": True}, "loadBalancer": {"ip": None}}, None, False, False),
])
def test_check_says_how_to_reach_a_monitoring_port_off_the_lan(raw, monitor, local, refused):
    from streams.cli.check import monitoring_off_lan

    reason = monitoring_off_lan(load_settings(raw), monitor_url=monitor, local=local)
    assert (reason is not None) is refused
    if refused:
        assert "kubectl -n nats port-forward pod/nats-0 8222:8222" in reason and "--monitor" in reason
