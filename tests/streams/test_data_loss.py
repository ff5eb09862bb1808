"""No data loss by surprise, on every path the provider takes: each case against a real nats-server
(2.15.1) with messages in the streams, as the engine drives the provider (tests/provider_harness.py)."""
import asyncio
import json
import re
import time

import nats
import pytest

from streams.provider import DataLossRefused, ReplacementFailed, ReplacementRefused, StreamVanished
from tests.provider_harness import Managed, consumer_inputs, stream_inputs

INTEREST = {"subjects": ["i.>"], "retention": "interest"}
LIMITS = {"subjects": ["l.>"]}


def fetch_and_ack(url: str, stream: str, consumer: str, n: int) -> None:
    async def go():
        nc = await nats.connect(url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind(consumer, stream)
            for msg in await sub.fetch(n, timeout=5):
                await msg.ack_sync()
        finally:
            await nc.close()
    asyncio.run(go())


def messages(raw, stream: str) -> int:
    return raw.stream(stream)["state"]["messages"]


# ---------------------------------------------------------------- consumers

def test_replacing_the_only_consumer_of_an_interest_stream_is_refused_then_opted_in(streams, consumers, raw):
    Managed(streams).create(stream_inputs("intr", INTEREST))
    c = Managed(consumers).create(consumer_inputs("intr", INTEREST, "only", {}))
    raw.publish("i.x", [b"m"] * 5)
    created = raw.consumer("intr", "only")["created"]
    news = consumer_inputs("intr", INTEREST, "only", {"deliverPolicy": "last"})
    assert c.diff(news).replaces == ["deliverPolicy"]
    with pytest.raises(DataLossRefused, match=r"consumer 'only' of stream 'intr': refusing to recreate it "
                                              r"\(deliverPolicy: .*5 not yet delivered.*allowDataLoss: true"):
        c.apply(news)
    assert messages(raw, "intr") == 5 and raw.consumer("intr", "only")["created"] == created  # nothing changed
    assert c.apply(consumer_inputs("intr", INTEREST, "only", {"deliverPolicy": "last", "allowDataLoss": True})) \
        == "replace"
    assert raw.consumer("intr", "only")["config"]["deliver_policy"] == "last"
    assert not c.diff(c.inputs).changes


def test_removing_the_only_consumer_of_an_interest_stream_needs_an_earlier_opt_in(streams, consumers, raw):
    Managed(streams).create(stream_inputs("intr", INTEREST))
    c = Managed(consumers).create(consumer_inputs("intr", INTEREST, "only", {}))
    raw.publish("i.x", [b"m"] * 3)
    with pytest.raises(DataLossRefused, match="refusing to delete it: it would delete the stream's messages it holds"):
        c.delete()
    assert messages(raw, "intr") == 3
    assert c.apply(consumer_inputs("intr", INTEREST, "only", {"allowDataLoss": True})) == "update"
    c.delete()
    assert raw.consumer("intr", "only")["error"]["err_code"] == 10014 and messages(raw, "intr") == 0


def test_a_workqueue_stream_keeps_its_messages_when_its_consumer_goes(streams, consumers, raw):
    """Read from the real server: deleting a workqueue consumer drops nothing, so it needs no opt-in."""
    wq = {"subjects": ["w.>"], "retention": "workqueue"}
    Managed(streams).create(stream_inputs("wq", wq))
    c = Managed(consumers).create(consumer_inputs("wq", wq, "worker", {}))
    raw.publish("w.x", [b"job"] * 4)
    c.delete()
    assert messages(raw, "wq") == 4


def test_replacing_a_consumer_that_delivered_needs_the_opt_in(server, streams, consumers, raw):
    Managed(streams).create(stream_inputs("lim", LIMITS))
    c = Managed(consumers).create(consumer_inputs("lim", LIMITS, "worker", {}))
    raw.publish("l.x", [b"m"] * 4)
    fetch_and_ack(server.client_url, "lim", "worker", 2)
    news = consumer_inputs("lim", LIMITS, "worker", {"ackPolicy": "all"})
    with pytest.raises(DataLossRefused, match=r"its progress: it has delivered 2 messages and acknowledged up to "
                                              r"stream sequence 2"):
        c.apply(news)
    assert raw.consumer("lim", "worker")["ack_floor"]["stream_seq"] == 2  # progress kept
    assert c.apply(consumer_inputs("lim", LIMITS, "worker", {"ackPolicy": "all", "allowDataLoss": True})) == "replace"
    assert raw.consumer("lim", "worker")["ack_floor"]["stream_seq"] == 0 and messages(raw, "lim") == 4


def test_a_consumer_that_delivered_nothing_is_replaced_freely(streams, consumers, raw):
    Managed(streams).create(stream_inputs("lim", LIMITS))
    c = Managed(consumers).create(consumer_inputs("lim", LIMITS, "idle", {}))
    raw.publish("l.x", [b"m"] * 2)
    assert c.apply(consumer_inputs("lim", LIMITS, "idle", {"deliverPolicy": "new"})) == "replace"
    assert raw.consumer("lim", "idle")["config"]["deliver_policy"] == "new"


def test_an_updatable_consumer_change_keeps_its_progress(server, streams, consumers, raw):
    Managed(streams).create(stream_inputs("lim", LIMITS))
    c = Managed(consumers).create(consumer_inputs("lim", LIMITS, "worker", {}))
    raw.publish("l.x", [b"m"] * 3)
    fetch_and_ack(server.client_url, "lim", "worker", 3)
    assert c.apply(consumer_inputs("lim", LIMITS, "worker", {"maxDeliver": 5})) == "update"
    assert raw.consumer("lim", "worker")["ack_floor"]["stream_seq"] == 3


# ---------------------------------------------------------------- stream replacement

def test_a_replacement_the_server_would_refuse_leaves_everything_as_it_was(streams, consumers, raw):
    """The new subjects overlap a stream outside the stack (10065): found before anything is deleted."""
    raw.api("$JS.API.STREAM.CREATE.outside", {"name": "outside", "subjects": ["other.>"]})
    s = Managed(streams).create(stream_inputs("mine", LIMITS))
    Managed(consumers).create(consumer_inputs("mine", LIMITS, "c", {"maxDeliver": 3}))
    before = raw.stream("mine")
    with pytest.raises(ReplacementRefused, match=r"subject 'other.x' overlaps 'other.>' of stream 'outside'.*10065"):
        s.apply(stream_inputs("mine", {"subjects": ["l.>", "other.x"], "storage": "memory"}))
    after = raw.stream("mine")
    assert after["created"] == before["created"] and after["config"] == before["config"]
    assert raw.consumer("mine", "c")["config"]["max_deliver"] == 3


def test_a_replacement_beyond_the_store_is_refused_before_anything_is_deleted(streams, consumers, raw):
    """memory storage with maxBytes above the 1Gi memory store: the server checks resources before the
    name, so the first create attempt is refused (10028) and the old stream is untouched."""
    s = Managed(streams).create(stream_inputs("big", LIMITS))
    raw.publish("l.x", [b"m"])
    with pytest.raises(Exception, match="insufficient memory resources"):
        s.apply(stream_inputs("big", {**LIMITS, "storage": "memory", "maxBytes": "2GB", "allowDataLoss": True}))
    assert raw.stream("big")["config"]["storage"] == "file" and messages(raw, "big") == 1


def test_a_replacement_refused_halfway_puts_the_old_stream_and_its_consumers_back(streams, consumers, raw,
                                                                                   monkeypatch):
    """The server refuses the new stream after the old one was deleted (injected: a create of the new
    config fails once the old stream is gone): the old config and its consumers are put back."""
    from streams.jetstream import JetStreamApiError, JetStreamClient
    s = Managed(streams).create(stream_inputs("half", LIMITS))
    Managed(consumers).create(consumer_inputs("half", LIMITS, "c", {"maxDeliver": 3}))
    before = raw.stream("half")["config"]
    real_create = JetStreamClient.create_stream

    async def refusing_create(self, config):
        if config.get("storage") == "memory" and await self.stream_info("half") is None:
            raise JetStreamApiError("$JS.API.STREAM.CREATE.half", {"err_code": 10028, "description": "refused"})
        return await real_create(self, config)
    monkeypatch.setattr(JetStreamClient, "create_stream", refusing_create)
    with pytest.raises(ReplacementFailed, match=r"stream 'half': the server refused the replacement halfway.*config "
                                                r"and its 1 consumers were put back"):
        s.apply(stream_inputs("half", {**LIMITS, "storage": "memory"}))
    after = raw.stream("half")["config"]
    assert {k: v for k, v in after.items() if k != "metadata"} == {k: v for k, v in before.items() if k != "metadata"}
    assert raw.consumer("half", "c")["config"]["max_deliver"] == 3


def test_a_consumer_that_cannot_be_carried_over_stops_the_replacement(streams, consumers, raw):
    s = Managed(streams).create(stream_inputs("carry", LIMITS))
    Managed(consumers).create(consumer_inputs("carry", LIMITS, "fresh", {"deliverPolicy": "new"}))
    with pytest.raises(ReplacementRefused, match=r"consumer 'fresh' of stream 'carry' would not fit the new stream "
                                                 r"\(deliverPolicy: a workqueue stream's consumers deliver all\)"):
        s.apply(stream_inputs("carry", {**LIMITS, "retention": "workqueue"}))
    assert raw.stream("carry")["config"]["retention"] == "limits"
    assert raw.consumer("carry", "fresh")["config"]["deliver_policy"] == "new"


def test_a_consumer_lost_with_its_stream_is_made_again(streams, consumers, raw):
    """The stream was deleted out of band after the refresh: the update refuses to make it again behind the user's
    back (a cluster that has just formed answers "not found" until the grow restores it). The next `up` refreshes,
    finds it gone, creates it with the changed field, and the consumer, whose input follows the stream's created
    time, is made again in the same `up`."""
    s = Managed(streams).create(stream_inputs("oob", LIMITS))
    news = {**consumer_inputs("oob", LIMITS, "c", {"maxDeliver": 3}), "streamCreated": s.outputs["created"]}
    c = Managed(consumers).create(news)
    raw.api("$JS.API.STREAM.DELETE.oob")
    changed = stream_inputs("oob", {**LIMITS, "maxAge": "1h"})
    with pytest.raises(StreamVanished, match=r"stream 'oob': it was on the server at the refresh .* is gone now\. "
                                             r"Nothing was created\. .*python -m streams cluster grow"):
        s.apply(changed)
    assert raw.stream("oob")["error"]["err_code"] == 10059   # still not there
    assert s.refresh().id == ""
    s = Managed(streams).create(changed)
    again = {**news, "streamCreated": s.outputs["created"]}
    assert c.diff(again).changes and not c.diff(again).replaces
    assert c.apply(again) == "update"
    assert raw.consumer("oob", "c")["config"]["max_deliver"] == 3
    # and after a refresh, a consumer whose stream is gone reads as gone
    raw.api("$JS.API.STREAM.DELETE.oob")
    assert c.refresh().id == ""


# ---------------------------------------------------------------- in-place updates

def test_limits_to_interest_with_messages_and_no_consumer_is_refused(streams, raw):
    s = Managed(streams).create(stream_inputs("conv", LIMITS))
    raw.publish("l.x", [b"m"] * 5)
    with pytest.raises(DataLossRefused, match=r"refusing to switch retention from limits to interest: it would "
                                              r"delete up to 5 of its messages"):
        s.apply(stream_inputs("conv", {**LIMITS, "retention": "interest"}))
    assert messages(raw, "conv") == 5 and raw.stream("conv")["config"]["retention"] == "limits"
    assert s.apply(stream_inputs("conv", {**LIMITS, "retention": "interest", "allowDataLoss": True})) == "update"
    assert messages(raw, "conv") == 0 and s.outputs["messagesRemoved"] == 5


def test_limits_to_interest_is_free_when_a_consumer_holds_every_message(streams, consumers, raw):
    s = Managed(streams).create(stream_inputs("conv", LIMITS))
    raw.publish("l.x", [b"m"] * 5)
    Managed(consumers).create(consumer_inputs("conv", LIMITS, "all", {}))
    assert s.apply(stream_inputs("conv", {**LIMITS, "retention": "interest"})) == "update"
    assert messages(raw, "conv") == 5


@pytest.mark.parametrize("limit, publish, expected_removed", [
    ({"maxMsgs": 5}, [("l.a", 20)], 15),
    ({"maxBytes": "1KB"}, [("l.a", 20)], None),                # counted from the average size
    ({"maxMsgsPerSubject": 2}, [("l.a", 6), ("l.b", 1), ("l.c", 3)], 5),
])
def test_a_limit_that_would_delete_messages_is_refused_without_the_opt_in(streams, raw, capfd, limit, publish,
                                                                          expected_removed):
    """The count the refusal names is the one the server then removes with allowDataLoss (nats-server 2.15.1)."""
    s = Managed(streams).create(stream_inputs("low", LIMITS))
    for subject, n in publish:
        raw.publish(subject, [b"m" * 40] * n)
    before = messages(raw, "low")
    news = stream_inputs("low", {**LIMITS, **limit})
    assert not s.diff(news).replaces
    assert "may delete messages it holds beyond the new limit" in capfd.readouterr().err   # what preview says
    with pytest.raises(DataLossRefused, match=r"stream 'low': refusing to lower .*allowDataLoss") as err:
        s.update(news)
    assert messages(raw, "low") == before  # nothing changed
    counted = int(re.search(r"it would delete (?:about )?(\d+) ", str(err.value)).group(1))
    assert "--to DIR" in str(err.value)
    s.update(stream_inputs("low", {**LIMITS, **limit, "allowDataLoss": True}))
    removed = before - messages(raw, "low")
    assert counted == removed == s.outputs["messagesRemoved"] and (expected_removed in (None, removed))
    assert f"removed {removed} messages (allowDataLoss)" in capfd.readouterr().err


def test_a_lower_max_age_counts_the_messages_older_than_it(streams, raw):
    s = Managed(streams).create(stream_inputs("aged", LIMITS))
    raw.publish("l.old", [b"m"] * 7)
    time.sleep(2.5)
    raw.publish("l.new", [b"m"] * 3)
    with pytest.raises(DataLossRefused, match=r"lower maxAge: it would delete 7 of its 10 messages, older than the new maxAge"):
        s.update(stream_inputs("aged", {**LIMITS, "maxAge": "2s"}))
    assert messages(raw, "aged") == 10
    s.update(stream_inputs("aged", {**LIMITS, "maxAge": "1h"}))   # nothing that old: free
    assert messages(raw, "aged") == 10


@pytest.mark.parametrize("limit", [{"maxMsgs": 50}, {"maxBytes": "1MB"}, {"maxMsgsPerSubject": 20}, {"maxAge": "1h"}])
def test_a_lower_limit_that_deletes_nothing_is_applied(streams, raw, limit):
    s = Managed(streams).create(stream_inputs("roomy", LIMITS))
    raw.publish("l.x", [b"m"] * 10)
    assert s.apply(stream_inputs("roomy", {**LIMITS, **limit})) == "update"
    assert messages(raw, "roomy") == 10 and s.outputs["messagesRemoved"] == 0


def test_with_discard_new_a_lower_count_keeps_what_the_stream_holds(streams, raw):
    """nats-server 2.15.1 keeps a discard-new stream's messages when maxMsgs or maxBytes is lowered below them (it
    refuses new messages instead): nothing to refuse."""
    decl = {**LIMITS, "discard": "new"}
    s = Managed(streams).create(stream_inputs("dnew", decl))
    raw.publish("l.x", [b"m"] * 10)
    assert s.apply(stream_inputs("dnew", {**decl, "maxMsgs": 3, "maxBytes": "100B"})) == "update"
    assert messages(raw, "dnew") == 10


# ---------------------------------------------------------------- renames and mirrors

def test_renaming_a_stream_that_keeps_its_subjects(streams, raw):
    old = Managed(streams).create(stream_inputs("before", LIMITS))
    raw.publish("l.x", [b"m"] * 2)
    with pytest.raises(DataLossRefused, match=r"stream 'after': refusing to rename 'before': it would delete its 2 "
                                              r"messages .* of stream 'before'.*restore before --as after"):
        Managed(streams).create(stream_inputs("after", {**LIMITS, "renamedFrom": "before"}))
    assert messages(raw, "before") == 2
    new = Managed(streams).create(stream_inputs("after", {**LIMITS, "renamedFrom": "before", "allowDataLoss": True}))
    old.delete()  # the engine removes the old resource afterwards: already gone, nothing to do
    assert raw.stream("before")["error"]["err_code"] == 10059
    assert raw.stream("after")["config"]["subjects"] == ["l.>"] and new.id == "after"


def test_an_empty_stream_is_renamed_freely(streams, raw):
    Managed(streams).create(stream_inputs("before", LIMITS))
    Managed(streams).create(stream_inputs("after", {**LIMITS, "renamedFrom": "before"}))
    assert raw.stream("after")["config"]["subjects"] == ["l.>"]


def test_promoting_a_mirror_is_an_update_that_keeps_its_messages(streams, raw):
    Managed(streams).create(stream_inputs("origin", {"subjects": ["o.>"]}))
    raw.publish("o.x", [b"m"] * 3)
    m = Managed(streams).create(stream_inputs("copy", {"mirror": {"name": "origin"}}))
    for _ in range(100):
        if messages(raw, "copy") == 3:
            break
        asyncio.run(asyncio.sleep(0.05))
    promoted = stream_inputs("copy", {"subjects": ["copy.>"]})
    d = m.diff(promoted)
    assert d.changes and not d.replaces
    assert m.apply(promoted) == "update"
    info = raw.stream("copy")
    assert "mirror" not in info["config"] and info["config"]["subjects"] == ["copy.>"] and info["state"]["messages"] == 3


def test_the_server_refuses_what_the_plan_calls_a_replacement(raw, server):
    """The plan's mirror rule, tried on the server: adding a mirror to a stream is refused in place."""
    raw.api("$JS.API.STREAM.CREATE.plain", {"name": "plain", "subjects": ["p.>"]})
    r = raw.api("$JS.API.STREAM.UPDATE.plain", {"name": "plain", "mirror": {"name": "origin"}})
    assert r["error"]["err_code"] in (10034, 10052, 10055), json.dumps(r)
