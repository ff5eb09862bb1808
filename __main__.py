"""homelab-nats: NATS with JetStream on the homelab's Kubernetes, and its streams and consumers.

Settings -> components -> outputs. Nothing else lives here.
"""
import pulumi

from stack.users import plan_users
from render.backup_job import backup_stream_warnings, backup_streams
from render.outputs import connection_details
from components.deployment import NatsBackupJob, NatsBackupJobArgs, NatsDeployment, NatsDeploymentArgs
from render.manifests import homelab_git_conflicts
from stack.settings import SettingsError, backup_credentials_warning, load_settings
from components.stack_config import (all_config_keys, near_miss_namespaces, present_backup_keys,
                                     read_admin_password, read_backup_credentials, read_stack_config)
from stack.catalog import CatalogError, catalog_warnings, load_catalog
from stack.buckets import load_all_buckets
from streams.resources import declare_buckets, declare_catalog

try:
    config = read_stack_config()
    settings = load_settings(config)
    catalog = load_catalog(config.get("streams"), max_replicas=settings.replicas,
                           store_limits=settings.jetstream.store_limits)
    buckets = load_all_buckets(config, streams=catalog, max_replicas=settings.replicas,
                               store_limits=settings.jetstream.store_limits)
    stream_warnings = backup_stream_warnings(settings, catalog)
    users = plan_users(settings.auth, catalog, backup_streams(settings, catalog, buckets), admin=settings.admin_user,
                       buckets=buckets)
    admin_password = read_admin_password() if settings.auth.enabled else None
    conflicts, conflict_warnings = homelab_git_conflicts(settings)
    if conflicts:
        raise SettingsError("\n".join(conflicts))
except (SettingsError, CatalogError) as exc:
    raise pulumi.RunError(str(exc)) from None  # one clean message at preview, no traceback
credentials_warning = backup_credentials_warning(settings, present_backup_keys())
for warning in [*near_miss_namespaces(all_config_keys()), *settings.warnings, *conflict_warnings,
                *catalog_warnings(catalog, jetstream_servers=settings.replicas),
                *stream_warnings, *filter(None, [credentials_warning])]:
    pulumi.log.warn(warning)

nats = NatsDeployment("nats", NatsDeploymentArgs(settings, users, admin_password, catalog))
declare_catalog(catalog, jetstream_servers=settings.replicas, depends_on=nats.ready_resources)
declare_buckets(buckets, jetstream_servers=settings.replicas, depends_on=nats.ready_resources)
if settings.backups.enabled and credentials_warning is None:
    NatsBackupJob("nats-backup", NatsBackupJobArgs(settings, backup_streams(settings, catalog, buckets),
                                                     read_backup_credentials()),
                  pulumi.ResourceOptions(depends_on=[nats.namespace]))

for key, value in connection_details(settings, users, buckets).items():
    pulumi.export(key, value)
