"""Every offline rule next to the real server's answer (nats-server 2.15.1, pedantic, as the provider asks):
a bad declaration must fail at preview naming the key AND be refused by the server with the code noted;
a valid one must pass preview AND be accepted. So the offline rules and the server cannot drift apart.
Also: the catalog knows every field of the pinned server's StreamConfig and ConsumerConfig."""
from __future__ import annotations

import json
import re

import pytest

import stack.catalog as catalog
from stack.catalog import CatalogError, load_catalog
from streams.local.server import nats_server_binary
from tests.provider_harness import RawJetStream

BASE = {"subjects": ["r.>"]}

# (id, stream declaration, consumer declaration or None, key named offline, server error code)
BAD = [
    ("all subjects without noAck", {"subjects": [">"]}, None, "subjects", 10052),
    ("JetStream API without noAck", {"subjects": ["$JS.API.>"]}, None, "subjects", 10052),
    ("system API without noAck", {"subjects": ["$SYS.REQ.>"]}, None, "subjects", 10052),
    ("maxAge under 100ms", {**BASE, "maxAge": "50ms"}, None, "maxAge", 10052),
    ("duplicateWindow under 100ms", {**BASE, "duplicateWindow": "50ms"}, None, "duplicateWindow", 10052),
    ("maxAge beyond int64", {**BASE, "maxAge": "300y"}, None, "maxAge", 10025),
    ("maxMsgSize beyond int32", {**BASE, "maxMsgSize": "4GB"}, None, "maxMsgSize", 10025),
    ("allowRollup with denyPurge", {**BASE, "allowRollup": True, "denyPurge": True}, None, "allowRollup", 10052),
    ("delete markers without rollup", {**BASE, "allowMsgTtl": True, "subjectDeleteMarkerTtl": "1m"}, None,
     "subjectDeleteMarkerTtl", 10052),
    ("delete markers under 1s", {**BASE, "allowMsgTtl": True, "allowRollup": True, "subjectDeleteMarkerTtl": "500ms"},
     None, "subjectDeleteMarkerTtl", 10052),
    ("republish into itself", {**BASE, "republish": {"source": "r.>", "destination": "r.copy.>"}}, None,
     "republish.destination", 10052),
    ("long description", {**BASE, "description": "x" * 4097}, None, "description", 10052),
    ("counter with discard new", {**BASE, "allowMsgCounter": True, "discard": "new"}, None, "allowMsgCounter", 10052),
    ("counter with interest", {**BASE, "allowMsgCounter": True, "retention": "interest"}, None, "allowMsgCounter",
     10052),
    ("schedules without rollup", {**BASE, "allowMsgSchedules": True}, None, "allowMsgSchedules", 10052),
    ("schedules with discard new", {**BASE, "allowMsgSchedules": True, "allowRollup": True, "discard": "new"}, None,
     "allowMsgSchedules", 10052),
    ("async persist on memory", {**BASE, "persistMode": "async", "storage": "memory"}, None, "persistMode", 10052),
    ("mirror with firstSeq", {"mirror": {"name": "origin"}, "firstSeq": 5}, None, "firstSeq", 10143),
    ("mirror with counters", {"mirror": {"name": "origin"}, "allowMsgCounter": True}, None, "allowMsgCounter", 10173),
    ("a stream mirroring itself", {"mirror": {"name": "rs"}}, None, "mirror.name", 10052),
    ("transform index beyond the wildcards", {**BASE, "subjectTransform": {"source": "r.*",
                                                                          "destination": "x.{{wildcard(2)}}"}},
     None, "subjectTransform", 10156),
    ("transform with an unknown function", {**BASE, "subjectTransform": {"source": "r.*", "destination": "x.{{wild(1)}}"}},
     None, "subjectTransform", 10156),
    ("transform with '*' in the destination", {**BASE, "subjectTransform": {"source": "r.*", "destination": "x.*"}},
     None, "subjectTransform", 10156),
    ("transform using a wildcard of none", {**BASE, "subjectTransform": {"source": "r.a", "destination": "x.$1"}},
     None, "subjectTransform", 10156),
    ("last_per_subject without filter", BASE, {"deliverPolicy": "last_per_subject"}, "deliverPolicy", 10094),
    ("push heartbeat under 100ms", BASE, {"deliverSubject": "out.x", "idleHeartbeat": "50ms"}, "idleHeartbeat", 10083),
    ("pull maxExpires under 1ms", BASE, {"maxExpires": "500us"}, "maxExpires", 10115),
    ("push into the stream", BASE, {"deliverSubject": "r.out"}, "deliverSubject", 10081),
    ("push maxAckPending without acks", BASE, {"deliverSubject": "out.x", "ackPolicy": "none", "maxAckPending": 5},
     "maxAckPending", 10082),
    ("filters one inside another", BASE, {"filterSubjects": ["r.a.>", "r.a.b"]}, "filterSubjects", 10138),
    ("workqueue without acks", {**BASE, "retention": "workqueue"}, {"ackPolicy": "none"}, "ackPolicy", 10084),
    ("workqueue deliver new", {**BASE, "retention": "workqueue"}, {"deliverPolicy": "new"}, "deliverPolicy", 10101),
    ("maxAckPending above the stream limit", {**BASE, "consumerLimits": {"maxAckPending": 10}}, {"maxAckPending": 20},
     "maxAckPending", 10121),
    ("inactiveThreshold above the stream limit", {**BASE, "consumerLimits": {"inactiveThreshold": "1h"}},
     {"inactiveThreshold": "2h"}, "inactiveThreshold", 10153),
    ("long consumer description", BASE, {"description": "x" * 4097}, "description", 10107),
    ("priority groups without policy", BASE, {"priorityGroups": ["g"]}, "priorityGroups", 10196),
    ("priority policy without groups", BASE, {"priorityPolicy": "overflow"}, "priorityGroups", 10159),
    ("bad priority group name", BASE, {"priorityPolicy": "overflow", "priorityGroups": ["a group"]}, "priorityGroups",
     10162),
    ("pinned timeout without policy", BASE, {"priorityTimeout": "1m"}, "priorityTimeout", 10197),
    ("flow_control acks on pull", BASE, {"ackPolicy": "flow_control"}, "ackPolicy", 10218),
]

