"""NATS URLs: whether one can be dialled, and how to show one without its password. A leaf."""
from __future__ import annotations

import re
from typing import Any


def redact_url(url: str) -> str:
    """A URL with any password replaced by ***, for messages: `user:PASSWORD@` keeps the user, and a user part
    without a password is a token (nats-py sends it as auth_token: nats/aio/client.py _connect_command), so it goes
    whole."""
    def hide(match: re.Match) -> str:
        user, colon, _ = match.group(1).partition(":")   # the user part ends at the first ':'; the rest is secret
        return f"://{user}:***@" if colon else "://***@"
    # The user information runs to the last '@' of the authority, as URL parsers take it (a password may hold '@').
    return re.sub(r"://([^/\s,]*)@", hide, url)


def nats_url_problem(value: Any) -> str | None:
    """Why `value` is not a NATS server URL (or comma-separated list of them) nats-py can dial, or None."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.strip():
        return "expected a NATS URL such as nats://10.0.0.248:4222"
    for part in value.split(","):
        part = part.strip()
        try:
            url = urlsplit(part)
            port = url.port
        except ValueError as exc:
            return f"{redact_url(part)!r} is not a URL ({exc})"
        if url.scheme not in ("nats", "tls", "ws", "wss") or not url.hostname:
            return (f"{redact_url(part)!r} is not a NATS URL: expected nats://HOST:PORT (or tls://, ws://, wss://), "
                    "e.g. nats://10.0.0.248:4222")
        if url.path not in ("", "/") or url.query or url.fragment:
            return f"{redact_url(part)!r} has a path or query, which a NATS URL does not take"
        if port == 0:
            return f"{redact_url(part)!r}: port 0 cannot be dialled"
    return None
