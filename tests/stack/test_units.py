"""The nats CLI's units, as tables."""
import pytest

from stack.units import UnitError, format_duration, parse_duration, parse_size

S = 10**9


@pytest.mark.parametrize("text, expected", [
    ("1GB", 1073741824), ("1gb", 1073741824), ("1G", 2**30), ("1GiB", 2**30), ("512MB", 512 * 2**20),
    ("512M", 512 * 2**20), ("1KB", 1024), ("1k", 1024), ("1KiB", 1024), ("2TB", 2 * 2**40), ("100B", 100),
    ("100", 100), (100, 100), ("-1", -1), (-1, -1), ("", -1), (-1.0, -1), (1024.0, 1024), (" 5 MB ", 5 * 2**20),
    ("0", 0),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("1.5GB", "decimals are not allowed"), ("1PB", "unknown size unit"), ("GB", "not a size"),
    ("-2", "not a size"), (-5, "not a size"), (True, "not a size"), ("1 G B", "not a size"), (None, "not a size"),
])
def test_bad_sizes(text, fragment):
    with pytest.raises(UnitError, match=fragment):
        parse_size(text)


def test_size_unlimited_can_be_refused():
    with pytest.raises(UnitError, match="required"):
        parse_size("-1", unlimited_ok=False)


@pytest.mark.parametrize("text, expected", [
    ("24h", 24 * 3600 * S), ("7d", 7 * 86400 * S), ("1h", 3600 * S), ("30d", 30 * 86400 * S), ("1w", 7 * 86400 * S),
    ("1M", 30 * 86400 * S), ("1m", 60 * S), ("1y", 365 * 86400 * S), ("1d12h", 36 * 3600 * S), ("500ms", S // 2),
    ("2m30s", 150 * S), ("10us", 10_000), ("10µs", 10_000), ("5ns", 5), ("0", 0), ("", 0), (0, 0),
    ("1h 30m", 90 * 60 * S), ("290ms", 290_000_000),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("1.5h", "decimals are not allowed"), ("24", "not a duration"), (3600, "has no unit"), ("h", "not a duration"),
    ("1x", "not a duration"), ("1h-", "not a duration"), (True, "not a duration"), ("-1h", "not a duration"),
])
def test_bad_durations(text, fragment):
    with pytest.raises(UnitError, match=fragment):
        parse_duration(text)


@pytest.mark.parametrize("ns, text", [(0, "0"), (36 * 3600 * S, "1d12h"), (150 * S, "2m30s"), (S // 2, "500ms")])
def test_format_duration_round_trips(ns, text):
    assert format_duration(ns) == text and parse_duration(text) == ns
