"""Prometheus and Grafana: the exporter's port, the PodMonitor, and a dashboard whose every query
names a metric the exporter really exposes with our arguments (checked against a real server's /varz)."""
import json
import re

import jsonschema
import pytest
import yaml

from render import manifests
from stack.settings import load_settings
from tests.exporter_metrics import exposed_metrics
from tests.pulumi_harness import ROOT, as_manifest, encode_config, run_program, stack_config

PROMQL_FUNCTIONS = {"rate", "irate", "increase", "sum", "avg", "max", "min", "by", "without", "label_values"}


def dashboard() -> dict:
    return json.loads(manifests.DASHBOARD_FILE.read_text())


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)      # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)     # range selectors
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
            if t not in PROMQL_FUNCTIONS and not t.startswith("__")}


def test_exporter_args_are_what_the_metric_list_assumes():
    args = manifests.exporter_args(load_settings({}))
    assert {"-varz", "-connz", "-prefix=nats", "-jsz=all"} <= set(args)


def test_dashboard_queries_only_metrics_the_exporter_exposes(nats_server):
    server = nats_server()
    exposed = exposed_metrics(server.monitor("/varz"))
    d = dashboard()
    queried = set()
    for panel in d["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= metric_names(target["expr"])
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            queried |= metric_names(var["query"].replace("label_values(", "").split(",")[0])
    assert queried and queried <= exposed, sorted(queried - exposed)
    # The dashboard covers what the issue asks for.
    for needed in ("nats_varz_cpu", "nats_varz_mem", "nats_varz_connections", "nats_varz_in_msgs", "nats_varz_in_bytes",
                   "nats_varz_jetstream_stats_storage", "nats_server_max_storage", "nats_varz_jetstream_stats_memory",
                   "nats_server_max_memory", "nats_stream_total_messages", "nats_stream_total_bytes",
                   "nats_consumer_num_pending", "nats_consumer_num_redelivered"):
        assert needed in queried, needed


def test_metric_name_extraction_catches_a_wrong_name():
    assert metric_names('rate(nats_varz_in_msgz{server_id=~"$server"}[5m])') == {"nats_varz_in_msgz"}
    assert "nats_varz_in_msgz" not in exposed_metrics({"in_msgs": 1})


def test_dashboard_config_map_is_labelled_for_the_sidecar():
    run = run_program(stack_config("homelab"))
    cm = as_manifest(run.one("kubernetes:core/v1:ConfigMap", "nats-grafana-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["nats-jetstream.json"])["uid"] == "homelab-nats"
    headless = as_manifest(run.one("kubernetes:core/v1:Service", "nats-headless"))
    assert {"name": "prom-metrics", "port": 7777, "targetPort": "prom-metrics", "protocol": "TCP",
            "appProtocol": "http"} in headless["spec"]["ports"]
    assert run.one("kubernetes:monitoring.coreos.com/v1:PodMonitor", "nats")  # the homelab runs the operator


POD_MONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
        "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
                 "properties": {
                     "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                     "namespaceSelector": {"type": "object", "properties": {
                         "matchNames": {"type": "array", "items": {"type": "string"}}}},
                     "podMetricsEndpoints": {"type": "array", "items": {
                         "type": "object", "additionalProperties": False,
                         "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}}}},
    },
}


def test_pod_monitor_when_the_operator_is_used():
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:monitoring": {"prometheusOperator": True,
                                                                                       "scrapeInterval": "15s"}})}
    run = run_program(config)
    pm = as_manifest(run.one("kubernetes:monitoring.coreos.com/v1:PodMonitor"))
    jsonschema.validate(pm, POD_MONITOR_SCHEMA)
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "prom-metrics", "path": "/metrics", "interval": "15s"}]
    ss = as_manifest(run.one("kubernetes:apps/v1:StatefulSet"))
    assert pm["spec"]["selector"]["matchLabels"].items() <= ss["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("raw, key", [
    ({"monitoring": {"prometheusOperator": "yes"}}, "homelab-nats:monitoring.prometheusOperator"),
    ({"monitoring": {"scrapeInterval": "30"}}, "homelab-nats:monitoring.scrapeInterval"),
    ({"monitoring": {"dashboardLabel": "bad label"}}, "homelab-nats:monitoring.dashboardLabel"),
    ({"monitoring": {"podMonitorLabels": {"release": "a b"}}}, "homelab-nats:monitoring.podMonitorLabels"),
    ({"monitoring": {"podMonitorLabels": ["release"]}}, "homelab-nats:monitoring.podMonitorLabels"),
    ({"monitoring": {"scrapeAnnotations": "on"}}, "homelab-nats:monitoring.scrapeAnnotations"),
    ({"loadBalancer": {"legacyAnnotations": 1}}, "homelab-nats:loadBalancer.legacyAnnotations"),
])
def test_bad_monitoring_settings(raw, key):
    from stack.errors import SettingsError
    with pytest.raises(SettingsError, match=key):
        load_settings(raw)


