"""NatsDeployment: the whole NATS-on-Kubernetes deployment as one Pulumi component.

Children: the namespace, the users when auth is on (generated passwords, the server's auth Secret, one
Secret per user), the NATS server (ConfigMap, StatefulSet, Services, PodDisruptionBudget), nats-box
(Deployment + contexts Secret) and, when enabled, the Longhorn snapshot RecurringJob.
All specs come from `render.manifests`; this file only wires them into Pulumi.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import monitor_supports_feature

from components.kube import declare
from render import backup_job, manifests, memory_streams
from render.auth_conf import render_auth_conf
from render.nats_conf import AUTH_FILE, has_auth_file
from stack.settings import Settings
from stack.users import NATS_BOX, SYSTEM, ServerUser


@dataclass
class NatsDeploymentArgs:
    settings: Settings
    users: tuple[ServerUser, ...] = ()                 # stack.users.plan_users; empty when auth is off
    admin_password: pulumi.Input[str] | None = None    # homelab-nats:natsPassword, when auth is on
    catalog: tuple = ()                                # stack.catalog.StreamSpec: its memory streams come back


class NatsDeployment(pulumi.ComponentResource):
    """Everything the cluster runs for NATS."""

    def __init__(self, name: str, args: NatsDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab-nats:index:NatsDeployment", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # Deleting the namespace deletes the JetStream claim in it (every message): `pulumi destroy` leaves
        # it in the cluster; delete it by hand once the data is no longer wanted.
        self.namespace = declare(k8s.core.v1.Namespace, f"{name}-namespace", manifests.namespace(s),
                                 pulumi.ResourceOptions(parent=self, retain_on_delete=True))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.users = None
        server_opts = in_ns
        if has_auth_file(s):   # the users when auth is on; a cluster's system user always
            self.users = NatsUsers(f"{name}-users", NatsUsersArgs(s, args.users, args.admin_password), in_ns)
            server_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, self.users.auth_secret])
        self.server = NatsServer(f"{name}-server", NatsServerArgs(settings=s), server_opts)
        box_password = self.users.passwords[NATS_BOX] if self.users and s.auth.enabled else None
        self.nats_box = NatsBox(f"{name}-box", NatsBoxArgs(settings=s, password=box_password, catalog=args.catalog),
                                pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, self.server]))
        self.volume_snapshots = None
        self.claim_labels = []
        if s.volume_snapshots.enabled:
            self.volume_snapshots = declare(
                k8s.apiextensions.CustomResource, f"{name}-volume-snapshots", manifests.longhorn_recurring_job(s),
                child)
            # After the StatefulSet (pulumi-kubernetes waits for its pods, so every claim exists by then).
            self.claim_labels = [
                declare(k8s.core.v1.PersistentVolumeClaimPatch, f"{name}-{patch['metadata']['name']}-labels", patch,
                        pulumi.ResourceOptions(parent=self, depends_on=[self.server.stateful_set]))
                for patch in manifests.js_claim_label_patches(s)]
        # Stream and consumer resources depend on these: they exist only once clients can connect.
        self.ready_resources = self.server.ready_resources
        self.register_outputs({"namespace": self.namespace.metadata["name"]})


@dataclass
class NatsServerArgs:
    settings: Settings


class NatsServer(pulumi.ComponentResource):
    """The NATS StatefulSet (nats, reloader, prom-exporter), its config, Services and PDB."""

    def __init__(self, name: str, args: NatsServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab-nats:index:NatsServer", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.config_map = declare(k8s.core.v1.ConfigMap, f"{name}-config", manifests.config_map(s), child)
        self.headless_service = declare(k8s.core.v1.Service, f"{name}-headless", manifests.headless_service(s),
                                        child)
        before_pods = [self.config_map, self.headless_service]
        if s.tls.enabled and s.tls.issuer_name:
            # cert-manager issues it into the Secret the pod mounts (the pod waits for that Secret to exist).
            before_pods.append(declare(k8s.apiextensions.CustomResource, f"{name}-certificate",
                                       manifests.certificate(s), child))
        self.stateful_set = declare(
            k8s.apps.v1.StatefulSet, f"{name}-statefulset", manifests.stateful_set(s),
            pulumi.ResourceOptions(parent=self, depends_on=before_pods))
        self.client_service = declare(k8s.core.v1.Service, f"{name}-client", manifests.client_service(s),
                                      client_service_options(s, self, self.stateful_set))
        self.pdb = declare(k8s.policy.v1.PodDisruptionBudget, f"{name}-pdb", manifests.pod_disruption_budget(s),
                           child)
        if s.monitoring.prometheus_operator:
            declare(k8s.apiextensions.CustomResource, f"{name}-podmonitor", manifests.pod_monitor(s), child)

        if s.monitoring.grafana_dashboard:
            declare(k8s.core.v1.ConfigMap, f"{name}-dashboard", manifests.grafana_dashboard(s), child)
        # pulumi-kubernetes waits for the StatefulSet's pods to be ready and for the LoadBalancer to get
        # its address, so once these are created clients can connect.
        self.ready_resources = [self.stateful_set, self.client_service]
        self.register_outputs({"statefulSet": self.stateful_set.metadata["name"],
                               "clientService": self.client_service.metadata["name"]})


def client_service_options(settings: Settings, parent: pulumi.Resource,
                           stateful_set: pulumi.Resource) -> pulumi.ResourceOptions:
    """The client Service comes after the pods are ready, so that pulumi-kubernetes' wait on it (for endpoints and
    the load balancer's address) is MetalLB's alone, and is cut to ADDRESS_TIMEOUT; an error hook prints what to
    check when it ends without an address (where the Pulumi CLI runs error hooks)."""
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[stateful_set])
    if not settings.load_balancer.enabled:
        return opts
    timeouts = pulumi.CustomTimeouts(create=manifests.ADDRESS_TIMEOUT, update=manifests.ADDRESS_TIMEOUT)
    hooks = None
    if monitor_supports_feature(resource_pb2.RESOURCE_MONITOR_FEATURE_ERROR_HOOKS):
        hooks = pulumi.ResourceHookBinding(on_error=[pulumi.ErrorHook("nats-no-address", no_address_hook(settings))])
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(custom_timeouts=timeouts, hooks=hooks))


def no_address_hook(settings: Settings):
    """The error hook's function: log what to check (manifests.no_address_hint) and never retry."""
    def on_error(args: pulumi.ErrorHookArgs) -> bool:
        hint = manifests.no_address_hint(settings, list(args.errors))
        if hint:
            pulumi.log.error(hint)
        return False
    return on_error


