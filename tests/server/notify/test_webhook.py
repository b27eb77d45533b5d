"""Posting to the webhook: the signature, HTTPS with a private CA, and what counts as failed."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import pytest

from schoolgate.server.notify.settings import WebhookSettings
from schoolgate.server.notify.webhook import (
    Poster,
    WebhookDown,
    WebhookRefused,
    signature,
)
from tests.support.certs import ScratchPKI
from tests.support.process import free_port
from tests.support.webhook_receiver import WebhookReceiver

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def tls_receiver(pki: ScratchPKI) -> Iterator[WebhookReceiver]:
    made = WebhookReceiver(pki.server_context())
    yield made
    made.close()


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"schoolgate":1}'
    expected = hmac.new(SECRET, b"1763633000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1763633000", body) == f"sha256={expected}"
    assert signature(SECRET, "1763633001", body) != signature(SECRET, "1763633000", body)


def test_a_post_over_https_to_a_private_ca(tls_receiver: WebhookReceiver, pki: ScratchPKI) -> None:
    hook = WebhookSettings(tls_receiver.url, SECRET, 10, pki.ca_file)
    with Poster(hook) as poster:
        poster.post(b'{"a":1}', "42")
    (post,) = tls_receiver.received()
    assert post.body == b'{"a":1}'
    assert post.headers["X-Schoolgate-Delivery"] == "42"
    assert post.headers["User-Agent"].startswith("schoolgate-collector/")
    timestamp = post.headers["X-Schoolgate-Timestamp"]
    assert post.headers["X-Schoolgate-Signature"] == signature(SECRET, timestamp, post.body)


def test_an_unknown_certificate_is_refused(tls_receiver: WebhookReceiver) -> None:
    hook = WebhookSettings(tls_receiver.url, SECRET, 10, None)
    with Poster(hook) as poster, pytest.raises(WebhookDown, match="CERTIFICATE_VERIFY_FAILED"):
        poster.post(b"{}", "1")
    assert tls_receiver.received() == []


def test_only_2xx_is_delivered_and_redirects_are_not_followed(receiver: WebhookReceiver) -> None:
    receiver.answers.extend([302, 401])
    hook = WebhookSettings(receiver.url, SECRET, 10, None)
    with Poster(hook) as poster:
        with pytest.raises(WebhookRefused, match="HTTP 302 Found"):
            poster.post(b"{}", "1")
        with pytest.raises(WebhookRefused, match="HTTP 401 Unauthorized"):
            poster.post(b"{}", "1")
        poster.post(b"{}", "1")
    assert len(receiver.received()) == 3


def test_nobody_listening_is_down() -> None:
    hook = WebhookSettings(f"http://127.0.0.1:{free_port()}/", SECRET, 5, None)
    with Poster(hook) as poster, pytest.raises(WebhookDown, match="ConnectError"):
        poster.post(b"{}", "1")
