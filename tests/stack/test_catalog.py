"""The catalog: the homelab stack declares exactly the guide's objects, and bad declarations are
refused with a message naming the stream or consumer and the key."""
import pytest

from stack.catalog import CatalogError, catalog_warnings, load_catalog
from tests.stack.test_settings import homelab_raw

H = 3600 * 10**9
D = 24 * H


@pytest.fixture(scope="module")
def catalog():
    return {s.name: s for s in load_catalog(homelab_raw()["streams"])}


def test_homelab_streams_are_the_guides(catalog):
    assert set(catalog) == {"iot-sensors", "app-logs", "events", "sensors", "analytics"}
    assert catalog["iot-sensors"].config == {"name": "iot-sensors", "subjects": ["sensors.>"], "storage": "file",
                                             "retention": "limits", "max_age": D, "max_msgs": -1, "num_replicas": 1}
    assert catalog["app-logs"].config == {"name": "app-logs", "subjects": ["logs.>"], "storage": "file",
                                          "retention": "limits", "max_age": 7 * D, "max_bytes": 1073741824,
                                          "num_replicas": 1}
    assert catalog["events"].config == {"name": "events", "subjects": ["events.>"], "storage": "memory",
                                        "retention": "limits", "max_age": H, "num_replicas": 1}
    assert catalog["sensors"].config["subjects"] == ["iot.>"] and catalog["sensors"].config["max_age"] == 30 * D
    assert catalog["analytics"].config["subjects"] == ["analytics.>"]


def test_homelab_consumers_are_the_guides(catalog):
    consumers = {(c.stream, c.name): c.config for s in catalog.values() for c in s.consumers}
    assert consumers == {
        ("iot-sensors", "processor"): {"durable_name": "processor", "filter_subject": "sensors.temperature.>",
                                       "ack_policy": "explicit", "deliver_policy": "all", "max_deliver": 3},
        ("iot-sensors", "replay"): {"durable_name": "replay", "filter_subject": "sensors.>", "ack_policy": "explicit",
                                    "deliver_policy": "by_start_time", "opt_start_time": "2025-07-15T10:00:00Z"},
        ("iot-sensors", "last-100"): {"durable_name": "last-100", "filter_subject": "sensors.>",
                                      "ack_policy": "explicit", "deliver_policy": "last_per_subject"},
        ("sensors", "analytics"): {"durable_name": "analytics", "filter_subject": "iot.sensors.>",
                                   "ack_policy": "explicit", "deliver_policy": "all"},
    }


def test_full_surface_translates():
    [s] = load_catalog({"full": {
        "subjects": ["full.>"], "description": "d", "discard": "new", "duplicateWindow": "30s", "maxMsgSize": "1MB",
        "maxMsgsPerSubject": 10, "discardNewPerSubject": True, "maxBytes": "2GB", "maxAge": "1d",
        "metadata": {"team": "iot"}, "denyDelete": True, "allowRollup": True, "allowDirect": True,
        "compression": "s2", "republish": {"source": "full.>", "destination": "copy.>", "headersOnly": True},
        "subjectTransform": {"source": "full.>", "destination": "moved.>"}, "allowMsgTtl": True,
        "subjectDeleteMarkerTtl": "5m", "consumerLimits": {"inactiveThreshold": "1h", "maxAckPending": 100},
        "placement": {"tags": ["ssd"]},
        "consumers": {
            "push": {"deliverSubject": "deliver.push", "deliverGroup": "workers", "ackWait": "1m",
                     "rateLimit": 1000000, "headersOnly": True, "sampleFrequency": 50, "replayPolicy": "original",
                     "idleHeartbeat": "5s"},
            "pull": {"filterSubjects": ["full.a", "full.b"], "backoff": ["1s", "5s"], "maxDeliver": 3,
                     "maxAckPending": 20, "maxWaiting": 10, "maxBatch": 5, "maxExpires": "30s", "maxBytes": "1MB",
                     "inactiveThreshold": "1h", "metadata": {"owner": "x"}, "memStorage": True},
        }}})
    c = s.config
    assert (c["discard"], c["duplicate_window"], c["max_msg_size"], c["compression"]) == ("new", 30 * 10**9, 2**20, "s2")
    assert c["republish"] == {"src": "full.>", "dest": "copy.>", "headers_only": True}
    assert c["subject_transform"] == {"src": "full.>", "dest": "moved.>"}
    assert c["consumer_limits"] == {"inactive_threshold": H, "max_ack_pending": 100}
    push, pull = (x.config for x in s.consumers)
    assert push["deliver_subject"] == "deliver.push" and push["sample_freq"] == "50%"
    assert push["rate_limit_bps"] == 1000000 and push["idle_heartbeat"] == 5 * 10**9
    assert pull["backoff"] == [10**9, 5 * 10**9] and pull["ack_wait"] == 10**9  # backoff[0] is the ack wait
    assert pull["max_expires"] == 30 * 10**9 and pull["max_bytes"] == 2**20


