"""Outbound URL guard and webhook signatures (pure functions)."""

from __future__ import annotations

import pytest

from sdfleet.errors import ValidationError
from sdfleet.jobs.webhooks import backoff_delay, new_webhook_secret, sign, verify
from sdfleet.netguard import check_public_destination, check_url_syntax


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
    ],
)
async def test_private_destinations_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="non-public"):
        await check_public_destination(url, allow_private=False)


async def test_public_ip_literal_passes_and_private_allowed_when_told() -> None:
    await check_public_destination("https://8.8.8.8/hook", allow_private=False)
    await check_public_destination("http://127.0.0.1/hook", allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "example.com/x", "http://user:pw@example.com/", "http:///x"]
)
def test_url_syntax(url: str) -> None:
    with pytest.raises(ValidationError):
        check_url_syntax(url, "webhook_url")


def test_signature_roundtrip_and_tamper() -> None:
    secret = new_webhook_secret()
    sig = sign(secret, "msg_1", 1_700_000_000, '{"a":1}')
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": sig}
    assert verify(secret, headers, '{"a":1}', now=1_700_000_010)
    assert not verify(secret, headers, '{"a":2}', now=1_700_000_010)
    assert not verify(secret, headers, '{"a":1}', now=1_700_009_999)  # replay outside tolerance
    assert not verify(new_webhook_secret(), headers, '{"a":1}', now=1_700_000_010)


def test_standard_webhooks_reference_vector() -> None:
    # the example from the Standard Webhooks specification
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_backoff_grows_and_caps() -> None:
    assert [backoff_delay(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