# Valid declarations that must pass preview and be accepted as they are (pedantic).
GOOD = [
    ("maxAge under 2m without duplicateWindow", {**BASE, "maxAge": "1m"}, None),
    ("consumer inherits the stream's maxAckPending", {**BASE, "consumerLimits": {"maxAckPending": 10}}, {}),
    ("consumer inherits the stream's inactiveThreshold", {**BASE, "consumerLimits": {"inactiveThreshold": "1h"}}, {}),
    ("filter overlapping but not inside", {"subjects": ["r.a", "r.b"]}, {"filterSubject": "r.*"}),
    ("filters that overlap without containing", {"subjects": ["r.>"]}, {"filterSubjects": ["r.*.a", "r.b.*"]}),
    ("sampleFrequency as a YAML number", BASE, {"sampleFrequency": 50.0}),
    ("republish without a source", {**BASE, "republish": {"destination": "copy.>"}}, None),
    ("schedules with rollup", {**BASE, "allowMsgSchedules": True, "allowRollup": True}, None),
    ("async persist", {**BASE, "persistMode": "async"}, None),
    ("batched publishing", {**BASE, "allowBatched": True}, None),
    ("delete markers", {**BASE, "allowMsgTtl": True, "allowRollup": True, "subjectDeleteMarkerTtl": "1m"}, None),
    ("priority groups", BASE, {"priorityPolicy": "pinned_client", "priorityGroups": ["jobs"]}),
    ("paused consumer", BASE, {"pauseUntil": "2030-01-01T00:00:00Z"}),
    ("flow_control acks", BASE, {"deliverSubject": "out.x", "ackPolicy": "flow_control", "flowControl": True,
                                 "idleHeartbeat": "1s", "maxAckPending": 100}),
    ("JetStream events with noAck", {"subjects": ["$JS.EVENT.>"]}, None),
    ("mirror of a stream", {"mirror": {"name": "origin"}}, None),
    ("consumer without acks on a stream with consumer limits", {**BASE, "consumerLimits": {"maxAckPending": 10}},
     {"ackPolicy": "none"}),
    ("push consumer without acks on a stream with consumer limits", {**BASE, "consumerLimits": {"maxAckPending": 10}},
     {"ackPolicy": "none", "deliverSubject": "out.x"}),
    ("transforms the server takes", {**BASE, "subjectTransform": {"source": "r.*.*",
                                                                  "destination": "x.{{wildcard(2)}}.$1.{{partition(3,1)}}"}},
     None),
    ("transform functions", {**BASE, "subjectTransform": {"source": "r.*", "destination":
                                                          "x.{{SplitFromLeft(1,2)}}.{{split(1,-)}}.{{random(4)}}"}},
     None),
    ("placement on a single server", {**BASE, "placement": {"cluster": "c1"}}, None),
]


