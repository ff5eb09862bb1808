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


# nats-server's subject mapping destinations (server/subject_transform.go, NewSubjectTransformWithStrict and
# indexPlaceHolders, non-strict as streams use them): the functions, in the order the server tries them.
_MAPPING_FUNCTIONS = [(name, re.compile(r"\{\{\s*" + pattern + r"\s*\((.*)\)\s*\}\}")) for name, pattern in (
    ("wildcard", "[wW]ildcard"), ("partition", "[pP]artition"), ("splitfromleft", "[sS]plit[fF]rom[lL]eft"),
    ("splitfromright", "[sS]plit[fF]rom[rR]ight"), ("slicefromleft", "[sS]lice[fF]rom[lL]eft"),
    ("slicefromright", "[sS]lice[fF]rom[rR]ight"), ("right", "[rR]ight"), ("left", "[lL]eft"), ("split", "[sS]plit"),
    ("random", "[rR]andom"))]
_ARG_SEPARATOR = re.compile(r",\s*")
INT32_MAX = 2**31 - 1


def _int_arg(text: str) -> int | None:
    text = text.strip(" ")
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _placeholder(token: str) -> tuple[str, list[int]] | str:
    """A destination token's function and the source wildcard indexes it reads, or why the server refuses it."""
    if len(token) > 1 and token[0] == "$":
        index = _int_arg(token[1:])
        return ("none", []) if index is None or token[1:] != token[1:].strip() else ("wildcard", [index])
    if not (len(token) > 4 and token.startswith("{{") and token.endswith("}}")):
        return "none", []
    name, match = next(((name, m) for name, rx in _MAPPING_FUNCTIONS if (m := rx.search(token))), ("", None))
    if match is None:
        return f"{token!r}: unknown mapping function"
    args = _ARG_SEPARATOR.split(match.group(1))
    if name == "wildcard":
        if len(args) == 1 and args[0] == "":
            return f"{token!r}: not enough arguments"
        if len(args) > 1:
            return f"{token!r}: too many arguments"
        index = _int_arg(args[0])
        return f"{token!r}: invalid argument" if index is None else ("wildcard", [index])
    if name == "partition":
        count = _int_arg(args[0])
        found = [_int_arg(a) for a in args[1:]]
        indexes = [i for i in found if i is not None]
        if count is None or count > INT32_MAX or len(indexes) != len(found):
            return f"{token!r}: invalid argument"
        return "partition", indexes
    if name == "random":
        count = _int_arg(args[0]) if len(args) == 1 else None
        if len(args) != 1:
            return f"{token!r}: not enough arguments"
        return f"{token!r}: invalid argument" if count is None or count > INT32_MAX else ("random", [])
    if len(args) < 2:
        return f"{token!r}: not enough arguments"
    if len(args) > 2:
        return f"{token!r}: too many arguments"
    index = _int_arg(args[0])
    if name == "split":
        if index is None or " " in args[1] or "." in args[1]:
            return f"{token!r}: invalid argument"
        return "split", [index]
    number = _int_arg(args[1])
    if index is None or number is None or not -2**31 <= number <= INT32_MAX:
        return f"{token!r}: invalid argument"
    return name, [index]


def transform_problem(source: str, destination: str) -> str | None:
    """Why nats-server refuses the subject mapping `source` -> `destination` (JetStream error 10156 for a stream's
    subjectTransform), or None."""
    if not destination:
        return None
    source = source or ">"
    for subject in (source, destination):
        if subject_problem(subject):
            return subject_problem(subject)
    stokens, dtokens = source.split("."), destination.split(".")
    if "*" in dtokens:
        return f"destination {destination!r} may not contain '*' (use {{{{wildcard(1)}}}} for the source's first)"
    if (stokens[-1] == ">") != (dtokens[-1] == ">"):
        return f"source and destination must both end in '>' or neither ({source!r} -> {destination!r})"
    wildcards = stokens.count("*")
    for token in dtokens:
        found = _placeholder(token)
        if isinstance(found, str):
            return found
        kind, indexes = found
        if wildcards or stokens[-1] == ">":
            if kind not in ("none", "random") and any(i > wildcards for i in indexes):
                return f"{token!r}: wildcard index out of range (the source {source!r} has {wildcards} '*')"
        elif kind not in ("none", "random", "partition"):
            return f"{token!r}: wildcard index out of range (the source {source!r} has no '*')"
    return None


def mqtt_topic(subject: str) -> str:
    """The MQTT topic (or topic filter) a NATS subject is seen as by MQTT clients: nats-server's
    natsSubjectToMQTTTopic (server/mqtt.go), which reverses mqttToNATSSubjectConversion (`/` <-> `.`, `.` <-> `//`,
    an empty level as `/.` or `./`), plus the wildcards (`*` <-> `+`, `>` <-> `#`) of mqttFilterToNATSSubject.
    Table-tested with the server's own rows (server/mqtt_test.go TestMQTTTopicAndSubjectConversion,
    TestMQTTFilterConversion)."""
    out = []
    i, end = 0, len(subject) - 1
    while i <= end:
        ch = subject[i]
        if ch == "/":
            if i < end and subject[i + 1] in "./":
                out.append("/" if subject[i + 1] == "." else ".")
                i += 1
        elif ch == ".":
            out.append("/")
        else:
            out.append(ch)
        i += 1
    levels = "".join(out).split("/")
    return "/".join({"*": "+", ">": "#"}.get(level, level) for level in levels)
