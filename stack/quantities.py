"""Kubernetes resource quantities ("512Mi", "10Gi", "500m") and Go memory limits ("450MiB").

One place parses sizes for the whole project. Errors name the config key and show the fix,
because the usual mistake is writing the nats CLI's or Docker's "512MB" where Kubernetes wants "512Mi".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_MILLI = {"m": Decimal("0.001")}
_QUANTITY = re.compile(r"^(?P<num>[+]?(\d+(\.\d*)?|\.\d+))(?P<suffix>[A-Za-z]*)$")
# Common non-Kubernetes spellings and the Kubernetes suffix the user almost certainly meant.
_LIKELY_MEANT = {
    "kb": "Ki", "kib": "Ki", "mb": "Mi", "mib": "Mi", "gb": "Gi", "gib": "Gi", "tb": "Ti", "tib": "Ti",
    "b": "", "g": "Gi", "mi": "Mi", "gi": "Gi", "ki": "Ki", "ti": "Ti",
}


class QuantityError(ValueError):
    """A size or CPU value that is not a valid Kubernetes quantity."""


@dataclass(frozen=True)
class Quantity:
    """A quantity as written in the config (`text`, kept for manifests) and its numeric value."""

    text: str
    value: Decimal

    @property
    def bytes(self) -> int:
        return int(self.value)


def parse_quantity(text: object, key: str) -> Quantity:
    """Parse a Kubernetes quantity such as "512Mi", "10Gi", "1.5G", "500m" or "2".

    `key` is the config key, named in the error.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise QuantityError(f"{key}: expected a Kubernetes quantity such as \"512Mi\", got {text!r}")
    s = str(text).strip()
    m = _QUANTITY.match(s)
    if not m:
        raise QuantityError(
            f"{key}: {text!r} is not a Kubernetes quantity; write a number with a suffix such as "
            "\"512Mi\", \"10Gi\" or \"500m\"")
    suffix = m.group("suffix")
    try:
        number = Decimal(m.group("num"))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise QuantityError(f"{key}: {text!r} has an unreadable number") from exc
    if suffix in _BINARY:
        factor = Decimal(_BINARY[suffix])
    elif suffix in _DECIMAL:
        factor = Decimal(_DECIMAL[suffix])
    elif suffix in _MILLI:
        factor = _MILLI[suffix]
    else:
        meant = _LIKELY_MEANT.get(suffix.lower())
        hint = (f"; did you mean \"{m.group('num')}{meant}\"? Kubernetes uses Ki/Mi/Gi/Ti for powers of "
                "1024 and k/M/G/T for powers of 1000") if meant is not None else (
                "; use Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000)")
        raise QuantityError(f"{key}: {text!r} has an unknown unit {suffix!r}{hint}")
    return Quantity(text=s, value=number * factor)


def parse_positive_bytes(text: object, key: str) -> Quantity:
    """A quantity of bytes that must be a whole, positive number."""
    q = parse_quantity(text, key)
    if q.value <= 0:
        raise QuantityError(f"{key}: must be greater than zero, got {text!r}")
    if q.value != q.value.to_integral_value():
        raise QuantityError(f"{key}: {text!r} is not a whole number of bytes")
    return q


_GO_MEMLIMIT = re.compile(r"^(?P<num>\d+)(?P<unit>B|KiB|MiB|GiB|TiB)?$")
_GO_UNITS = {None: 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_go_memlimit(text: object, key: str) -> int:
    """Parse a GOMEMLIMIT value as the Go runtime does ("450MiB", "1GiB", "471859200")."""
    m = _GO_MEMLIMIT.match(str(text).strip()) if isinstance(text, (str, int)) else None
    if not m or isinstance(text, bool):
        raise QuantityError(
            f"{key}: {text!r} is not a Go memory limit; write a whole number with B, KiB, MiB, GiB or "
            "TiB, e.g. \"450MiB\" (note the Go spelling: MiB, not Mi)")
    value = int(m.group("num")) * _GO_UNITS[m.group("unit")]
    if value <= 0:
        raise QuantityError(f"{key}: must be greater than zero, got {text!r}")
    return value


def format_go_memlimit(value: int) -> str:
    """The Go spelling of a byte count, in the largest unit that divides it."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if value % _GO_UNITS[unit] == 0:
            return f"{value // _GO_UNITS[unit]}{unit}"
    return f"{value}B"
