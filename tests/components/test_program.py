"""The whole __main__.py under Pulumi mocks, with the config read from Pulumi.homelab.yaml."""
import json

import pulumi
import pytest

from tests.pulumi_harness import TEST_SECRETS, as_manifest, encode_config, is_secret, run_program, stack_config

SS = "kubernetes:apps/v1:StatefulSet"
SVC = "kubernetes:core/v1:Service"


@pytest.fixture(scope="module")
def homelab():
    return run_program(stack_config("homelab"))


def test_resource_graph(homelab):
    kinds = sorted((r.type, r.inputs.get("metadata", {}).get("name")) for r in homelab.resources
                   if r.type.startswith("kubernetes:"))
    assert kinds == sorted([
        ("kubernetes:core/v1:Namespace", "nats"),
        ("kubernetes:core/v1:ConfigMap", "nats-config"),
        ("kubernetes:core/v1:ConfigMap", "nats-grafana-dashboard"),
        ("kubernetes:core/v1:ConfigMap", "nats-memory-streams"),   # `events` comes back after a restart
        (SS, "nats"),
        (SVC, "nats-headless"),
        (SVC, "nats"),
        ("kubernetes:policy/v1:PodDisruptionBudget", "nats"),
        ("kubernetes:apps/v1:Deployment", "nats-box"),
        ("kubernetes:core/v1:Secret", "nats-box-contexts"),
        ("kubernetes:longhorn.io/v1beta2:RecurringJob", "nats-jetstream-snapshot"),
        ("kubernetes:batch/v1:CronJob", "nats-backup"),
        ("kubernetes:core/v1:Secret", "nats-backup-s3"),
        ("kubernetes:core/v1:PersistentVolumeClaimPatch", "nats-js-nats-0"),
        ("kubernetes:monitoring.coreos.com/v1:PodMonitor", "nats"),
    ])
    # The dashboard goes where the homelab's Grafana mounts it from (its own namespace).
    assert homelab.one("kubernetes:core/v1:ConfigMap", "nats-grafana-dashboard").inputs["metadata"]["namespace"] \
        == "monitoring"
    components = {r.type for r in homelab.resources if r.type.startswith("homelab-nats:")}
    assert components == {"homelab-nats:index:NatsDeployment", "homelab-nats:index:NatsServer",
                          "homelab-nats:index:NatsBox", "homelab-nats:index:NatsBackupJob"}
    for r in homelab.resources:
        if r.type.startswith("kubernetes:") and r.type != "kubernetes:core/v1:Namespace" \
                and "RecurringJob" not in r.type and r.name != "nats-server-dashboard":
            assert r.inputs["metadata"]["namespace"] == "nats", r.name


