"""The scheduled backup: a Kubernetes CronJob built from maintained stock images.

1. init container `snapshot` (natsio/nats-box: Alpine, busybox): `nats stream backup` for each stream into
   a shared emptyDir, in the CLI's layout (<dir>/<stream>/backup.json + stream.tar.s2); it also writes the
   run's backup id (UTC time + random suffix) and the current time, for the next container;
2. container `upload` (minio/mc): copies each into s3://BUCKET/PREFIX/<stream>/<id>/, stream.tar.s2 first
   and backup.json last (the layout `python -m streams` reads), then prunes: per stream the newest KEEP
   backups always stay, older ones go once older than MAX_AGE; and unfinished multipart uploads older
   than a day go.
A failed stream does not stop the others; the Job fails at the end and names the streams that failed.

What the images contain decides how the scripts are written:
- minio/mc (tag RELEASE.2025-08-13T08-35-41Z) is `FROM ubi9/ubi-micro` plus /usr/bin/mc (minio/mc
  Dockerfile.release): a shell and no awk, sed, grep, sort or date. The upload script uses only shell
  built-ins and mc; dates are compared as numbers it computes itself.
- mc reads the S3 alias from MC_HOST_<alias>=http(s)://KEY:SECRET@host (minio/mc cmd/config.go,
  parseEnvURLStr), so the keys reach it through the environment from the Secret, never a command line.
- nats-box is Alpine: busybox's date, od and tr are there.
tests/render/test_backup_job.py runs both scripts with a PATH holding only those tools.

The scripts and the manifests are pure functions of the settings.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from render import manifests
from stack.settings import Settings
from stack.users import BACKUP, inbox_prefix, secret_name

BACKUP_DIR = "/backup"
SECRET_NAME = manifests.BACKUP_S3_SECRET
S3_ALIAS = "backup"

# POSIX sh (busybox in nats-box). Environment: STREAMS, BACKUP_DIR, NATS_URL; with auth on also NATS_USER and
# NATS_PASSWORD (read by the nats CLI itself: natscli v0.4.0 nats/main.go) and NATS_INBOX_PREFIX (a flag there).
SNAPSHOT_SCRIPT = r"""set -u
# The CA file is mounted from an optional volume (an ACME issuer writes no ca.crt): without it, say why and stop.
if [ -n "${NATS_CA:-}" ] && [ ! -s "$NATS_CA" ]; then
  echo "no CA certificate at $NATS_CA: the server certificate's Secret has no ca.crt (an ACME issuer writes none)." >&2
  echo "Set homelab-nats:tls.trust to system (the image's CA bundle), or issue from a CA or SelfSigned issuer." >&2
  exit 1
fi
# This run's backup id: the UTC time and a random suffix, so that no two runs share a folder.
echo "$(date -u +%Y%m%dT%H%M%SZ)-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')" > "$BACKUP_DIR/ID"
date -u +%s > "$BACKUP_DIR/NOW"
: > "$BACKUP_DIR/FAILED"
for stream in $STREAMS; do
  if nats ${NATS_INBOX_PREFIX:+--inbox-prefix "$NATS_INBOX_PREFIX"} stream backup "$stream" "$BACKUP_DIR/streams/$stream"; then
    echo "snapshot of $stream done"
  else
    echo "snapshot of $stream FAILED" >&2
    rm -rf "$BACKUP_DIR/streams/$stream"
    echo "$stream" >> "$BACKUP_DIR/FAILED"
  fi
done
exit 0
"""

# sh with built-ins only, and mc (the minio/mc image has no other tools). Environment: BACKUP_DIR,
# MC_HOST_backup (from the Secret), BUCKET, PREFIX, KEEP, MAX_AGE_SECONDS.
UPLOAD_SCRIPT = r"""set -u
export LC_ALL=C   # byte order for the comparisons below, as Python compares text
read -r id < "$BACKUP_DIR/ID"
read -r now < "$BACKUP_DIR/NOW"
cutoff=$((now - MAX_AGE_SECONDS))
base="backup/$BUCKET/${PREFIX:+$PREFIX/}"
url="s3://$BUCKET/${PREFIX:+$PREFIX/}"
failed=""
while read -r stream; do
  [ -n "$stream" ] && failed="$failed $stream"
