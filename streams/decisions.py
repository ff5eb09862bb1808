"""What the providers decide, as pure functions of the facts they read: the current object on the server (or None),
the declaration, and its opt-in. Facts in, a decision out; the providers (streams/provider.py) only carry the
decisions out, and tests/streams/test_decisions.py tables them without a server.

- An existing stream or consumer met by `create` (adoption, or a replacement the engine asked for):
  update it in place, refuse (made outside Pulumi and not changeable in place; or data would be lost without
  allowDataLoss), or replace / recreate it.
- An in-place stream update: refuse when it would delete messages nobody opted into (a lowered limit, counted by
  streams/safety.py; limits -> interest), else update.
- A delete: leave it (gone already, or a newer object of that name replaced the one the state describes), refuse
  (it holds data and the last applied declaration did not opt in), or delete.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stack.catalog import MANAGED_BY_KEY, MANAGED_BY_VALUE, consumer_where, stream_where
from streams.plan import Plan
from streams.safety import LIMIT_NAMES, LimitLoss, consumer_held_messages, consumer_progress_loss, stream_message_loss

UPDATE, REPLACE, REFUSE_ADOPTION, REFUSE_LOSS, DELETE, LEAVE, REFUSE_VANISHED = (
    "update", "replace", "refuse-adoption", "refuse-loss", "delete", "leave", "refuse-vanished")


@dataclass(frozen=True)
class Decision:
    action: str
    losses: tuple[str, ...] = ()    # what the action deletes (refused, or opted into)
    reason: str = ""                # the refusal's words: what was asked and what to do


def is_managed(config: Mapping[str, Any]) -> bool:
    return (config.get("metadata") or {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def existing_stream(info: Mapping[str, Any], plan: Plan, allow_loss: bool) -> Decision:
    """`create` found the stream already there; `plan` is from its config to the declaration."""
    name = info["config"]["name"]
    if plan.action != "replace":
        return Decision(UPDATE)
    if not is_managed(info["config"]):
        return _adoption_refused(f"stream {name!r}", plan, "Make the declaration match the server to adopt it, or "
                                 "back it up and remove it (nats stream rm) to let Pulumi create it anew")
    loss = stream_message_loss(info)
    if loss and not allow_loss:
        return Decision(REFUSE_LOSS, (loss,), refusal(
            stream_where(name), [loss], f"replace it ({'; '.join(plan.replace_reasons)})",
            f"Back it up first (python -m streams backup {name} --bucket …), then set allowDataLoss: true on the "
            "stream to accept, or revert the change"))
    return Decision(REPLACE, (loss,) if loss else ())


def stream_update(name: str, limit_losses: Sequence[LimitLoss], interest_loss: str | None, allow_loss: bool,
                  what: str = "messages") -> Decision:
    """An in-place update: the messages a tightened limit removes (streams/safety.py limit_losses) and those a switch
    to interest retention drops."""
    if limit_losses and not allow_loss:
        return Decision(REFUSE_LOSS, tuple(str(loss) for loss in limit_losses), refusal(
            stream_where(name), [f"{loss} ({what} beyond the new limit)" for loss in limit_losses],
            f"lower {', '.join(LIMIT_NAMES[loss.limit] for loss in limit_losses)}",
            f"Back it up first (python -m streams backup {name} --bucket … or --to DIR), then set allowDataLoss: true on "
            "it to accept, or keep the limit"))
    if interest_loss and not allow_loss:
        return Decision(REFUSE_LOSS, (interest_loss,), refusal(
            stream_where(name), [interest_loss], "switch retention from limits to interest",
            "Add the consumers that should keep them first, or set allowDataLoss: true on the stream to accept"))
    return Decision(UPDATE, tuple(str(loss) for loss in limit_losses) + ((interest_loss,) if interest_loss else ()))


def stream_delete(info: Mapping[str, Any] | None, created: str | None, allow_loss: bool) -> Decision:
    """The engine deletes the stream the state describes (`created` identifies it)."""
    if info is None or (created and info.get("created") != created):
        return Decision(LEAVE)   # gone, or a newer stream of this name replaced the one this resource made
    name = info["config"]["name"]
    loss = stream_message_loss(info)
    if loss and not allow_loss:
        return Decision(REFUSE_LOSS, (loss,), refusal(
            stream_where(name), [loss], "delete it",
            f"Back it up (python -m streams backup {name} --bucket …), then set allowDataLoss: true on the stream "
            "and run `pulumi up` before removing it"))
    return Decision(DELETE, (loss,) if loss else ())


def vanished_stream(name: str, created: str | None) -> Decision:
    """`update` finds no stream although the refresh just read it. Made again empty, it would hide where its messages
    went, and in a cluster that has just formed (the `pulumi up` of a grow) the server answers "not found" until
    `python -m streams cluster grow` restores it: an empty stream there is in the restore's way."""
    return Decision(REFUSE_VANISHED, reason=(
        f"{stream_where(name)}: it was on the server at the refresh (made {created or 'earlier'}) and is gone now. "
        "Nothing was created. If the deployment has just grown into a cluster, finish `python -m streams cluster "
        "grow` (it restores the stream) and run `pulumi up` again; if it was deleted, restore it from a backup "
        "(python -m streams restore) or run `pulumi up` again to make it anew, empty"))


def existing_consumer(stream: str, info: Mapping[str, Any], plan: Plan, retention: str, allow_loss: bool) -> Decision:
    """`create` found the consumer already there."""
    name = info["config"].get("durable_name") or info.get("name")
    if plan.action != "replace":
        return Decision(UPDATE)
    if not is_managed(info["config"]):
        return _adoption_refused(f"consumer {name!r} of stream {stream!r}", plan, "Make the declaration match to "
                                 "adopt it, or remove it (nats consumer rm) to let Pulumi create it anew")
    losses = tuple(loss for loss in (consumer_progress_loss(info), consumer_held_messages(info, retention)) if loss)
    if losses and not allow_loss:
        return Decision(REFUSE_LOSS, losses, refusal(
            consumer_where(stream, str(name)), list(losses), f"recreate it ({'; '.join(plan.replace_reasons)})",
            "Set allowDataLoss: true on the consumer to accept, or revert the change"))
    return Decision(REPLACE, losses)


def consumer_delete(stream: str, info: Mapping[str, Any] | None, same: bool, retention: str,
                    allow_loss: bool) -> Decision:
    """The engine deletes the consumer the state describes (`same`: the one on the server is that one)."""
    if info is None or not same:
        return Decision(LEAVE)
    name = str(info["config"].get("durable_name") or info.get("name"))
    held = consumer_held_messages(info, retention)
    if held and not allow_loss:
        return Decision(REFUSE_LOSS, (held,), refusal(
            consumer_where(stream, name), [held], "delete it",
            "Let it catch up first, or set allowDataLoss: true on the consumer (or its stream) and run `pulumi up` "
            "before removing it"))
    return Decision(DELETE, (held,) if held else ())


def _adoption_refused(what: str, plan: Plan, remedy: str) -> Decision:
    return Decision(REFUSE_ADOPTION, reason=(
        f"{what} exists on the server (made outside Pulumi) and differs from the declaration in fields the server "
        f"cannot change: {'; '.join(plan.replace_reasons)}. {remedy}"))


def refusal(what: str, losses: Sequence[str], action: str, remedy: str) -> str:
    """The words of a refusal to lose data: what, what it would delete, that nothing changed, what to do."""
    return f"{what}: refusing to {action}: it would delete {'; and '.join(losses)}. Nothing was changed. {remedy}"
