"""The nats CLI's units, so the guide's flags translate one-to-one into the catalog.

Sizes (`--max-bytes=1GB`): an integer and a unit, case-insensitive, all base 1024: B, K/KB/KiB,
M/MB/MiB, G/GB/GiB, T/TB/TiB; a bare integer is bytes; -1 (or empty) is unlimited. No decimals.
Durations (`--max-age=24h`, `7d`): integer components summed (`1d12h`), units y (365 days),
M (30 days), w, d, h, m, s, ms, us/µs, ns; `0` (or empty) is unlimited/unset. The unit is
case-sensitive where it matters (M is a month, m a minute).

Values cross to the server as integers (bytes, nanoseconds): the one place that converts is here.
"""
from __future__ import annotations

import re
from datetime import datetime

NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
      "d": 86400 * 10**9, "w": 7 * 86400 * 10**9, "M": 30 * 86400 * 10**9, "y": 365 * 86400 * 10**9}
_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
               "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_SIZE = re.compile(r"^(?P<num>\d+)\s*(?P<unit>[A-Za-z]*)$")
_DURATION_PART = re.compile(r"(\d+)(ns|us|µs|ms|y|M|w|d|h|m|s)")


class UnitError(ValueError):
    """A size or duration the nats CLI would not accept."""


def parse_size(value: object, *, unlimited_ok: bool = True) -> int:
    """Bytes for a CLI size; -1 means unlimited."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size; write e.g. 1GB, 512MB or -1 for unlimited")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < -1 or (value == -1 and not unlimited_ok):
            raise UnitError(f"{value} is not a size" + ("; -1 means unlimited" if unlimited_ok else ""))
        return value
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a size; write e.g. 1GB")
    text = value.strip()
    if text in ("", "-1"):
        if unlimited_ok:
            return -1
        raise UnitError("a size is required here (unlimited is not allowed)")
    m = _SIZE.match(text)
    if not m:
        hint = " (decimals are not allowed: write 1536MB, not 1.5GB)" if "." in text else ""
        raise UnitError(f"{value!r} is not a size; write an integer and a unit such as 1GB or 512MB{hint}")
    unit = m.group("unit").lower()
    if unit not in _SIZE_UNITS:
        raise UnitError(f"{value!r} has an unknown size unit {m.group('unit')!r}; use B, KB, MB, GB or TB "
                        "(base 1024, as the nats CLI)")
    return int(m.group("num")) * _SIZE_UNITS[unit]


def parse_duration(value: object) -> int:
    """Nanoseconds for a CLI duration; 0 means unlimited/unset."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a duration; write e.g. 24h, 7d or 30s")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0
        raise UnitError(f"{value!r} has no unit; write e.g. {int(value)}s or {int(value)}ns")
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a duration; write e.g. 24h")
    text = value.strip().replace(" ", "")
    if text in ("", "0"):
        return 0
    total, pos = 0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        hint = " (decimals are not allowed: write 90m, not 1.5h)" if "." in text else ""
        raise UnitError(f"{value!r} is not a duration; write integer components such as 24h, 7d, 1d12h or "
                        f"500ms (units y, M=30d, w, d, h, m, s, ms, us, ns){hint}")
    return total


def format_duration(ns: int) -> str:
    """A compact, exact spelling of nanoseconds (used in messages)."""
    if ns == 0:
        return "0"
    parts, rest = [], ns
    for unit in ("d", "h", "m", "s", "ms", "us", "ns"):
        n, rest = divmod(rest, NS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def parse_server_time(text: str) -> datetime:
    """A server timestamp as a datetime. The server writes nanoseconds (…:00.123456789Z); Python keeps microseconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    tz = "+00:00" if text.endswith("Z") else ""
    if "+" in frac or "-" in frac:
        cut = max(frac.find("+"), frac.find("-"))
        frac, tz = frac[:cut], frac[cut:]
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6].ljust(6, '0')}{tz}")


SECOND = 10**9          # nanoseconds: the wire unit of every JetStream duration


def whole_number(value: object) -> int | None:
    """`value` as an int when it is a whole number (YAML's 5, and 5.0 as numbers arrive over gRPC), else None;
    never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        return None
    return int(value)
