"""One check for signed blob URLs (:func:`sdfleet.blobs.verify_signed`): pure, no app."""

from __future__ import annotations

import pytest

from sdfleet.blobs import UrlSigner, verify_signed
from sdfleet.errors import Forbidden

SIGNER = UrlSigner(b"unit-secret")
KEY = "outputs/t/j1-0.png"


def test_the_signature_it_made_passes() -> None:
    sig = SIGNER.sign("GET", KEY, 2000)
    verify_signed(SIGNER, "GET", KEY, 2000, sig, now=1000.0)
    verify_signed(SIGNER, "get", KEY, 2000, sig, now=1000.0)  # the method is case-blind


@pytest.mark.parametrize(
    ("method", "key", "exp"), [("PUT", KEY, 2000), ("GET", KEY + "x", 2000), ("GET", KEY, 2001)]
)
def test_a_signature_binds_method_key_and_expiry(method: str, key: str, exp: int) -> None:
    sig = SIGNER.sign("GET", KEY, 2000)
    with pytest.raises(Forbidden) as err:
        verify_signed(SIGNER, method, key, exp, sig, now=1000.0)
    assert err.value.field == "sig"


@pytest.mark.parametrize(
    "sig",
    ["", "é", "ü" * 43, "\ud800", "\udcff" * 43, "\x00", "a" * 10_000, "日本語", "\U0001f600" * 11],
    ids=["empty", "latin1", "latin1-43", "lone-surrogate", "surrogates-43", "nul", "long", "cjk", "emoji"],
)
def test_any_text_as_a_signature_is_forbidden_not_an_error(sig: str) -> None:
    with pytest.raises(Forbidden) as err:
        verify_signed(SIGNER, "GET", KEY, 2000, sig, now=1000.0)
    assert err.value.field == "sig"


def test_an_expired_link_names_exp_before_looking_at_the_signature() -> None:
    with pytest.raises(Forbidden) as err:
        verify_signed(SIGNER, "GET", KEY, 999, "é", now=1000.0)
    assert err.value.field == "exp"


def test_another_secret_does_not_verify() -> None:
    sig = UrlSigner(b"other").sign("GET", KEY, 2000)
    with pytest.raises(Forbidden):
        verify_signed(SIGNER, "GET", KEY, 2000, sig, now=1000.0)
