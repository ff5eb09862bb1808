"""NATS subject syntax, and the two relations the catalog checks: overlap (two streams may not
capture the same subject) and subset (a consumer's filter must lie inside its stream's subjects).
Wildcards are whole tokens: `*` matches one token, `>` one or more and only as the last token.
"""
from __future__ import annotations

import re

_NAME_FORBIDDEN = re.compile(r"[.*>\s/\\]|[\x00-\x1f\x7f]")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a stream or consumer name, or None (server rules: no . * > whitespace,
    no path separators, printable, at most 255 bytes)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if _NAME_FORBIDDEN.search(name):
        return "may not contain '.', '*', '>', whitespace or path separators ('/', '\\')"
    if len(name.encode()) > 255:
        return "is longer than 255 bytes"
    return None


def subject_problem(subject: object, *, wildcards: bool = True) -> str | None:
    """Why `subject` is not a valid subject (pattern), or None."""
    if not isinstance(subject, str) or not subject:
        return "a subject must be a non-empty string"
    if any(c.isspace() for c in subject):
        return f"subject {subject!r} contains whitespace"
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if token == "":
            return f"subject {subject!r} has an empty token (leading, trailing or double '.')"
        if token in ("*", ">") and not wildcards:
            return f"subject {subject!r} may not contain wildcards here"
        if token == ">" and i != len(tokens) - 1:
            return f"subject {subject!r} has '>' before the last token"
    return None


def subjects_overlap(a: str, b: str) -> bool:
    """True when some concrete subject matches both patterns."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return False
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return True


def subject_is_subset(inner: str, outer: str) -> bool:
    """True when every subject matching `inner` also matches `outer`."""
    ti, to = inner.split("."), outer.split(".")
    for i, o in enumerate(to):
        if o == ">":
            return i < len(ti)
        if i >= len(ti):
            return False
        t = ti[i]
        if t == ">":
            return False
        if o == "*":
            continue
        if t != o:
            return False
    return len(ti) == len(to)
