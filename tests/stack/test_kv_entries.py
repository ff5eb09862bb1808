"""Key-value entries declared in the stack (`keyValues.<bucket>.entries`), parsed and refused as at preview."""
import pytest

from stack.buckets import KEY_VALUE, OBJECT_STORE, EntrySpec, load_buckets
from stack.catalog import CatalogError


@pytest.mark.parametrize("entries, expected", [
    ({"room1.interval": "30"}, [("room1.interval", "30")]),
    ({"interval": 30, "enabled": True, "ratio": 0.5}, [("interval", "30"), ("enabled", "true"), ("ratio", "0.5")]),
    ({"fw/url": "http://x", "a=b_c-d": ""}, [("fw/url", "http://x"), ("a=b_c-d", "")]),
    ({"wifi.psk": {"secure": "v1:abc"}}, [("wifi.psk", None)]),     # encrypted: only `pulumi up` reads it
])
def test_entries_are_parsed(entries, expected):
    [spec] = load_buckets({"device-config": {"history": 5, "entries": entries}}, KEY_VALUE)
    assert [(e.key, e.value) for e in spec.entries] == expected
    assert "entries" not in spec.declaration   # never in the bucket's own inputs (a value may be a secret)
    assert all(e.bucket == "device-config" and not e.allow_data_loss for e in spec.entries)


@pytest.mark.parametrize("entries, key, words", [
    ({".hidden": "x"}, "entries..hidden", "no '.' at either end"),
    ({"a b": "x"}, "entries.a b", "nats.go keyValid"),
    ({"a.*": "x"}, "entries.a.*", "letters, digits"),
    ({"k": ["a", "b"]}, "entries.k", "expected text"),
    ("k=v", "entries", "expected a map of keys to values"),
])
def test_bad_entries_name_the_key(entries, key, words):
    with pytest.raises(CatalogError) as err:
        load_buckets({"device-config": {"entries": entries}}, KEY_VALUE)
    assert key in str(err.value) and words in str(err.value)


def test_only_key_value_buckets_have_entries():
    with pytest.raises(CatalogError, match="unknown option"):
        load_buckets({"firmware": {"entries": {"a": "b"}}}, OBJECT_STORE)
    [spec] = load_buckets({"b": {"allowDataLoss": True, "entries": {"k": "v"}}}, KEY_VALUE)
    assert spec.entries == (EntrySpec("b", "k", "v", True),)
