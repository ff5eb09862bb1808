"""URLs in messages: no password, no token (stack/urls.py redact_url), tabled."""
import pytest

from stack.urls import redact_url


@pytest.mark.parametrize("url, shown", [
    ("nats://10.0.0.248:4222", "nats://10.0.0.248:4222"),
    ("nats://admin:s3cret@10.0.0.248:4222", "nats://admin:***@10.0.0.248:4222"),
    ("nats://s3cr3tToken@10.0.0.248:4222", "nats://***@10.0.0.248:4222"),          # a token: nats-py auth_token
    ("tls://a:b@h1:4222,nats://tok@h2:4222,nats://h3:4222", "tls://a:***@h1:4222,nats://***@h2:4222,nats://h3:4222"),
    ("nats://admin:p@ss@word@host:4222", "nats://admin:***@host:4222"),
    ("nats://admin:@host:4222", "nats://admin:***@host:4222"),
    ("see nats://tok@host:4222 for details", "see nats://***@host:4222 for details"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
