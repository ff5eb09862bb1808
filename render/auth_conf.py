"""The file nats.conf includes when auth is on: the users, their passwords and permissions, in the server's
config syntax. Pure text; its content goes into a Secret."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stack.users import ANONYMOUS, STREAMS_ACCOUNT, SYSTEM, SYSTEM_ACCOUNT, Import, ServerUser


def _conf_string(text: str) -> str:
    """A double-quoted nats.conf string. The lexer knows only the escapes \\" \\\\ \\t \\n \\r and \\xXX
    (nats-server conf/lex.go lexStringEscape; no \\u): quotes and backslashes are escaped, control characters
    written as \\xXX, everything else (UTF-8 included) as it is. Inside quotes `$` is not a variable."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _conf_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_conf_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_conf_value(v) for v in value) + "]"
    return _conf_string(str(value))


def _user_entry(user: ServerUser, passwords: Mapping[str, str]) -> str:
    if user.name not in passwords:
        raise ValueError(f"no password for NATS user {user.name!r}")
    entry = f"{{user: {_conf_string(user.name)}, password: {_conf_string(passwords[user.name])}"
    if user.permissions is not None:
        entry += f", permissions: {_conf_value(user.permissions)}"
    if user.connection_types is not None:
        entry += f", allowed_connection_types: {_conf_value(list(user.connection_types))}"
    return entry + "}"


def streams_exports(users: Iterable[ServerUser], exporter: str = STREAMS_ACCOUNT) -> list[dict]:
    """What `exporter` (the streams' account, or the system account) exports: each subject an account imports from
    it, to exactly the accounts importing it (an export without `accounts` would be open to every account)."""
    importers: dict[Import, list[str]] = {}
    for user in users:
        for imp in user.imports or ():
            if imp.account == exporter:
                importers.setdefault(imp, []).append(user.account)
    exports = []
    for imp, accounts in importers.items():
        export: dict[str, Any] = {imp.kind: imp.subject}
        if imp.streamed:
            export["response_type"] = "stream"
        export["accounts"] = accounts
        exports.append(export)
    return exports


def _account_block(name: str, body: list[str]) -> list[str]:
    return [f"  {_conf_string(name)}: {{", *(f"    {line}" for line in body), "  }"]


def render_auth_conf(users: Iterable[ServerUser], passwords: Mapping[str, str], *,
                     system_password: str | None = None) -> str:
    """The file nats.conf includes when auth is on (or in a cluster): the accounts, their users with passwords and
    permissions, and what each account exports and imports, in the server's config syntax. It is the content of a
    Secret, never of the ConfigMap, and it is one file on purpose: the server refuses a config whose included
    variables are unused or missing, so passwords kept apart from the users would make every added or removed user
    a window in which a reload (or a restart) fails.

    With auth on (stack/users.py, "Accounts"): `STREAMS` has JetStream and the operator users and exports to each
    application account exactly what that account imports; every application user is alone in its own account.

    With `system_password` (a cluster) the system account gets its user, `sys`. Without any users (auth off) the
    server would then refuse clients that bring no credentials: they log in as `anonymous` of the global account,
    with every permission, as they did before (nats-server opts.go no_auth_user; the streams stay where they are,
    in the global account)."""
    users = list(users)
    lines = ["# Rendered by homelab-nats (render/auth_conf.py): accounts, users, passwords, permissions. A Secret."]
    accounts: list[str] = []
    if users:
        operators = [u for u in users if u.imports is None]
        exports = streams_exports(users)
        body = ["jetstream: enabled", "users: [", *(f"  {_user_entry(u, passwords)}" for u in operators), "]"]
        if exports:
            body += ["exports: [", *(f"  {_conf_value(e)}" for e in exports), "]"]
        accounts += _account_block(STREAMS_ACCOUNT, body)
        for user in users:
            if user.imports is None:
                continue
            imports = [{imp.kind: {"account": imp.account, "subject": imp.subject}} for imp in user.imports]
            accounts += _account_block(user.account, [f"users: [{_user_entry(user, passwords)}]", "imports: [",
                                                      *(f"  {_conf_value(i)}" for i in imports), "]"])
    else:
        lines += ["authorization {", "  users: ["]
        if system_password is not None:
            lines.append(f"    {{user: {_conf_string(ANONYMOUS)}}}")
        lines += ["  ]", "}"]
        if system_password is not None:
            lines.append(f"no_auth_user: {_conf_string(ANONYMOUS)}")
    system_exports = streams_exports(users, SYSTEM_ACCOUNT)
    has_system_account = system_password is not None or bool(system_exports)
    if has_system_account:
        # The system account: in a cluster its user `sys`, for peer removal and server-wide requests ($SYS); with
        # auth on, what it exports to the monitor.
        body = [f"users: [{{user: {_conf_string(SYSTEM)}, password: {_conf_string(system_password)}}}]"] \
            if system_password is not None else []
        if system_exports:
            body += ["exports: [", *(f"  {_conf_value(e)}" for e in system_exports), "]"]
        accounts += _account_block(SYSTEM_ACCOUNT, body)
    if accounts:
        lines += ["accounts {", *accounts, "}"]
    if has_system_account:
        lines.append(f"system_account: {SYSTEM_ACCOUNT}")
    return "\n".join(lines) + "\n"
