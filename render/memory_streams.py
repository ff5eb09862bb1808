"""Memory streams come back by themselves after a NATS restart: a second container in the nats-box pod.

A standalone nats-server keeps nothing of a memory stream across a restart, not even its definition (nack#202 is
the same bug in NACK); `pulumi up` makes it again only when someone runs it. This container, from the stock
nats-box image, makes every declared memory stream (and its consumers) again within a pass of a restart:

- the declarations are rendered into the ConfigMap `nats-memory-streams`: one JSON file per stream and consumer,
  the JetStream API config the provider itself sends (`StreamProvider._wire`, with this tool's managed mark), and
  two lists, `streams` (`NAME FILE` lines) and `consumers` (`STREAM NAME FILE`);
- every INTERVAL seconds it reads the server's start time from the monitoring port (`/varz`), and for each
  declared stream that is missing it makes it again with `nats stream add NAME --config FILE`, then its
  consumers with `nats consumer add STREAM NAME --config FILE` (natscli v0.4.0 cli/stream_command.go and
  cli/consumer_command.go: `--config` reads a JSON config file; the consumer's reserved `_nats.` metadata is
  dropped, this tool's mark kept);
- only after a restart: a stream it saw before, under the same server start, that is now gone was deleted on
  purpose (`pulumi up` removing it, an operator), and is left alone until the next restart or `pulumi up`.

What the image has decides how the script is written: nats-box is Alpine (`FROM alpine:3.23` in nats-io/nats-box's
Dockerfile) with busybox's sh, wget, sleep, mkdir and the `nats` CLI; the script uses only those and shell
built-ins. tests/render/test_memory_streams.py runs it with a PATH holding only them, against a real server restarted.
"""
from __future__ import annotations

import json

from render import manifests
from stack.catalog import mark_managed
from stack.settings import Settings

CONFIG_MAP = "nats-memory-streams"
DECLARATIONS_DIR = "/etc/nats-memory-streams"
STATE_DIR = "/tmp/memory-streams"
INTERVAL_SECONDS = 15

# POSIX sh (busybox). Environment: DECLARATIONS, STATE, MONITOR_URL, INTERVAL; the nats CLI's context as in
# nats-box (NATS_CONTEXT, XDG_CONFIG_HOME).
SCRIPT = r"""set -u
trap 'exit 0' INT TERM
mkdir -p "$STATE"
server_start() {
  varz=$(wget -q -O - "$MONITOR_URL/varz" 2>/dev/null) || return 1
  start=${varz#*\"start\"}
  start=${start#*\"}
  start=${start%%\"*}
  [ -n "$start" ]
}
while :; do
  if server_start; then
    recreated=" "
    while read -r stream file; do
      [ -n "$stream" ] || continue
      if nats stream info "$stream" >/dev/null 2>&1; then
        echo "$start" > "$STATE/$stream"
        continue
      fi
      seen=""
      [ -f "$STATE/$stream" ] && read -r seen < "$STATE/$stream"
      if [ "$seen" = "$start" ]; then
        continue   # gone under the same server: deleted on purpose, not by a restart
      fi
      if nats stream add "$stream" --config "$DECLARATIONS/$file" >/dev/null 2>&1; then
        echo "$start" > "$STATE/$stream"
        recreated="$recreated$stream "
        echo "made memory stream $stream again after the server started at $start; its messages from before are gone"
      else
        echo "could not make memory stream $stream yet; trying again in ${INTERVAL}s" >&2
      fi
    done < "$DECLARATIONS/streams"
    while read -r stream consumer file; do
      [ -n "$stream" ] || continue
      case "$recreated" in *" $stream "*) ;; *) continue ;; esac
      if nats consumer add "$stream" "$consumer" --config "$DECLARATIONS/$file" >/dev/null 2>&1; then
        echo "made consumer $stream/$consumer again"
      else
        echo "could not make consumer $stream/$consumer again" >&2
      fi
    done < "$DECLARATIONS/consumers"
  fi
  sleep "$INTERVAL" &
  wait $!
done
"""


def memory_specs(catalog) -> list:
    """The catalog's memory streams."""
    return [spec for spec in catalog if spec.config.get("storage") == "memory"]


def declarations(catalog) -> dict[str, str]:
    """The ConfigMap's data: the config files (the catalog's wire configs, which the provider sends too) and the two
    lists the script reads. Files are numbered: ConfigMap keys allow fewer characters than stream names."""
    data: dict[str, str] = {}
    streams, consumers = [], []
    for i, spec in enumerate(memory_specs(catalog)):
        config = mark_managed(spec.config)
        data[f"stream-{i}.json"] = json.dumps(config, indent=2, sort_keys=True)
        streams.append(f"{spec.name} stream-{i}.json")
        for j, c in enumerate(spec.consumers):
            config = mark_managed(c.config)
            data[f"stream-{i}-consumer-{j}.json"] = json.dumps(config, indent=2, sort_keys=True)
            consumers.append(f"{spec.name} {c.name} stream-{i}-consumer-{j}.json")
    data["streams"] = "".join(line + "\n" for line in streams)
    data["consumers"] = "".join(line + "\n" for line in consumers)
    return data


def config_map(settings: Settings, catalog) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": settings.namespace,
                         "labels": manifests.common_labels("nats-box")},
            "data": declarations(catalog)}


def container(settings: Settings) -> dict:
    """The container beside nats-box: its image, its context, the declarations."""
    box = manifests.nats_box_deployment(settings)["spec"]["template"]["spec"]["containers"][0]
    return {
        "name": "memory-streams",
        "image": settings.images.nats_box,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", SCRIPT],
        "env": box["env"] + [{"name": "DECLARATIONS", "value": DECLARATIONS_DIR},
                             {"name": "STATE", "value": STATE_DIR},
                             {"name": "MONITOR_URL", "value": f"http://{manifests.NAME}:{settings.ports.monitoring}"},
                             {"name": "INTERVAL", "value": str(INTERVAL_SECONDS)}],
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "5m", "memory": "16Mi"}},
        "volumeMounts": box["volumeMounts"] + [{"name": "memory-streams", "mountPath": DECLARATIONS_DIR,
                                               "readOnly": True}],
        "securityContext": box["securityContext"],
    }


def nats_box_deployment(settings: Settings, catalog) -> dict:
    """nats-box's Deployment, with this container and its declarations beside nats-box when the catalog declares
    memory streams."""
    deployment = manifests.nats_box_deployment(settings)
    if not memory_specs(catalog):
        return deployment
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"].append(container(settings))
    pod["volumes"].append({"name": "memory-streams", "configMap": {"name": CONFIG_MAP}})
    return deployment