def test_statefulset_matches_the_guide(homelab):
    ss = as_manifest(homelab.one(SS))
    pod = ss["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["nats", "reloader", "prom-exporter"]
    nats = pod["containers"][0]
    assert nats["resources"] == {"limits": {"cpu": "500m", "memory": "512Mi"},
                                 "requests": {"cpu": "100m", "memory": "128Mi"}}
    env = {e["name"]: e for e in nats["env"]}
    assert env["GOMEMLIMIT"]["value"] == "450MiB"
    assert env["SERVER_NAME"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["shareProcessNamespace"] is True and pod["terminationGracePeriodSeconds"] == 60
    for c in pod["containers"]:
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == ["nats-server", "-sl=ldm=/var/run/nats/nats.pid"]
    assert nats["readinessProbe"]["httpGet"] == {"path": "/healthz?js-server-only=true", "port": "monitor"}
    assert nats["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert nats["startupProbe"]["failureThreshold"] == 90
    assert {m["mountPath"] for m in nats["volumeMounts"]} == {"/etc/nats-config", "/var/run/nats", "/data"}
    [vct] = ss["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "nats-js"  # PVC nats-js-nats-0, the chart's name
    assert vct["spec"]["storageClassName"] == "longhorn"
    assert vct["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert vct["metadata"]["labels"]["recurring-job-group.longhorn.io/nats-jetstream"] == "enabled"
    exporter = pod["containers"][2]
    assert exporter["ports"] == [{"name": "prom-metrics", "containerPort": 7777, "protocol": "TCP"}]
    assert "-jsz=all" in exporter["args"]


def test_config_map_holds_the_rendered_conf(homelab):
    conf = homelab.one("kubernetes:core/v1:ConfigMap", "nats-config").inputs["data"]["nats.conf"]
    assert "max_memory_store: 1073741824" in conf and "max_file_store: 10737418240" in conf
    assert 'store_dir: "/data"' in conf and "server_name: $SERVER_NAME" in conf


def test_client_service_is_the_metallb_load_balancer(homelab):
    svc = as_manifest(homelab.one(SVC, "nats"))
    assert svc["spec"]["type"] == "LoadBalancer"
    # The current key only (MetalLB 0.15.3 in the homelab: brannn/homelab-foundations
    # clusters/um890/metallb/install/helmrelease.yaml); the deprecated one raises an event there.
    # The sharing key: 10.0.0.248 is ClickHouse's too (tests/render/test_homelab_git.py).
    assert svc["metadata"]["annotations"] == {"metallb.io/loadBalancerIPs": "10.0.0.248",
                                              "metallb.io/allow-shared-ip": "homelab-248"}
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"nats": 4222, "monitor": 8222}
    assert "loadBalancerIP" not in svc["spec"]  # deprecated since 1.24
    headless = as_manifest(homelab.one(SVC, "nats-headless"))
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True


def test_nats_box_context_points_at_the_service(homelab):
    secret = as_manifest(homelab.one("kubernetes:core/v1:Secret", "nats-box-contexts"))
    context = json.loads(secret["stringData"]["default.json"])
    assert context["url"] == "nats://nats:4222"
    box = as_manifest(homelab.one("kubernetes:apps/v1:Deployment"))
    c = box["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "contexts")
    # nats reads $XDG_CONFIG_HOME/nats/context/$NATS_CONTEXT.json
    assert mount["mountPath"] == f"{env['XDG_CONFIG_HOME']}/nats/context" and env["NATS_CONTEXT"] == "default"
    assert box["spec"]["template"]["metadata"]["labels"]["app"] == "nats-box"


def test_recurring_job(homelab):
    job = as_manifest(homelab.one("kubernetes:longhorn.io/v1beta2:RecurringJob"))
    assert job["spec"] == {"name": "nats-jetstream-snapshot", "task": "snapshot", "cron": "0 */6 * * *",
                           "retain": 8, "concurrency": 1, "groups": ["nats-jetstream"],
                           "labels": {"app.kubernetes.io/part-of": "homelab-nats"}}


def test_outputs(homelab):
    out = homelab.exports
    assert out["clientUrl"] == "nats://10.0.0.248:4222"
    assert out["inClusterUrl"] == "nats://nats:4222"
    assert out["monitoringUrl"] == "http://10.0.0.248:8222"
    assert out["healthUrl"] == "http://10.0.0.248:8222/healthz"
    assert out["varzUrl"] == "http://10.0.0.248:8222/varz" and out["jszUrl"] == "http://10.0.0.248:8222/jsz"
    assert out["natsBoxCommand"] == "kubectl exec -n nats deploy/nats-box -- nats"
    assert out["namespace"] == "nats"
    assert out["jetstreamLimits"]["maxMemoryStoreBytes"] == 2**30
    assert out["jetstreamLimits"]["maxFileStoreBytes"] == 10 * 2**30


def test_preview_warns_about_the_memory_store(homelab):
    assert any("OOM" in w and "jetstream.memoryStore" in w for w in homelab.warnings)


def test_other_configuration_no_load_balancer_other_sizes():
    config = {**stack_config("homelab"), **encode_config({
        "homelab-nats:loadBalancer": {"ip": None},
        "homelab-nats:jetstream": {"memoryStore": "256Mi", "fileStore": "50Gi", "storageClass": "local-path"},
        "homelab-nats:resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "homelab-nats:volumeSnapshots": {"enabled": False},
        "homelab-nats:namespace": "messaging",
    })}
    run = run_program(config)
    svc = as_manifest(run.one(SVC, "nats"))
    assert svc["spec"]["type"] == "ClusterIP" and "annotations" not in svc["metadata"]
    assert not any(k in run.exports for k in ("clientUrl", "monitoringUrl", "healthUrl", "varzUrl", "jszUrl"))
    assert run.exports["inClusterUrl"] == "nats://nats:4222"
    ss = as_manifest(run.one(SS))
    assert ss["metadata"]["namespace"] == "messaging"
    assert ss["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert ss["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"
    nats = ss["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in nats["env"]}["GOMEMLIMIT"] == "901MiB"
    conf = run.one("kubernetes:core/v1:ConfigMap", "nats-config").inputs["data"]["nats.conf"]
    assert f"max_memory_store: {256 * 2**20}" in conf and f"max_file_store: {50 * 2**30}" in conf
    assert run.of_type("kubernetes:longhorn.io/v1beta2:RecurringJob") == []
    assert run.warnings == []


def test_bad_config_fails_the_program_naming_the_key():
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:jetstream": {"fileStore": "10GB"}})}
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:jetstream.fileStore.*did you mean \"10Gi\"") as err:
        run_program(config)
    assert err.value.__suppress_context__  # one clean message: RunError is printed without a traceback


def test_typo_in_a_top_level_key_fails():
    config = {**stack_config("homelab"), "homelab-nats:jetStream": json.dumps({"fileStore": "20Gi"})}
    with pytest.raises(pulumi.RunError, match="homelab-nats:jetStream"):
        run_program(config)


def test_streams_and_consumers_are_resources(homelab):
    streams = {r.inputs["name"]: r for r in homelab.of_type("pulumi-python:dynamic/nats:Stream")}
    assert set(streams) == {"iot-sensors", "app-logs", "events", "sensors", "analytics"}
    consumers = {(r.inputs["stream"], r.inputs["name"]) for r in homelab.of_type("pulumi-python:dynamic/nats:Consumer")}
    assert consumers == {("iot-sensors", "processor"), ("iot-sensors", "replay"), ("iot-sensors", "last-100"),
                         ("sensors", "analytics")}
    iot = streams["iot-sensors"].inputs
    assert (iot["maxAge"], iot["storage"], iot["allowDataLoss"]) == ("24h", "file", False)
    # The provider is pickled by reference to its module (not by value), so the provider process can import it.
    import base64
    pickled = base64.b64decode(as_manifest(streams["iot-sensors"])["__provider"])
    assert b"streams.provider" in pickled and len(pickled) < 2000


def test_bad_stream_declaration_fails_the_program():
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:streams": {
        "iot-sensors": {"subjects": ["sensors.>"], "maxAge": "24x"}}})}
    with pytest.raises(pulumi.RunError, match=r"^stream 'iot-sensors': maxAge: '24x' is not a duration"):
        run_program(config)


def test_streams_larger_than_their_store_fail_the_program():
    """Each stream's maxBytes is reserved in its store when it is created (the server refuses with 10047)."""
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:streams": {
        "a": {"subjects": ["a.>"], "maxBytes": "6GB"}, "b": {"subjects": ["b.>"], "maxBytes": "5GB"}}})}
    with pytest.raises(pulumi.RunError, match=r"^stream 'b': maxBytes: the file streams' maxBytes add up to .*"
                                              r"homelab-nats:jetstream.fileStore"):
        run_program(config)