done < "$BACKUP_DIR/FAILED"

# Seconds since the epoch of a backup id YYYYMMDDTHHMMSSZ-... (days from the civil date, in shell
# arithmetic: there is no date command here).
epoch_of() {
  day=${1%%T*}; tod=${1#*T}; tod=${tod%%Z*}
  y=${day%????}; md=${day#????}; m=${md%??}; d=${md#??}
  H=${tod%????}; ms=${tod#??}; M=${ms%??}; S=${ms#??}
  m=${m#0}; d=${d#0}; H=${H#0}; M=${M#0}; S=${S#0}
  y=$((y - (m <= 2)))
  era=$(( (y >= 0 ? y : y - 399) / 400 )); yoe=$((y - era * 400))
  doy=$(( (153 * ((m + 9) % 12) + 2) / 5 + d - 1 )); doe=$((yoe * 365 + yoe / 4 - yoe / 100 + doy))
  echo $(( (era * 146097 + doe - 719468) * 86400 + H * 3600 + M * 60 + S ))
}

# The folder names (entries ending in /) of an `mc ls` listing, in its (ascending) order.
folders() {
  for word in $1; do
    case $word in */) printf '%s\n' "${word%/}" ;; esac
  done
}

for dir in "$BACKUP_DIR"/streams/*/; do
  [ -d "$dir" ] || continue
  stream=${dir%/}; stream=${stream##*/}
  if mc cp --quiet "$dir/stream.tar.s2" "$base$stream/$id/stream.tar.s2" >/dev/null \
     && mc cp --quiet "$dir/backup.json" "$base$stream/$id/backup.json" >/dev/null; then
    echo "uploaded $url$stream/$id/"
  else
    echo "upload of $stream FAILED" >&2
    failed="$failed $stream"
  fi
done

if ! streams=$(mc ls "$base"); then
  echo "listing $url FAILED: not pruned" >&2
  failed="$failed (prune)"
  streams=""
fi
# The order backups are pruned in: oldest first by the stream's state in backup.json (last message time, last and
# first sequence), the id breaking ties: the order `python -m streams prune` uses (streams/backup/s3.py
# BackupRef.order), not the folder names, which carry the clock of the node that took them.
order_key() {   # order_key FOLDER BACKUP_JSON: the sortable key of one backup, in $key
  st=${2##*\"state\"}
  ts=${st#*\"last_ts\"}; ts=${ts#*\"}; ts=${ts%%\"*}
  case $ts in 0001-01-01*|"") ts="" ;;
    *.*) frac=${ts#*.}; frac=${frac%Z}000000000; ts="${ts%%.*}.${frac:0:9}" ;;
    *) ts="${ts%Z}.000000000" ;;
  esac
  last=${st#*\"last_seq\"}; last=${last%%[,\}]*}; last=${last//[!0-9]/}
  first=${st#*\"first_seq\"}; first=${first%%[,\}]*}; first=${first//[!0-9]/}
  # ',' sorts below every digit: an empty time (an empty stream) comes first, as Python's "" does
  printf -v key '%s,%020d,%020d,%s' "$ts" "${last:-0}" "${first:-0}" "$1"
}

for stream in $(folders "$streams"); do
  if ! listing=$(mc ls "$base$stream/"); then
    echo "listing $url$stream/ FAILED: not pruned" >&2
    continue
  fi
  keys=()
  for folder in $(folders "$listing"); do
    case $folder in
      [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z*) ;;
      *) echo "skipped $url$stream/$folder/: not a backup"; continue ;;
    esac
    if ! meta=$(mc cat "$base$stream/$folder/backup.json" 2>/dev/null); then
      continue   # no backup.json: unfinished, or not ours; never pruned (as `python -m streams prune`)
    fi
    order_key "$folder" "$meta"
    i=${#keys[@]}   # insertion into the ascending list
    while [ "$i" -gt 0 ] && [[ "${keys[i-1]}" > "$key" ]]; do keys[i]=${keys[i-1]}; i=$((i - 1)); done
    keys[i]=$key
  done
  total=${#keys[@]}
  n=0
  for key in "${keys[@]}"; do
    n=$((n + 1))
    folder=${key##*,}
    # the newest KEEP by that order always stay; older ones go once older than MAX_AGE
    if [ $((total - n)) -ge "$KEEP" ] && [ "$(epoch_of "$folder")" -lt "$cutoff" ]; then
      if mc rm --quiet "$base$stream/$folder/backup.json" >/dev/null \
         && mc rm --quiet --recursive --force "$base$stream/$folder/" >/dev/null; then
        echo "pruned $url$stream/$folder/"
      else
        echo "pruning $url$stream/$folder/ FAILED" >&2
      fi
    fi
  done
done
# Uploads a lost connection left unfinished (invisible, but they hold space).
mc rm --quiet --incomplete --recursive --force --older-than 1d "$base" >/dev/null 2>&1 || true

if [ -n "$failed" ]; then
  echo "backups failed for:$failed" >&2
  exit 1
fi
exit 0
"""

_RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
               "runAsNonRoot": True}


def credentials_secret(settings: Settings) -> dict:
    """The Secret's shape; its values are filled from Pulumi secret config by the component."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": settings.namespace,
                         "labels": manifests.common_labels("backup")},
            "type": "Opaque"}


def _nats_login(settings: Settings) -> list[dict]:
    """With TLS on, the snapshot container trusts the server's CA (NATS_CA, read by the nats CLI); with auth on, it
    logs in as the backup user, from that user's Secret."""

    ca = [{"name": "NATS_CA", "value": manifests.CA_FILE}] if manifests.client_trusts_issuer_ca(settings) else []
    if not settings.auth.enabled:
        return ca
    return ca + [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(BACKUP), "key": k}}}
            for k in ("NATS_USER", "NATS_PASSWORD")] + [{"name": "NATS_INBOX_PREFIX", "value": inbox_prefix(BACKUP)}]


def cron_job(settings: Settings, streams: list[str]) -> dict:
    b = settings.backups
    uid = settings.fs_group
    secret_env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": k}}}
                  for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    endpoint = urlsplit(b.endpoint)
    # Kubernetes expands $(VAR) from the variables defined before it: the keys stay in the Secret and the
    # pod's environment, never in the manifest or on a command line.
    mc_host = {"name": f"MC_HOST_{S3_ALIAS}",
               "value": f"{endpoint.scheme}://$(AWS_ACCESS_KEY_ID):$(AWS_SECRET_ACCESS_KEY)@{endpoint.netloc}"}
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
                                    {"name": "HOME", "value": "/tmp"}] + _nats_login(settings),
                            "resources": resources,
                            "volumeMounts": mounts + manifests.client_tls_volumes(settings)[1],
                            "securityContext": _RESTRICTED,
                        }],
                        "containers": [{
                            "name": "upload", "image": settings.images.mc, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", UPLOAD_SCRIPT],
                            "env": secret_env + [mc_host,
                                                 {"name": "BACKUP_DIR", "value": BACKUP_DIR},
                                                 {"name": "BUCKET", "value": b.bucket},
                                                 {"name": "PREFIX", "value": b.prefix},
                                                 {"name": "KEEP", "value": str(b.keep)},
                                                 {"name": "MAX_AGE_SECONDS", "value": str(b.max_age_seconds)},
                                                 {"name": "HOME", "value": "/tmp"},
                                                 {"name": "MC_CONFIG_DIR", "value": "/tmp/.mc"}],
                            "resources": resources, "volumeMounts": mounts, "securityContext": _RESTRICTED,
                        }],
                        "volumes": [{"name": "backup", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
                        + manifests.client_tls_volumes(settings)[0],
                    },
                },
            }},
        },
    }
