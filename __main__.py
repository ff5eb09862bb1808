"""homelab-nats: NATS with JetStream on the homelab's Kubernetes, and its streams and consumers.

Stack -> components -> outputs. Nothing else lives here.
"""
import pulumi

from components.config import (
    all_config_keys,
    is_secret_key,
    present_backup_keys,
    read_admin_password,
    read_backup_credentials,
    read_stack_config,
)
from components.deployment import NatsBackupJob, NatsBackupJobArgs, NatsDeployment, NatsDeploymentArgs
from render.manifests import homelab_git_conflicts
from render.outputs import connection_details
from stack.catalog import CatalogError
from stack.errors import SettingsError
from stack.loader import build_stack, near_miss_namespaces
from stack.settings import backup_credentials_warning
from streams.resources import declare_buckets, declare_catalog

try:
    stack = build_stack(read_stack_config())
    admin_password = read_admin_password() if stack.settings.auth.enabled else None
    conflicts, conflict_warnings = homelab_git_conflicts(stack.settings)
    if conflicts:
        raise SettingsError("\n".join(conflicts))
except (SettingsError, CatalogError) as exc:
    raise pulumi.RunError(str(exc)) from None  # one clean message at preview, no traceback
settings = stack.settings
credentials_warning = backup_credentials_warning(settings, present_backup_keys())
for warning in [*near_miss_namespaces(all_config_keys()), *stack.warnings, *conflict_warnings,
                *filter(None, [credentials_warning])]:
    pulumi.log.warn(warning)

nats = NatsDeployment("nats", NatsDeploymentArgs(settings, stack.users, admin_password, stack.catalog))
declare_catalog(stack.catalog, jetstream_servers=settings.replicas, depends_on=nats.ready_resources)
declare_buckets(stack.buckets, jetstream_servers=settings.replicas, depends_on=nats.ready_resources,
                secret_entries=is_secret_key("keyValues"))
if settings.backups.enabled and credentials_warning is None:
    NatsBackupJob("nats-backup", NatsBackupJobArgs(settings, list(stack.backup_streams), read_backup_credentials()),
                  pulumi.ResourceOptions(depends_on=[nats.namespace]))

for key, value in connection_details(settings, stack.users, stack.buckets).items():
    pulumi.export(key, value)
