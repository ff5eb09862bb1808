"""The scheduled backup: a Kubernetes CronJob built from maintained stock images.

1. init container `snapshot` (natsio/nats-box): `nats stream backup` for each stream into a shared
   emptyDir, in the CLI's layout (<dir>/<stream>/backup.json + stream.tar.s2);
2. container `upload` (minio/mc): copies each into s3://BUCKET/PREFIX/<stream>/<UTC timestamp>/,
   stream.tar.s2 first and backup.json last (the layout `python -m streams` reads), then prunes:
   per stream the newest KEEP backups always stay, older ones go once older than MAX_AGE.
A failed stream does not stop the others; the Job fails at the end so the failure is visible.

The scripts and the manifests are pure functions of the settings (tested end to end with shims).
"""
from __future__ import annotations

from components import manifests
from components.settings import Settings

BACKUP_DIR = "/backup"
SECRET_NAME = "nats-backup-s3"

# POSIX sh (busybox in nats-box). Environment: STREAMS, BACKUP_DIR, NATS_URL.
SNAPSHOT_SCRIPT = r"""set -u
date -u +%Y%m%dT%H%M%SZ > "$BACKUP_DIR/TIMESTAMP"
for stream in $STREAMS; do
  if nats stream backup "$stream" "$BACKUP_DIR/streams/$stream"; then
    echo "snapshot of $stream done"
  else
    echo "snapshot of $stream FAILED" >&2
    rm -rf "$BACKUP_DIR/streams/$stream"
    echo "$stream" >> "$BACKUP_DIR/FAILED"
  fi
done
exit 0
"""

# POSIX sh (minio/mc). Environment: BACKUP_DIR, S3_ENDPOINT, BUCKET, PREFIX, KEEP, MAX_AGE_SECONDS,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (from the Secret; never echoed).
UPLOAD_SCRIPT = r"""set -eu
mc alias set backup "$S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" --api S3v4 --path on >/dev/null
ts=$(cat "$BACKUP_DIR/TIMESTAMP")
base="backup/$BUCKET/${PREFIX:+$PREFIX/}"
status=0
for dir in "$BACKUP_DIR"/streams/*/; do
  [ -d "$dir" ] || continue
  stream=$(basename "$dir")
  dest="$base$stream/$ts"
  if mc cp --quiet "$dir/stream.tar.s2" "$dest/stream.tar.s2" >/dev/null \
     && mc cp --quiet "$dir/backup.json" "$dest/backup.json" >/dev/null; then
    echo "uploaded s3://$BUCKET/${PREFIX:+$PREFIX/}$stream/$ts/"
  else
    echo "upload of $stream FAILED" >&2
    status=1
  fi
done
cutoff=$(date -u -d "@$(( $(date -u +%s) - MAX_AGE_SECONDS ))" +%Y%m%dT%H%M%SZ)
for stream in $(mc ls "$base" | awk '{print $NF}' | tr -d /); do
  n=0
  for folder in $(mc ls "$base$stream/" | awk '{print $NF}' | tr -d / | sort -r); do
    n=$((n + 1))
    if [ "$n" -gt "$KEEP" ] && expr "$folder" \< "$cutoff" >/dev/null; then
      mc rm --quiet "$base$stream/$folder/backup.json" >/dev/null
      mc rm --quiet --recursive --force "$base$stream/$folder/" >/dev/null
      echo "pruned s3://$BUCKET/${PREFIX:+$PREFIX/}$stream/$folder/"
    fi
  done
done
if [ -s "$BACKUP_DIR/FAILED" ]; then
  echo "snapshots failed for: $(tr '\n' ' ' < "$BACKUP_DIR/FAILED")" >&2
  status=1
fi
exit $status
"""

_RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
               "runAsNonRoot": True}


def backup_streams(settings: Settings, catalog) -> list[str]:
    """The streams the job backs up: the configured list, else every file-backed stream of the catalog
    (memory streams cannot be snapshotted)."""
    if settings.backups.streams is not None:
        return list(settings.backups.streams)
    return [spec.name for spec in catalog if spec.config.get("storage", "file") == "file"]


def backup_stream_warnings(settings: Settings, catalog) -> list[str]:
    """`backups.streams` against the catalog: a memory stream is an error (the server cannot snapshot one, so
    every run would fail); a name the stack does not declare is a warning (it may be a stream made outside
    Pulumi; if it does not exist, every run reports it failed)."""
    from components.settings import SettingsError, config_key

    if settings.backups.streams is None:
        return []
    declared = {spec.name: spec for spec in catalog}
    warnings = []
    for name in settings.backups.streams:
        spec = declared.get(name)
        if spec is None:
            warnings.append(f"{config_key('backups.streams')}: {name!r} is not a stream this stack declares; the "
                            "nightly backup will fail for it unless it exists on the server")
        elif spec.config.get("storage", "file") == "memory":
            raise SettingsError(f"{config_key('backups.streams')}: {name!r} is a memory stream, which the server "
                                "cannot snapshot; remove it from the list (or make the stream file-backed)")
    return warnings


def credentials_secret(settings: Settings) -> dict:
    """The Secret's shape; its values are filled from Pulumi secret config by the component."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": settings.namespace,
                         "labels": manifests.common_labels("backup")},
            "type": "Opaque"}


def cron_job(settings: Settings, streams: list[str]) -> dict:
    b = settings.backups
    uid = settings.fs_group
    secret_env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": k}}}
                  for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    mounts = [{"name": "backup", "mountPath": BACKUP_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nats-backup", "namespace": settings.namespace,
                     "labels": manifests.common_labels("backup")},
        "spec": {
            "schedule": b.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": 1,
                "activeDeadlineSeconds": 3 * 3600,
                "template": {
                    "metadata": {"labels": manifests.common_labels("backup")},
                    "spec": {
                        "restartPolicy": "Never",
                        "enableServiceLinks": False,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                                            "fsGroup": uid, "seccompProfile": {"type": "RuntimeDefault"}},
                        "initContainers": [{
                            "name": "snapshot", "image": settings.images.nats_box, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", SNAPSHOT_SCRIPT],
                            "env": [{"name": "NATS_URL", "value": manifests.in_cluster_url(settings)},
                                    {"name": "STREAMS", "value": " ".join(streams)},
                                    {"name": "BACKUP_DIR", "value": BACKUP_DIR},
                                    {"name": "HOME", "value": "/tmp"}],
                            "resources": resources, "volumeMounts": mounts, "securityContext": _RESTRICTED,
                        }],
                        "containers": [{
                            "name": "upload", "image": settings.images.mc, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", UPLOAD_SCRIPT],
                            "env": [{"name": "BACKUP_DIR", "value": BACKUP_DIR},
                                    {"name": "S3_ENDPOINT", "value": b.endpoint},
                                    {"name": "BUCKET", "value": b.bucket},
                                    {"name": "PREFIX", "value": b.prefix},
                                    {"name": "KEEP", "value": str(b.keep)},
                                    {"name": "MAX_AGE_SECONDS", "value": str(b.max_age_seconds)},
                                    {"name": "HOME", "value": "/tmp"},
                                    {"name": "MC_CONFIG_DIR", "value": "/tmp/.mc"}] + secret_env,
                            "resources": resources, "volumeMounts": mounts, "securityContext": _RESTRICTED,
                        }],
                        "volumes": [{"name": "backup", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                    },
                },
            }},
        },
    }