def _declare(stream: dict, consumer: dict | None) -> dict:
    decl = dict(stream)
    if consumer is not None:
        decl["consumers"] = {"c": consumer}
    return {"rs": decl}


def _without_rules(monkeypatch):
    """The wire config as the catalog builds it, with the offline rules switched off: what the server is
    sent when asked for its own answer."""
    monkeypatch.setattr(catalog, "check_stream_rules", lambda cfg, creating=None: None)
    monkeypatch.setattr(catalog, "check_consumer_rules", lambda cfg, ctx: None)


@pytest.fixture
def raw(nats_server):
    server = nats_server()
    raw = RawJetStream(server.client_url)
    raw.api("$JS.API.STREAM.CREATE.origin", {"name": "origin", "subjects": ["origin.>"]})
    return raw


def _server_answer(raw, spec) -> dict | None:
    """Create the stream, then the consumer, as the provider would (pedantic); the first error, or None."""
    r = raw.api(f"$JS.API.STREAM.CREATE.{spec.name}", {**spec.config, "pedantic": True})
    if "error" in r:
        return r["error"]
    for c in spec.consumers:
        r = raw.api(f"$JS.API.CONSUMER.CREATE.{spec.name}.{c.name}",
                    {"stream_name": spec.name, "config": c.config, "pedantic": True})
        if "error" in r:
            return r["error"]
    return None


@pytest.mark.parametrize("what, stream, consumer, key, code", BAD, ids=[b[0] for b in BAD])
def test_bad_declaration_fails_offline_and_on_the_server(raw, monkeypatch, what, stream, consumer, key, code):
    with pytest.raises(CatalogError) as err:
        load_catalog(_declare(stream, consumer))
    assert err.value.key == key, str(err.value)
    assert str(err.value).startswith("consumer 'c' of stream 'rs'" if consumer is not None else "stream 'rs'")
    with monkeypatch.context() as m:
        _without_rules(m)
        [spec] = load_catalog(_declare(stream, consumer))
    answer = _server_answer(raw, spec)
    assert answer is not None, f"the server accepted {what!r}"
    assert answer["err_code"] == code, json.dumps(answer)


@pytest.mark.parametrize("what, stream, consumer", GOOD, ids=[g[0] for g in GOOD])
def test_valid_declaration_passes_offline_and_on_the_server(raw, what, stream, consumer):
    [spec] = load_catalog(_declare(stream, consumer))
    assert _server_answer(raw, spec) is None


def test_mirror_direct_off_a_mirror_is_refused_at_create_only_and_warned_about(raw):
    """nats-server 2.15.1 refuses mirrorDirect on a stream that is no mirror when it creates it ("stream has no mirror
    but does have mirror direct", 10052) and takes it on an update: Check refuses it for a new stream, the catalog
    (which cannot tell) warns."""
    from stack.catalog import catalog_warnings, stream_wire_config
    decl = {**BASE, "mirrorDirect": True}
    with pytest.raises(CatalogError, match="mirrorDirect: only applies to a mirror"):
        stream_wire_config("s", decl, creating=True)
    wire = stream_wire_config("s", decl, creating=False)
    assert raw.api("$JS.API.STREAM.CREATE.s", {**wire, "pedantic": True})["error"]["err_code"] == 10052
    raw.api("$JS.API.STREAM.CREATE.s", {**stream_wire_config("s", BASE), "pedantic": True})
    assert raw.api("$JS.API.STREAM.UPDATE.s", {**wire, "pedantic": True})["config"]["mirror_direct"] is True
    [warning] = catalog_warnings(load_catalog({"s": decl}))
    assert "mirrorDirect only applies to a mirror" in warning


def test_placement_on_one_server_is_warned_about_not_refused():
    from stack.catalog import catalog_warnings
    specs = load_catalog({"s": {**BASE, "placement": {"cluster": "c1"}}})
    assert "has no effect on a single server" in catalog_warnings(specs)[0]
    assert catalog_warnings(specs, jetstream_servers=3) == []


