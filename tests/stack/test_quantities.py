"""Kubernetes quantities and Go memory limits: tables of inputs and the bytes (or errors) they give."""
from decimal import Decimal

import pytest

from stack.quantities import QuantityError, format_go_memlimit, parse_go_memlimit, parse_positive_bytes, parse_quantity


@pytest.mark.parametrize("text, value", [
    ("512Mi", 512 * 2**20), ("10Gi", 10 * 2**30), ("1Gi", 2**30), ("1Ki", 1024), ("2Ti", 2 * 2**40),
    ("1G", 10**9), ("1k", 1000), ("1M", 10**6), ("1.5Gi", 3 * 2**29), ("500m", Decimal("0.5")),
    ("100m", Decimal("0.1")), ("2", 2), (3, 3), (".5Gi", 2**29), ("+1Mi", 2**20),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text, "k").value == value


@pytest.mark.parametrize("text, fragment", [
    ("512MB", 'did you mean "512Mi"'), ("10GB", 'did you mean "10Gi"'), ("1gi", 'did you mean "1Gi"'),
    ("10G B", "not a Kubernetes quantity"), ("", "not a Kubernetes quantity"), ("-1Gi", "not a Kubernetes quantity"),
    ("1Xi", "unknown unit"), (None, "expected a Kubernetes quantity"), (True, "expected a Kubernetes quantity"),
    ("Gi", "not a Kubernetes quantity"),
])
def test_parse_quantity_rejects(text, fragment):
    with pytest.raises(QuantityError) as err:
        parse_quantity(text, "homelab-nats:jetstream.fileStore")
    assert "homelab-nats:jetstream.fileStore" in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize("text, fragment", [("0", "greater than zero"), ("0Gi", "greater than zero"),
                                            ("100m", "whole number of bytes")])
def test_positive_bytes_rejects(text, fragment):
    with pytest.raises(QuantityError, match=fragment):
        parse_positive_bytes(text, "key")


@pytest.mark.parametrize("text, value", [("450MiB", 450 * 2**20), ("1GiB", 2**30), ("471859200", 471859200),
                                         ("64KiB", 65536), ("10B", 10)])
def test_parse_go_memlimit(text, value):
    assert parse_go_memlimit(text, "k") == value


@pytest.mark.parametrize("text", ["450Mi", "450MB", "0", "1.5GiB", "", "abc"])
def test_parse_go_memlimit_rejects(text):
    with pytest.raises(QuantityError, match="homelab-nats:goMemLimit"):
        parse_go_memlimit(text, "homelab-nats:goMemLimit")


@pytest.mark.parametrize("value, text", [(450 * 2**20, "450MiB"), (2**30, "1GiB"), (3072, "3KiB"), (1536, "1536B"), (1000, "1000B")])
def test_format_go_memlimit_round_trips(value, text):
    assert format_go_memlimit(value) == text
    assert parse_go_memlimit(text, "k") == value