def test_backup_cron_job(homelab):
    job = as_manifest(homelab.one("kubernetes:batch/v1:CronJob"))
    spec = job["spec"]
    assert (spec["schedule"], spec["concurrencyPolicy"]) == ("0 3 * * *", "Forbid")
    assert spec["startingDeadlineSeconds"] and spec["successfulJobsHistoryLimit"] and spec["failedJobsHistoryLimit"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [snap], [upload] = pod["initContainers"], pod["containers"]
    assert snap["image"].startswith("natsio/nats-box:") and upload["image"].startswith("minio/mc:RELEASE.")
    env = {e["name"]: e.get("value") for e in snap["env"]}
    assert env["STREAMS"] == "iot-sensors app-logs sensors analytics KV_device-config OBJ_firmware"  # file-backed; `events` is memory
    assert env["NATS_URL"] == "nats://nats:4222"
    up = {e["name"]: e for e in upload["env"]}
    assert up["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "nats-backup-s3"
    assert (up["BUCKET"]["value"], up["PREFIX"]["value"], up["KEEP"]["value"], up["MAX_AGE_SECONDS"]["value"]) == \
        ("nats-backups", "nats", "7", str(14 * 86400))
    assert "test-secret-key" not in json.dumps(job)


def test_backup_credentials_stay_secret(homelab):
    secret = homelab.one("kubernetes:core/v1:Secret", "nats-backup-s3").inputs
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        value = secret["stringData"] if is_secret(secret["stringData"]) else secret["stringData"][key]
        assert is_secret(value), key
    plain = [r for r in homelab.resources if r.name != "nats-backup-s3"]
    assert TEST_SECRETS["homelab-nats:backupSecretAccessKey"] not in json.dumps([r.inputs for r in plain])
    assert TEST_SECRETS["homelab-nats:backupSecretAccessKey"] not in json.dumps(homelab.exports)


def test_a_fresh_stack_without_backup_keys_deploys_and_warns():
    """A fresh clone previews and deploys; the CronJob waits for the keys, and says so."""
    run = run_program(stack_config("homelab", with_secrets=False), secret_keys=())
    assert run.of_type("kubernetes:batch/v1:CronJob") == [] and run.of_type("kubernetes:apps/v1:StatefulSet")
    [warning] = [w for w in run.warnings if "backup" in w]
    assert "homelab-nats:backupAccessKeyId, homelab-nats:backupSecretAccessKey are not set" in warning
    assert "pulumi config set --secret backupAccessKeyId" in warning
    # Once both are set, the CronJob is declared (the homelab fixture has them).
    half = {k: v for k, v in stack_config("homelab").items() if not k.endswith("backupSecretAccessKey")}
    run = run_program(half, secret_keys=("homelab-nats:backupAccessKeyId",))
    assert run.of_type("kubernetes:batch/v1:CronJob") == []
    assert any("homelab-nats:backupSecretAccessKey is not set" in w for w in run.warnings)


def test_older_metallb_gets_the_deprecated_keys_too():
    config = {**stack_config("homelab"), **encode_config({"homelab-nats:loadBalancer": {
        "ip": "10.0.0.248", "addressPool": "default-pool", "legacyAnnotations": True}})}
    svc = as_manifest(run_program(config).one(SVC, "nats"))
    assert svc["metadata"]["annotations"] == {
        "metallb.io/loadBalancerIPs": "10.0.0.248", "metallb.io/address-pool": "default-pool",
        "metallb.universe.tf/loadBalancerIPs": "10.0.0.248", "metallb.universe.tf/address-pool": "default-pool"}


def test_every_jetstream_claim_is_labelled_for_longhorn_snapshots(homelab):
    """The StatefulSet controller names its claims <template>-<statefulset>-<ordinal> and never relabels one
    that exists (the chart's nats-js-nats-0): a server-side-apply patch after the StatefulSet labels it."""
    ss = as_manifest(homelab.one(SS, "nats"))
    [template] = ss["spec"]["volumeClaimTemplates"]
    claim = f"{template['metadata']['name']}-{ss['metadata']['name']}-0"
    assert claim == "nats-js-nats-0"  # the Helm chart's claim: its volume is reused
    [patch] = homelab.of_type("kubernetes:core/v1:PersistentVolumeClaimPatch")
    manifest = as_manifest(patch)
    assert manifest["metadata"]["name"] == claim and manifest["metadata"]["namespace"] == "nats"
    labels = manifest["metadata"]["labels"]
    [job] = homelab.of_type("kubernetes:longhorn.io/v1beta2:RecurringJob")
    [group] = as_manifest(job)["spec"]["groups"]
    # Longhorn reads the group label only on a claim marked as a recurring-job source.
    assert labels["recurring-job.longhorn.io/source"] == "enabled"
    assert labels[f"recurring-job-group.longhorn.io/{group}"] == "enabled"
    # Applied after the StatefulSet, whose pods (so claims) exist once pulumi-kubernetes reports it ready.
    assert "nats-server-statefulset" in [d._name for d in homelab.options[patch.name].depends_on]


def test_namespace_outlives_the_stack(homelab):
    """`pulumi destroy` must not delete the namespace: the JetStream claim (every message) is in it."""
    [ns] = homelab.of_type("kubernetes:core/v1:Namespace")
    assert homelab.options[ns.name].retain_on_delete is True


@pytest.mark.parametrize("secret", [False, True])
def test_declared_keys_are_resources_after_their_bucket_and_stay_secret(secret):
    key_values = {"device-config": {"history": 5, "ttl": "30d", "storage": "file",
                                    "entries": {"room1.interval": "30", "wifi.psk": "psk-never-in-plaintext"}}}
    keys = tuple(TEST_SECRETS) + (("homelab-nats:keyValues",) if secret else ())
    run = run_program({**stack_config("homelab"), **encode_config({"homelab-nats:keyValues": key_values})},
                      secret_keys=keys)
    entries = {r.inputs["key"]: r for r in run.of_type("pulumi-python:dynamic/nats:KeyValueEntry")}
    assert set(entries) == {"room1.interval", "wifi.psk"}
    psk = entries["wifi.psk"].inputs
    assert psk["bucket"] == "device-config" and psk["allowDataLoss"] is False
    assert is_secret(psk["value"]) is secret
    [bucket] = run.of_type("pulumi-python:dynamic/nats:KeyValue")
    assert "entries" not in bucket.inputs and "psk-never-in-plaintext" not in json.dumps(bucket.inputs, default=str)
