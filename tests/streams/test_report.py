"""`python -m streams report`: the pure rows as tables, and the command against a real server."""
import json
from datetime import UTC, datetime

import pytest

from stack.buckets import load_all_buckets
from stack.catalog import load_catalog
from streams.cli import main
from streams.cli.report import build_report, format_report
from streams.jetstream import close_all_clients
from streams.local.apply import apply_catalog
from tests.provider_harness import RawJetStream
from tests.stack.test_settings import homelab_raw
from tests.streams.test_data_loss import fetch_and_ack

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def stream(name, **state):
    return {"config": {"name": name, "storage": "file", "num_replicas": 1},
            "state": {"messages": 0, "bytes": 0, "first_ts": "0001-01-01T00:00:00Z", "last_ts": "0001-01-01T00:00:00Z",
                      **state}}


@pytest.mark.parametrize("name, declared, buckets, kind, is_declared", [
    ("iot-sensors", {"iot-sensors"}, {}, "stream", True),
    ("scratch", {"iot-sensors"}, {}, "stream", False),
    ("KV_device-config", set(), {"KV_device-config": "key-value bucket device-config"},
     "key-value bucket device-config", True),
    ("KV_other", set(), {}, "key-value bucket other", False),
    ("OBJ_firmware", set(), {}, "object store firmware", False),
    ("$MQTT_msgs", set(), {}, "server's own (MQTT)", False),
])
def test_what_each_stream_is(name, declared, buckets, kind, is_declared):
    [row] = build_report([stream(name)], {}, declared_streams=declared, declared_consumers=set(), buckets=buckets,
                         now=NOW)["streams"]
    assert (row["kind"], row["declared"]) == (kind, is_declared)


def test_ages_and_numbers():
    info = stream("s", messages=3, bytes=300, first_seq=5, last_seq=7, last_ts="2026-12-04T11:59:30.5Z",
                  consumer_count=1, num_subjects=2)
    consumer = {"name": "c", "num_pending": 4, "num_ack_pending": 1, "num_redelivered": 2,
                "delivered": {"stream_seq": 6, "last_active": "2026-12-04T11:00:00Z"},
                "ack_floor": {"stream_seq": 5, "last_active": "0001-01-01T00:00:00Z"}}
    report = build_report([info], {"s": [consumer]}, declared_streams={"s"}, declared_consumers={("s", "c")},
                          buckets={}, now=NOW)
    [s] = report["streams"]
    assert (s["messages"], s["bytes"], s["first_seq"], s["last_seq"], s["subjects"], s["consumers"]) == (3, 300, 5, 7, 2, 1)
    assert s["last_message_age_s"] == 29.5
    [c] = report["consumers"]
    assert (c["pending"], c["ack_pending"], c["redelivered"], c["ack_floor_stream_seq"]) == (4, 1, 2, 5)
    assert c["last_delivery_age_s"] == 3600 and c["last_ack_age_s"] is None and c["declared"]
    table = format_report(report)
    assert table.splitlines()[0].split()[:3] == ["STREAM", "KIND", "DECLARED"]
    assert "1.0h ago" in table and "never" in table and "s/c" in table


def test_report_against_the_homelab_catalog(nats_server, capsys):
    server = nats_server()
    raw_config = homelab_raw()
    apply_catalog(load_catalog(raw_config["streams"]), server.client_url, buckets=load_all_buckets(raw_config))
    close_all_clients()
    raw = RawJetStream(server.client_url)
    raw.publish("sensors.temperature.room1", [b"t"] * 5)
    fetch_and_ack(server.client_url, "iot-sensors", "processor", 2)
    raw.api("$JS.API.STREAM.CREATE.scratch", {"name": "scratch", "subjects": ["scratch.>"]})
    assert main(["report", "--server", server.client_url, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == f"NATS: {server.client_url} (--server)"
    report = json.loads(out)
    streams = {s["name"]: s for s in report["streams"]}
    assert streams["iot-sensors"]["messages"] == 5 and streams["iot-sensors"]["declared"]
    assert streams["scratch"]["declared"] is False
    assert streams["KV_device-config"]["kind"] == "key-value bucket device-config" and streams["KV_device-config"]["declared"]
    assert streams["events"]["storage"] == "memory"
    consumers = {(c["stream"], c["name"]): c for c in report["consumers"]}
    processor = consumers[("iot-sensors", "processor")]
    assert (processor["pending"], processor["ack_floor_stream_seq"]) == (3, 2)
    assert processor["last_ack_age_s"] is not None and processor["last_ack_age_s"] < 60
    assert consumers[("iot-sensors", "replay")]["last_delivery_age_s"] is None
    assert main(["report", "--server", server.client_url]) == 0
    table = capsys.readouterr().out
    assert "iot-sensors/processor" in table and "scratch" in table
