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
  checked against nats-server 2.15.1 in tests/streams/test_data_loss.py.
- Deleting a consumer, also to recreate it with a field the server cannot change, throws away its
  delivered sequence and ack floor: the new one starts again from its deliver policy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stack.units import parse_server_time


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


def interest_conversion_loss(info: Mapping[str, Any], consumers: Sequence[Mapping[str, Any]]) -> str | None:
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
LIMIT_NAMES = {"max_age": "maxAge", "max_msgs": "maxMsgs", "max_bytes": "maxBytes",
               "max_msgs_per_subject": "maxMsgsPerSubject"}


def lowered_limits(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """The retention limits the change tightens (a lower value, or a limit where there was none)."""
    out = []
    for key in LIMIT_KEYS:
        unlimited = 0 if key == "max_age" else -1
        old, new = current.get(key, unlimited), desired.get(key, unlimited)
        if new not in (unlimited, 0) and (old in (unlimited, 0) or new < old):
            out.append(key)
    return out


@dataclass(frozen=True)
class LimitLoss:
    """What one tightened limit would remove from the stream as the server holds it now."""
    limit: str        # wire key
    messages: int     # how many messages the server state implies would go (an estimate for maxBytes)
    detail: str

    def __str__(self) -> str:
        return self.detail


def limit_losses(info: Mapping[str, Any], desired: Mapping[str, Any], *, now: datetime,
                 subject_counts: Mapping[str, int] | None = None,
                 first_seq_after_cutoff: int | None = None) -> list[LimitLoss]:
    """What each limit the change tightens would delete, from the stream's state (nats-server 2.15.1 applies a lowered
    limit at once on update, measured in tests/streams/test_data_loss.py):
    - maxMsgs, maxBytes: the oldest messages beyond the limit, only with `discard: old` (with `discard: new` the
      server keeps what it holds and refuses new messages instead); bytes become a count through the average size;
    - maxMsgsPerSubject: beyond the limit on each subject, whatever the discard policy (`subject_counts`, from
      STREAM.INFO with subjects_filter);
    - maxAge: every message older than now - maxAge (`first_seq_after_cutoff`: the sequence of the first message at
      or after that time, from MSG.GET start_time; None when there is none, so every message would go)."""
    state = info.get("state") or {}
    messages, size = state.get("messages", 0), state.get("bytes", 0)
    if not messages:
        return []
    current = info.get("config") or {}
    discard_old = desired.get("discard", "old") != "new"
    out = []
    for key in lowered_limits(current, desired):
        new = desired[key]
        if key == "max_msgs" and discard_old and messages > new:
            out.append(LimitLoss(key, messages - new, f"{messages - new} of its {messages} messages (maxMsgs {new})"))
        elif key == "max_bytes" and discard_old and size > new:
            average = size / messages
            n = min(messages, -(-(size - new) // max(1, int(average))))
            out.append(LimitLoss(key, n, f"about {n} of its {messages} messages ({size} bytes held, maxBytes {new})"))
        elif key == "max_msgs_per_subject" and subject_counts:
            over = {subj: count - new for subj, count in subject_counts.items() if count > new}
            if over:
                n = sum(over.values())
                out.append(LimitLoss(key, n, f"{n} messages on {len(over)} subject(s) holding more than maxMsgsPerSubject {new}"))
        elif key == "max_age":
            first = _first_time(state.get("first_ts"))
            cutoff = now - timedelta(microseconds=new // 1000)
            if first is not None and first < cutoff:
                first_seq = state.get("first_seq", 0)
                n = messages if first_seq_after_cutoff is None else min(messages, first_seq_after_cutoff - first_seq)
                if n > 0:
                    out.append(LimitLoss(key, n, f"{n} of its {messages} messages, older than the new maxAge"
                                                 f" (the oldest from {state.get('first_ts')})"))
    return out


def _first_time(value: Any) -> datetime | None:
    """The stream's first message time; None for an empty stream (the server writes the zero time)."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    return parse_server_time(value)