# ---------------------------------------------------------------- who selects what, in the real homelab
def selects(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions); {} selects everything, as the
    Prometheus Operator reads an empty podMonitorSelector."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value, present = labels.get(e["key"]), e["key"] in labels
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("selector, labels, expected", [
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"release": "kps"}}, {"release": "kps", "x": "y"}, True),
    ({"matchLabels": {"release": "kps"}}, {"x": "y"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
])
def test_label_selector_table(selector, labels, expected):
    assert selects(selector, labels) is expected


def kube_prometheus_stack_selector(nil_uses_helm_values: bool, release: str = "kube-prometheus-stack") -> dict:
    """What kube-prometheus-stack 61.3.2 renders as the Prometheus's podMonitorSelector
    (prometheus-community/helm-charts charts/kube-prometheus-stack/templates/prometheus/prometheus.yaml):
    {} when podMonitorSelectorNilUsesHelmValues is false, else matchLabels release: <release name>. Its
    podMonitorNamespaceSelector defaults to {} (every namespace)."""
    return {"matchLabels": {"release": release}} if nil_uses_helm_values else {}


def test_the_homelab_prometheus_scrapes_the_exporter():
    """kube-prometheus-stack with podMonitorSelectorNilUsesHelmValues: false (brannn/homelab-foundations
    clusters/um890/monitoring/prometheus/helmrelease.yaml) picks up the PodMonitor, which selects the NATS
    pod and names the exporter's container port."""
    run = run_program(stack_config("homelab"))
    pm = as_manifest(run.one("kubernetes:monitoring.coreos.com/v1:PodMonitor", "nats"))
    assert selects(kube_prometheus_stack_selector(False), pm["metadata"]["labels"])
    ss = as_manifest(run.one("kubernetes:apps/v1:StatefulSet"))
    pod = ss["spec"]["template"]
    assert selects(pm["spec"]["selector"], pod["metadata"]["labels"])
    assert ss["metadata"]["namespace"] in pm["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= ports
    # The chart's default selector would not: podMonitorLabels is for those installs.
    assert not selects(kube_prometheus_stack_selector(True), pm["metadata"]["labels"])


def test_pod_monitor_labels_for_a_release_selector():
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:monitoring": {
        "prometheusOperator": True, "podMonitorLabels": {"release": "kube-prometheus-stack"}}})}
    pm = as_manifest(run_program(config).one("kubernetes:monitoring.coreos.com/v1:PodMonitor", "nats"))
    assert selects(kube_prometheus_stack_selector(True), pm["metadata"]["labels"])


def test_annotation_based_scraping_finds_the_exporter_port():
    ss = as_manifest(run_program(stack_config("homelab")).one("kubernetes:apps/v1:StatefulSet"))
    pod = ss["spec"]["template"]
    ann = pod["metadata"]["annotations"]
    exporter = next(c for c in pod["spec"]["containers"] if c["name"] == "prom-exporter")
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == exporter["ports"][0]["containerPort"]
    off = {**stack_config("homelab"), **encode_config({"homelab-nats:monitoring": {"scrapeAnnotations": False}})}
    pod = as_manifest(run_program(off).one("kubernetes:apps/v1:StatefulSet"))["spec"]["template"]
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"]["annotations"])


def readme_grafana_values() -> dict:
    text = (ROOT / "README.md").read_text()
    marker = "# grafana values: mount the nats-grafana-dashboard ConfigMap"
    block = text[text.index(marker):]
    return yaml.safe_load(block[:block.index("```")])


def test_the_documented_grafana_change_loads_the_dashboard():
    """grafana chart 8.4.2 (grafana/helm-charts charts/grafana/templates/_pod.tpl) mounts ConfigMap
    `dashboardsConfigMaps[<provider>]`, from Grafana's namespace, at /var/lib/grafana/dashboards/<provider>;
    a file provider reads *.json there. The README's values must line up with what the stack declares."""
    values = readme_grafana_values()
    run = run_program(stack_config("homelab"))
    cm = as_manifest(run.one("kubernetes:core/v1:ConfigMap", "nats-grafana-dashboard"))
    providers = {p["name"]: p for p in values["dashboardProviders"]["dashboardproviders.yaml"]["providers"]}
    [(provider, configmap)] = values["dashboardsConfigMaps"].items()
    assert configmap == cm["metadata"]["name"]
    assert providers[provider]["type"] == "file"
    assert providers[provider]["options"]["path"] == f"/var/lib/grafana/dashboards/{provider}"  # the chart's mount
    assert all(key.endswith(".json") for key in cm["data"])
    # The homelab's Grafana HelmRelease lives in namespace monitoring; a pod mounts ConfigMaps of its own namespace.
    assert cm["metadata"]["namespace"] == "monitoring"
    # The provider already in the homelab's values stays as it was.
    assert providers["default"]["options"]["path"] == "/var/lib/grafana/dashboards/default"