@dataclass
class NatsUsersArgs:
    settings: Settings
    users: tuple[ServerUser, ...]
    admin_password: pulumi.Input[str]


class NatsUsers(pulumi.ComponentResource):
    """The NATS users: a generated password per user (the admin's is homelab-nats:natsPassword), the Secret the
    server includes (users, passwords, permissions) and, for every user but the admin and nats-box (whose
    password goes into its context), a Secret a workload mounts. Every password stays a secret: in the state, the
    Secrets and the outputs."""

    def __init__(self, name: str, args: NatsUsersArgs, opts: pulumi.ResourceOptions | None = None):
        import pulumi_random

        super().__init__("homelab-nats:index:NatsUsers", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        passwords: dict[str, pulumi.Output] = {s.admin_user: pulumi.Output.secret(args.admin_password)}
        self.user_secrets = {}
        for user in args.users:
            if user.name == s.admin_user:
                continue
            # Letters and digits only: a password that goes into URLs and shells without quoting.
            passwords[user.name] = pulumi_random.RandomPassword(
                f"{name}-{user.name}-password", length=32, special=False, opts=child).result
            if user.name == NATS_BOX:
                continue
            secret = manifests.user_secret(s, user)
            secret["stringData"] = {**secret["stringData"],
                                    manifests.password_key(user): pulumi.Output.secret(passwords[user.name])}
            self.user_secrets[user.name] = declare(k8s.core.v1.Secret, f"{name}-{user.name}", secret, child)
        self.passwords = passwords
        users = args.users
        system = None
        if s.replicas > 1:   # the cluster's operator (peer removal), in the system account
            system = pulumi_random.RandomPassword(f"{name}-{SYSTEM}-password", length=32, special=False,
                                                  opts=child).result
            secret = manifests.user_secret(s, ServerUser(SYSTEM))
            secret["stringData"] = {**secret["stringData"], "NATS_PASSWORD": pulumi.Output.secret(system)}
            self.user_secrets[SYSTEM] = declare(k8s.core.v1.Secret, f"{name}-{SYSTEM}", secret, child)
        content = pulumi.Output.all(pulumi.Output.from_input(system), pulumi.Output.all(**passwords)).apply(
            lambda values: render_auth_conf(users, values[1], system_password=values[0]))
        self.auth_secret = declare(k8s.core.v1.Secret, f"{name}-auth", {
            **manifests.auth_secret(s), "stringData": {AUTH_FILE: pulumi.Output.secret(content)}}, child)
        self.register_outputs({"authSecret": self.auth_secret.metadata["name"]})


@dataclass
class NatsBoxArgs:
    settings: Settings
    password: pulumi.Input[str] | None = None   # the nats-box user's, when auth is on
    catalog: tuple = ()                         # its memory streams are made again after a restart


class NatsBox(pulumi.ComponentResource):
    """nats-box with a default context, so `kubectl exec deploy/nats-box -- nats ...` needs no --server."""

    def __init__(self, name: str, args: NatsBoxArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab-nats:index:NatsBox", name, None, opts)
        s = args.settings
        contexts = manifests.nats_box_contexts_secret(s)
        if s.auth.enabled:
            contexts["stringData"] = {"default.json": pulumi.Output.secret(args.password).apply(
                lambda password: manifests.nats_box_context(s, password))}
        self.contexts = declare(k8s.core.v1.Secret, f"{name}-contexts", contexts, pulumi.ResourceOptions(parent=self))
        before = [self.contexts]
        if memory_streams.memory_specs(args.catalog):
            before.append(declare(k8s.core.v1.ConfigMap, f"{name}-memory-streams",
                                  memory_streams.config_map(s, args.catalog), pulumi.ResourceOptions(parent=self)))
        self.deployment = declare(k8s.apps.v1.Deployment, f"{name}-deployment",
                                  memory_streams.nats_box_deployment(s, args.catalog),
                                  pulumi.ResourceOptions(parent=self, depends_on=before))
        self.register_outputs({"deployment": self.deployment.metadata["name"]})


@dataclass
class BackupCredentials:
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]


@dataclass
class NatsBackupJobArgs:
    settings: Settings
    streams: list[str]
    credentials: BackupCredentials


class NatsBackupJob(pulumi.ComponentResource):
    """The scheduled stream backup: a CronJob and the Secret with its S3 credentials."""

    def __init__(self, name: str, args: NatsBackupJobArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab-nats:index:NatsBackupJob", name, None, opts)
        s = args.settings
        secret = {**backup_job.credentials_secret(s), "stringData": {
            "AWS_ACCESS_KEY_ID": pulumi.Output.secret(args.credentials.access_key_id),
            "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(args.credentials.secret_access_key)}}
        self.secret = declare(k8s.core.v1.Secret, f"{name}-s3", secret, pulumi.ResourceOptions(parent=self))
        self.cron_job = declare(k8s.batch.v1.CronJob, f"{name}-cronjob", backup_job.cron_job(s, args.streams),
                                pulumi.ResourceOptions(parent=self, depends_on=[self.secret]))
        self.register_outputs({"cronJob": self.cron_job.metadata["name"]})