def test_sealed_is_refused_at_create_only(raw):
    """The provider's Check knows create (no old inputs) from update; the server agrees."""
    from stack.catalog import stream_wire_config
    with pytest.raises(CatalogError, match="sealed: a stream is created unsealed"):
        stream_wire_config("s", {**BASE, "sealed": True}, creating=True)
    sealed = stream_wire_config("s", {**BASE, "sealed": True}, creating=False)
    assert raw.api("$JS.API.STREAM.CREATE.s", {**sealed, "pedantic": True})["error"]["err_code"] == 10052
    raw.api("$JS.API.STREAM.CREATE.s", {**stream_wire_config("s", BASE), "pedantic": True})
    assert raw.api("$JS.API.STREAM.UPDATE.s", {**sealed, "pedantic": True})["config"]["sealed"] is True


# ---------------------------------------------------------------- the whole config surface

# Fields the catalog leaves out on purpose: identity (set from the declaration's name), the request flag,
# and the server's own markers for internal consumers (`direct` needs an ephemeral, `sourcing` is the
# server's) and placement's `preferred` (refused by the server).
NOT_DECLARED = {"stream": {"name", "pedantic"}, "consumer": {"name", "durable_name", "direct", "sourcing"},
                "placement": {"preferred"}}


def _server_fields(raw, subject: str, body) -> set[str]:
    """The JSON fields the server's decoder knows at one spot of a request: it refuses unknown fields
    (DisallowUnknownFields in jetstream_api.go unmarshalRequest), and a known one set to null is accepted
    by the decoder, so the answer tells them apart. Candidates are the json tags in the binary."""
    tags = sorted(set(re.findall(rb'json:"([a-z_0-9]+)[,"]', open(nats_server_binary(), "rb").read())))
    known = set()
    for tag in (t.decode() for t in tags):
        answer = raw.api(subject, body(tag)).get("error", {})
        if "unknown field" not in answer.get("description", ""):
            known.add(tag)
    return known


def _wire_keys(fields) -> set[str]:
    return {f.wire for f in fields}


def test_the_catalog_knows_every_field_of_the_pinned_server(raw):
    stream = _server_fields(raw, "$JS.API.STREAM.CREATE.x", lambda t: {"name": "", t: None})
    assert stream - NOT_DECLARED["stream"] == _wire_keys(catalog.STREAM_FIELDS)
    consumer = _server_fields(raw, "$JS.API.CONSUMER.CREATE.none.c", lambda t: {"stream_name": "none", "config": {t: None}})
    assert consumer - NOT_DECLARED["consumer"] == _wire_keys(catalog.CONSUMER_FIELDS)
    source = _server_fields(raw, "$JS.API.STREAM.CREATE.x", lambda t: {"name": "", "mirror": {t: None}})
    assert source == _wire_keys(catalog._source_fields)


WIRE_MODULES = ("stack/rules.py", "streams/plan.py", "streams/safety.py", "streams/decisions.py")


def _keys_read(path) -> dict[str, int]:
    """The string keys a module reads from dicts: x["k"], x.get("k"), x.setdefault("k"), x.pop("k"), "k" in x."""
    import ast
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("get", "setdefault", "pop") and node.args and isinstance(node.args[0], ast.Constant):
            key = node.args[0].value
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and \
                any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and \
                not any(isinstance(c, (ast.Tuple, ast.List, ast.Set)) for c in node.comparators):
            key = node.left.value
        if isinstance(key, str):
            found[key] = node.lineno
    return found


@pytest.mark.parametrize("module", WIRE_MODULES)
def test_every_wire_key_read_is_one_the_pinned_server_writes(module):
    """The modules that read the server's configs and states (plain dicts) name keys as strings: a mistyped one would
    read nothing and say nothing. Each must be a JSON key of the pinned nats-server binary's types."""
    from tests.pulumi_harness import ROOT
    tags = {t.decode() for t in re.findall(rb'json:"([a-z_0-9]+)[,"]', open(nats_server_binary(), "rb").read())}
    unknown = {k: line for k, line in _keys_read(ROOT / module).items() if k not in tags}
    assert unknown == {}, f"{module}: keys the server never writes (line numbers): {unknown}"
