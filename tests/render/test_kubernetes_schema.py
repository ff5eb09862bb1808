"""Every Kubernetes object the program declares validates against the Kubernetes OpenAPI schema
(strict: unknown fields are errors), for the oldest and newest releases we support. The Longhorn
RecurringJob is a CRD the Kubernetes schema does not know; it is checked against Longhorn's
v1beta2 RecurringJob spec (longhorn/longhorn-manager k8s/pkg/apis/longhorn/v1beta2/recurringjob.go).
"""
import jsonschema
import kubernetes_validate
import pytest

from tests.pulumi_harness import as_manifest, encode_config, run_program, stack_config
from tests.render.test_monitoring import POD_MONITOR_SCHEMA
from tests.render.test_tls import CERTIFICATE_SCHEMA

KUBERNETES_RELEASES = ["1.30.0", kubernetes_validate.latest_version()]

RECURRING_JOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "longhorn.io/v1beta2"},
        "kind": {"const": "RecurringJob"},
        "metadata": {"type": "object", "required": ["name", "namespace"],
                     "properties": {"namespace": {"const": "longhorn-system"}}},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "task", "cron", "retain", "concurrency", "groups"],
            "properties": {
                "name": {"type": "string"}, "cron": {"type": "string"},
                "task": {"enum": ["snapshot", "snapshot-force-create", "snapshot-cleanup", "snapshot-delete",
                                  "backup", "backup-force-create", "filesystem-trim", "system-backup"]},
                "retain": {"type": "integer", "minimum": 1}, "concurrency": {"type": "integer", "minimum": 1},
                "groups": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}

CONFIGS = {
    "homelab": stack_config("homelab"),
    "cluster-ip-other-sizes": {**stack_config("homelab"), **encode_config({
        "homelab-nats:loadBalancer": {"ip": None},
        "homelab-nats:jetstream": {"memoryStore": "256Mi", "fileStore": "50Gi"},
        "homelab-nats:monitoring": {"prometheusOperator": True}})},
    "auth": {**stack_config("homelab"), "homelab-nats:natsPassword": "schema-test-password", **encode_config({
        "homelab-nats:auth": {"enabled": True, "users": {"iot-devices": {"publish": ["sensors.>"]},
                                                         "analytics": {"consume": ["sensors/analytics"],
                                                                       "namespace": "trino"}}},
        "homelab-nats:tls": {"enabled": True, "issuer": {"name": "homelab-ca-issuer"}}})},
    # An ACME issuer writes no ca.crt: clients trust the images' CA bundle and mount nothing.
    "tls-acme": {**stack_config("homelab"), **encode_config({
        "homelab-nats:tls": {"enabled": True, "issuer": {"name": "letsencrypt"}, "trust": "system"}})},
    # The homelab at its Git's head: local-path, no Longhorn, no Prometheus operator, no Grafana (README).
    "homelab-head": {**stack_config("homelab"), **encode_config({
        "homelab-nats:jetstream": {"storageClass": "local-path"},
        "homelab-nats:volumeSnapshots": {"enabled": False},
        "homelab-nats:monitoring": {"prometheusOperator": False, "grafanaDashboard": False}})},
    # Three JetStream nodes, grown from the standalone server (README, "Growing to three nodes"); with auth and
    # without (the system user comes either way).
    "cluster": {**stack_config("homelab"), **encode_config({
        "homelab-nats:replicas": 3, "homelab-nats:cluster": {"standaloneStreams": "snapshotted"}})},
    "cluster-auth": {**stack_config("homelab"), "homelab-nats:natsPassword": "schema-test-password", **encode_config({
        "homelab-nats:replicas": 3, "homelab-nats:cluster": {"standaloneStreams": "none", "spread": "preferred",
                                                             "kubernetesNodes": 3},
        "homelab-nats:auth": {"enabled": True}})},
    # Devices over MQTT, with TLS (port 8883) and a device user (its Secret holds the MQTT settings).
    "mqtt-devices": {**stack_config("homelab"), "homelab-nats:natsPassword": "schema-test-password", **encode_config({
        "homelab-nats:mqtt": {"enabled": True},
        "homelab-nats:tls": {"enabled": True, "issuer": {"name": "homelab-ca-issuer"}},
        "homelab-nats:auth": {"enabled": True, "users": {"esp-kitchen": {"mqtt": True, "publish": ["sensors.kitchen.>"],
                                                                         "subscribe": ["sensors.kitchen.>"]}}}})},
}


def declared_objects(config):
    run = run_program(config)
    return [as_manifest(r) for r in run.resources if r.type.startswith("kubernetes:")]


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("release", KUBERNETES_RELEASES)
def test_every_object_validates_strictly(config_name, release):
    objects = declared_objects(CONFIGS[config_name])
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "Deployment", "Secret", "CronJob", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        if obj["kind"] == "RecurringJob":
            jsonschema.validate(obj, RECURRING_JOB_SCHEMA)
        elif obj["kind"] == "PodMonitor":
            jsonschema.validate(obj, POD_MONITOR_SCHEMA)
        elif obj["kind"] == "Certificate":
            jsonschema.validate(obj, CERTIFICATE_SCHEMA)
        else:
            kubernetes_validate.validate(obj, release, strict=True)


def test_the_validator_rejects_a_broken_object():
    """Guards the test above: strict validation really does catch a misspelt field."""
    [ss] = [o for o in declared_objects(CONFIGS["homelab"]) if o["kind"] == "StatefulSet"]
    ss["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ss, KUBERNETES_RELEASES[-1], strict=True)