def test_mirror_and_sources_translate():
    specs = load_catalog({
        "origin": {"subjects": ["o.>"]},
        "copy": {"mirror": {"name": "origin", "filterSubject": "o.a.>", "optStartTime": "2025-07-15T10:00:00+02:00"}},
        "agg": {"sources": [{"name": "origin", "subjectTransforms": [{"source": "o.>", "destination": "agg.>"}]}]},
    })
    by = {s.name: s.config for s in specs}
    assert by["copy"]["mirror"] == {"name": "origin", "filter_subject": "o.a.>", "opt_start_time": "2025-07-15T08:00:00Z"}
    assert by["agg"]["sources"] == [{"name": "origin", "subject_transforms": [{"src": "o.>", "dest": "agg.>"}]}]


BAD = [
    ({"a.b": {"subjects": ["x"]}}, "stream 'a.b'", None, "may not contain"),
    ({"a b": {"subjects": ["x"]}}, "stream 'a b'", None, "may not contain"),
    ({"a/b": {"subjects": ["x"]}}, "stream 'a/b'", None, "path separators"),
    ({"s": {"subjects": ["x..y"]}}, "stream 's'", "subjects", "empty token"),
    ({"s": {"subjects": ["x.>.y"]}}, "stream 's'", "subjects", "before the last token"),
    ({"s": {"subjects": ["x.>", "x.y"]}}, "stream 's'", "subjects", "overlap"),
    ({"s": {}}, "stream 's'", "subjects", "missing"),
    ({"s": {"subjects": ["x"], "storage": "disk"}}, "stream 's'", "storage", "not one of file, memory"),
    ({"s": {"subjects": ["x"], "maxAge": "24x"}}, "stream 's'", "maxAge", "not a duration"),
    ({"s": {"subjects": ["x"], "maxAge": 86400}}, "stream 's'", "maxAge", "has no unit"),
    ({"s": {"subjects": ["x"], "maxBytes": "1.5GB"}}, "stream 's'", "maxBytes", "decimals"),
    ({"s": {"subjects": ["x"], "maxBytes": "1PB"}}, "stream 's'", "maxBytes", "unknown size unit"),
    ({"s": {"subjects": ["x"], "maxMsgs": 0}}, "stream 's'", "maxMsgs", "at least 1"),
    ({"s": {"subjects": ["x"], "replicas": 3}}, "stream 's'", "replicas", "this deployment runs 1"),
    ({"s": {"subjects": ["x"], "maxAgee": "1h"}}, "stream 's'", "maxAgee", "unknown key"),
    ({"s": {"subjects": ["x"], "maxAge": "1m", "duplicateWindow": "2m"}}, "stream 's'", "duplicateWindow", "longer"),
    ({"s": {"subjects": ["x"], "metadata": {"_nats.ver": "1"}}}, "stream 's'", "metadata", "reserved"),
    ({"s": {"subjects": ["x"], "allowDataLoss": "yes"}}, "stream 's'", "allowDataLoss", "true or false"),
    ({"s": {"subjects": ["x"], "discardNewPerSubject": True}}, "stream 's'", "discardNewPerSubject", "discard: new"),
    ({"s": {"subjects": ["x"], "subjectDeleteMarkerTtl": "1m"}}, "stream 's'", "subjectDeleteMarkerTtl", "allowMsgTtl"),
    ({"m": {"subjects": ["x"], "mirror": {"name": "o"}}}, "stream 'm'", "mirror", "no subjects"),
    ({"a": {"subjects": ["logs.>"]}, "b": {"subjects": ["logs.app.*"]}}, "stream 'b'", "subjects", "overlaps"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c.1": {}}}}, "consumer 'c.1' of stream 's'", None, "may not contain"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverPolicy": "by_start_time"}}}},
     "consumer 'c' of stream 's'", "optStartTime", "needs optStartTime"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverPolicy": "by_start_sequence"}}}},
     "consumer 'c' of stream 's'", "optStartSeq", "needs optStartSeq"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverPolicy": "all", "optStartTime": "2025-07-15T10:00:00Z"}}}},
     "consumer 'c' of stream 's'", "optStartTime", "only applies"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"optStartTime": "yesterday"}}}}, "consumer 'c' of stream 's'",
     "optStartTime", "RFC 3339"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"optStartTime": "2025-07-15T10:00:00"}}}},
     "consumer 'c' of stream 's'", "optStartTime", "no time zone"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"backoff": ["1s", "2s", "3s"], "maxDeliver": 2}}}},
     "consumer 'c' of stream 's'", "backoff", "maxDeliver is 2"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"backoff": ["1s"], "ackWait": "30s"}}}},
     "consumer 'c' of stream 's'", "ackWait", "backoff[0]"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"ackPolicy": "sometimes"}}}}, "consumer 'c' of stream 's'",
     "ackPolicy", "not one of"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"maxWaiting": 10, "deliverSubject": "d"}}}},
     "consumer 'c' of stream 's'", "maxWaiting", "pull consumers only"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverGroup": "g"}}}}, "consumer 'c' of stream 's'",
     "deliverGroup", "push consumers only"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverSubject": "d.*"}}}}, "consumer 'c' of stream 's'",
     "deliverSubject", "wildcards"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"deliverSubject": "d", "flowControl": True}}}},
     "consumer 'c' of stream 's'", "flowControl", "idleHeartbeat"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"filterSubject": "x.a", "filterSubjects": ["x.b"]}}}},
     "consumer 'c' of stream 's'", "filterSubjects", "not both"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"replicas": 3}}}}, "consumer 'c' of stream 's'", "replicas",
     "more than"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"maxDeliver": 0}}}}, "consumer 'c' of stream 's'", "maxDeliver",
     "at least 1"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"sampleFrequency": "150%"}}}}, "consumer 'c' of stream 's'",
     "sampleFrequency", "percentage"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"ackWait": "soon"}}}}, "consumer 'c' of stream 's'", "ackWait",
     "not a duration"),
    ({"s": {"subjects": ["x.>"], "consumers": {"c": {"fliterSubject": "x.a"}}}}, "consumer 'c' of stream 's'",
     "fliterSubject", "unknown key"),
]


@pytest.mark.parametrize("streams, where, key, fragment", BAD,
                         ids=[f"{i}-{k or 'name'}" for i, (_, _, k, _) in enumerate(BAD)])
def test_bad_declarations_name_the_object_and_key(streams, where, key, fragment):
    with pytest.raises(CatalogError) as err:
        load_catalog(streams)
    message = str(err.value)
    assert message.startswith(where), message
    if key:
        assert err.value.key == key and f": {key}:" in message
    assert fragment in message


def test_a_filter_outside_the_stream_is_a_warning_not_an_error():
    """The server accepts a filter that matches none of the stream's subjects; preview warns about it.
    One that overlaps without being a subset (x.* on [x.a, x.b]) receives messages: no warning."""
    specs = load_catalog({"s": {"subjects": ["x.a", "x.b"], "consumers": {"far": {"filterSubject": "y.>"},
                                                                          "near": {"filterSubject": "x.*"}}}})
    [warning] = catalog_warnings(specs)
    assert warning.startswith("consumer 'far' of stream 's': filter 'y.>'") and "never receive" in warning
