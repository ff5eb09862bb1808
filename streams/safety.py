"""What a change would lose: pure functions over the server's stream and consumer info, so that the
provider can refuse a change before it deletes messages or a consumer's progress (unless the declaration
opted in with `allowDataLoss: true`), and say exactly what would be lost.

How the server loses data, read in nats-server `server/stream.go` and `server/consumer.go` (2.15):
- Deleting a stream deletes its messages.
- On an interest-retention stream a message is kept only while a consumer still has to deliver or
  acknowledge it; deleting a consumer (also to recreate it) drops what only it held
  (`checkInterestState`), and turning a limits stream into an interest stream drops every message no
  consumer still holds.
- A workqueue stream keeps its messages when a consumer is deleted (they wait for the next consumer):
  checked against nats-server 2.15.1 in tests/test_data_loss.py.
- Deleting a consumer, also to recreate it with a field the server cannot change, throws away its
  delivered sequence and ack floor: the new one starts again from its deliver policy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def stream_message_loss(info: Mapping[str, Any]) -> str | None:
    """What deleting the stream loses, or None when it is empty."""
    state = info.get("state") or {}
    messages = state.get("messages", 0)
    if not messages:
        return None
    return f"its {messages} messages ({state.get('bytes', 0)} bytes)"


def consumer_progress_loss(info: Mapping[str, Any]) -> str | None:
    """What recreating the consumer loses: its place in the stream, once it has delivered anything."""
    delivered = (info.get("delivered") or {}).get("consumer_seq", 0)
    if not delivered:
        return None
    floor = (info.get("ack_floor") or {}).get("stream_seq", 0)
    return (f"its progress: it has delivered {delivered} messages and acknowledged up to stream sequence {floor}; "
            "a new consumer starts again from its deliver policy (redelivering processed messages or skipping "
            "unprocessed ones)")


def consumer_held_messages(info: Mapping[str, Any], retention: str) -> str | None:
    """What deleting the consumer makes an interest stream drop: the messages it still has to deliver or
    acknowledge (those no other consumer holds are deleted)."""
    if retention != "interest":
        return None
    pending, ack_pending = info.get("num_pending", 0), info.get("num_ack_pending", 0)
    if not pending and not ack_pending:
        return None
    return (f"the stream's messages it holds ({pending} not yet delivered, {ack_pending} delivered but not "
            "acknowledged): on this interest stream they are deleted unless another consumer still holds them")


def interest_conversion_loss(info: Mapping[str, Any], consumers: list[Mapping[str, Any]]) -> str | None:
    """What turning a limits stream into an interest stream drops: every message no consumer still holds.
    None when nothing can drop: the stream is empty, or a consumer without a filter has acknowledged
    nothing that is still in the stream (it holds every message)."""
    state = info.get("state") or {}
    messages, first = state.get("messages", 0), state.get("first_seq", 0)
    if not messages:
        return None
    for c in consumers:
        cfg = c.get("config") or {}
        unfiltered = not cfg.get("filter_subject") and not cfg.get("filter_subjects")
        if unfiltered and (c.get("ack_floor") or {}).get("stream_seq", 0) < first:
            return None
    held = "no consumers" if not consumers else "consumers that do not hold all of them"
    return (f"up to {messages} of its messages: an interest stream keeps only messages a consumer still has to "
            f"deliver or acknowledge, and it has {held}")


LIMIT_KEYS = ("max_age", "max_msgs", "max_bytes", "max_msgs_per_subject")


def lowered_limits(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """The retention limits the change tightens (a lower value, or a limit where there was none)."""
    out = []
    for key in LIMIT_KEYS:
        unlimited = 0 if key == "max_age" else -1
        old, new = current.get(key, unlimited), desired.get(key, unlimited)
        if new not in (unlimited, 0) and (old in (unlimited, 0) or new < old):
            out.append(key)
    return out
