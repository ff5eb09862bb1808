"""The providers' decisions (streams/decisions.py) as tables: the facts a provider reads in, the decision out. No
server: tests/streams/test_data_loss.py and tests/streams/test_provider_server.py run the same paths against nats-server 2.15.1."""
import pytest

from stack.catalog import MANAGED_BY_KEY
from streams import decisions as d
from streams.plan import Plan
from streams.safety import LimitLoss

MARK = {"metadata": {MANAGED_BY_KEY: "pulumi"}}
REPLACE = Plan("replace", ("storage",), ("storage: file -> memory cannot change in place",), ("storage",))
UPDATE = Plan("update", ("max_age",))
NONE = Plan("none")


def stream(messages=0, managed=True, created="t1", name="s"):
    return {"config": {"name": name, **(MARK if managed else {})}, "created": created,
            "state": {"messages": messages, "bytes": 10 * messages}}


def consumer(delivered=0, floor=0, pending=0, ack_pending=0, managed=True):
    return {"name": "c", "config": {"durable_name": "c", **(MARK if managed else {})},
            "delivered": {"consumer_seq": delivered}, "ack_floor": {"stream_seq": floor},
            "num_pending": pending, "num_ack_pending": ack_pending}


@pytest.mark.parametrize("info, plan, allow, action, says", [
    (stream(5), NONE, False, d.UPDATE, ""),
    (stream(5), UPDATE, False, d.UPDATE, ""),
    (stream(0), REPLACE, False, d.REPLACE, ""),                       # empty: free
    (stream(5), REPLACE, False, d.REFUSE_LOSS, "refusing to replace it (storage: file -> memory"),
    (stream(5), REPLACE, True, d.REPLACE, ""),
    (stream(5, managed=False), REPLACE, True, d.REFUSE_ADOPTION, "made outside Pulumi"),
    (stream(0, managed=False), UPDATE, False, d.UPDATE, ""),          # adopted, updated in place
])
def test_a_stream_that_exists_when_create_runs(info, plan, allow, action, says):
    decision = d.existing_stream(info, plan, allow)
    assert decision.action == action and says in decision.reason
    if action == d.REPLACE and info["state"]["messages"]:
        assert decision.losses == ("its 5 messages (50 bytes)",)   # what the opt-in deletes, said after


LOWER = LimitLoss("max_msgs", 15, "15 of its 20 messages (maxMsgs 5)")


@pytest.mark.parametrize("losses, interest, allow, action, says", [
    ((), None, False, d.UPDATE, ""),
    ((LOWER,), None, False, d.REFUSE_LOSS, "refusing to lower maxMsgs: it would delete 15 of its 20 messages"),
    ((LOWER,), None, True, d.UPDATE, ""),
    ((), "up to 3 of its messages", False, d.REFUSE_LOSS, "refusing to switch retention from limits to interest"),
    ((), "up to 3 of its messages", True, d.UPDATE, ""),
])
def test_an_in_place_stream_update(losses, interest, allow, action, says):
    decision = d.stream_update("s", losses, interest, allow)
    assert decision.action == action and says in decision.reason
    assert "Nothing was changed" in decision.reason if action == d.REFUSE_LOSS else decision.reason == ""


@pytest.mark.parametrize("info, created, allow, action", [
    (None, "t1", False, d.LEAVE),                          # gone already
    (stream(5, created="t2"), "t1", False, d.LEAVE),       # a newer stream of that name: not this resource's
    (stream(0), "t1", False, d.DELETE),
    (stream(5), "t1", False, d.REFUSE_LOSS),
    (stream(5), "t1", True, d.DELETE),
    (stream(5), None, True, d.DELETE),                     # state from before `created` was recorded
])
def test_deleting_a_stream(info, created, allow, action):
    assert d.stream_delete(info, created, allow).action == action


@pytest.mark.parametrize("info, plan, retention, allow, action, lost", [
    (consumer(delivered=3), UPDATE, "limits", False, d.UPDATE, 0),
    (consumer(), REPLACE, "limits", False, d.REPLACE, 0),                     # delivered nothing: free
    (consumer(delivered=3, floor=2), REPLACE, "limits", False, d.REFUSE_LOSS, 1),
    (consumer(delivered=3, floor=2), REPLACE, "limits", True, d.REPLACE, 1),
    (consumer(pending=4), REPLACE, "interest", False, d.REFUSE_LOSS, 1),        # what only it holds
    (consumer(pending=4), REPLACE, "workqueue", False, d.REPLACE, 0),           # a workqueue keeps them
    (consumer(managed=False), REPLACE, "limits", True, d.REFUSE_ADOPTION, 0),
])
def test_a_consumer_that_exists_when_create_runs(info, plan, retention, allow, action, lost):
    decision = d.existing_consumer("s", info, plan, retention, allow)
    assert decision.action == action and len(decision.losses) == lost


@pytest.mark.parametrize("info, same, retention, allow, action", [
    (None, False, "limits", False, d.LEAVE),
    (consumer(pending=4), False, "interest", False, d.LEAVE),               # replaced by a newer one
    (consumer(pending=4), True, "limits", False, d.DELETE),                  # a limits stream keeps its messages
    (consumer(pending=4), True, "interest", False, d.REFUSE_LOSS),
    (consumer(pending=4), True, "interest", True, d.DELETE),
    (consumer(), True, "interest", False, d.DELETE),
])
def test_deleting_a_consumer(info, same, retention, allow, action):
    assert d.consumer_delete("s", info, same, retention, allow).action == action


def test_a_stream_gone_since_the_refresh_is_not_made_again():
    from streams.decisions import REFUSE_VANISHED, vanished_stream

    decision = vanished_stream("orders", "2026-12-04T06:00:00Z")
    assert decision.action == REFUSE_VANISHED
    assert "stream 'orders'" in decision.reason and "made 2026-12-04T06:00:00Z" in decision.reason
    assert "Nothing was created" in decision.reason and "python -m streams cluster grow" in decision.reason
