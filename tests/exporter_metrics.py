"""The metric names prometheus-nats-exporter exposes with the arguments this project gives it
(`render.manifests.exporter_args`: -connz -routez -subz -varz -prefix=nats -jsz=all).

From the exporter's source (nats-io/prometheus-nats-exporter, collector/collector.go, jsz.go, connz.go):
- `-prefix` replaces both namespaces (`gnatsd` and `jetstream`) with `nats`;
- varz/subz/routez: `<prefix>_<endpoint>_<field>`, nested objects joined with `_`, numbers only
  (booleans and arrays are never exported; strings only for a few label keys);
- jsz: the explicit series of jsz.go, `<prefix>_<server|stream|consumer>_<name>`;
- connz: the summary series of connz.go.
"""
from __future__ import annotations

JSZ_SERIES = {
    "server": ["jetstream_disabled", "total_streams", "total_consumers", "total_messages", "total_message_bytes",
               "max_memory", "max_storage"],
    "stream": ["total_messages", "total_bytes", "first_seq", "last_seq", "consumer_count"],
    "consumer": ["delivered_consumer_seq", "delivered_stream_seq", "num_ack_pending", "num_redelivered",
                 "num_waiting", "num_pending", "ack_floor_stream_seq", "ack_floor_consumer_seq"],
}
CONNZ_SERIES = ["num_connections", "total", "offset", "limit", "pending_bytes", "subscriptions", "in_msgs",
                "in_bytes", "out_msgs", "out_bytes"]


def _numeric_fields(obj: dict, prefix: str = ""):
    for key, value in obj.items():
        if isinstance(value, bool) or isinstance(value, list):
            continue
        if isinstance(value, dict):
            yield from _numeric_fields(value, f"{prefix}{key}_")
        elif isinstance(value, (int, float)):
            yield f"{prefix}{key}"


def exposed_metrics(varz: dict, prefix: str = "nats") -> set[str]:
    """Every series name the exporter would expose for this server's /varz, plus jsz and connz."""
    names = {f"{prefix}_varz_{field}" for field in _numeric_fields(varz)}
    names |= {f"{prefix}_{kind}_{series}" for kind, series_list in JSZ_SERIES.items() for series in series_list}
    names |= {f"{prefix}_connz_{series}" for series in CONNZ_SERIES}
    return names
