"""Signed callback URL tokens, IP allow-lists and body HMACs (receiver.providers.callback_auth)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from receiver.providers.base import CallbackRejected
from receiver.providers.callback_auth import (
    CallbackTokens,
    SignedUrlAuth,
    check_body_hmac,
    check_ip,
    key_id,
)

OLD = "old-key-0123456789abcdef"
NEW = "new-key-0123456789abcdef"


@contextmanager
def refused(code: str) -> Iterator[None]:
    """The block raises CallbackRejected with status 403 and this error_code."""
    with pytest.raises(CallbackRejected) as info:
        yield
    assert (info.value.status, info.value.error_code) == (403, code)


def test_a_token_names_its_provider_key_and_label() -> None:
    tokens = CallbackTokens([NEW])
    token, kid = tokens.issue("telecom23", "acct-1")
    assert kid == key_id(NEW) and len(kid) == 8
    claims = tokens.verify(token, "telecom23")
    assert (claims.provider, claims.key_id, claims.label, claims.current_key) == (
        "telecom23",
        kid,
        "acct-1",
        True,
    )
    assert NEW not in token and len(token) < 200


def test_a_token_for_one_provider_is_refused_on_another() -> None:
    tokens = CallbackTokens([NEW])
    token, _ = tokens.issue("telecom23")
    with refused("token_wrong_provider"):
        tokens.verify(token, "mesms")


def test_rotation_keeps_old_urls_working_until_the_old_key_is_removed() -> None:
    old_token, old_kid = CallbackTokens([OLD]).issue("mesms")
    rotating = CallbackTokens([NEW, OLD])
    claims = rotating.verify(old_token, "mesms")
    assert claims.key_id == old_kid and not claims.current_key
    new_token, new_kid = rotating.issue("mesms")
    assert new_kid == key_id(NEW) and rotating.verify(new_token, "mesms").current_key
    rotated = CallbackTokens([NEW])
    with refused("token_invalid"):
        rotated.verify(old_token, "mesms")
    assert rotated.verify(new_token, "mesms").current_key


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: "x" + t,  # payload changed
        lambda t: t.split(".")[0],  # signature dropped
        lambda t: "",
        lambda t: t + "." * 600,  # far longer than any token we issue
        lambda t: "not a token at all",
    ],
)
def test_a_tampered_token_is_invalid(mangle: object) -> None:
    tokens = CallbackTokens([NEW])
    token, _ = tokens.issue("telecom23")
    with refused("token_invalid"):
        tokens.verify(mangle(token), "telecom23")  # type: ignore[operator]


def test_a_token_signed_with_the_same_key_but_another_salt_is_invalid() -> None:
    from itsdangerous import URLSafeSerializer

    forged = URLSafeSerializer(NEW, salt="something-else").dumps({"p": "telecom23", "k": "x"})
    with refused("token_invalid"):
        CallbackTokens([NEW]).verify(str(forged), "telecom23")


def test_without_a_key_nothing_verifies_and_nothing_is_issued() -> None:
    tokens = CallbackTokens([])
    assert not tokens.configured
    with refused("provider_not_configured"):
        tokens.verify("anything", "telecom23")
    with pytest.raises(ValueError, match="RECEIVER_SECRET_KEY"):
        tokens.issue("telecom23")


@pytest.mark.parametrize("label", ["", "has space", "x" * 65, "-leading", "é"])
def test_a_bad_label_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="label"):
        CallbackTokens([NEW]).issue("telecom23", label)


NETS = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize("client", ["203.0.113.9", "2001:db8::5", "::ffff:203.0.113.200"])
def test_an_allowed_address_passes(client: str) -> None:
    auth = SignedUrlAuth("telecom23", [NEW], NETS)
    token, _ = auth.tokens.issue("telecom23")
    assert auth.check(client, token).provider == "telecom23"


@pytest.mark.parametrize("client", ["198.51.100.1", "127.0.0.1", "::1", None, "", "junk"])
def test_any_other_address_is_refused(client: str | None) -> None:
    with refused("ip_not_allowed"):
        check_ip(client, NETS, "telecom23")


@pytest.mark.parametrize("client", ["198.51.100.1", "::1", None])
def test_no_allow_list_allows_everyone(client: str | None) -> None:
    auth = SignedUrlAuth("telecom23", [NEW], ())
    token, _ = auth.tokens.issue("telecom23")
    assert auth.check(client, token).provider == "telecom23"


def test_signed_url_auth_checks_the_address_before_the_token() -> None:
    auth = SignedUrlAuth("telecom23", [NEW], NETS)
    token, _ = auth.tokens.issue("telecom23")
    assert auth.check("203.0.113.1", token).provider == "telecom23"
    with refused("ip_not_allowed"):
        auth.check("198.51.100.1", token)


BODY = b'{"message_id":"api_1","status":"DELIVRD"}'


def _sig(secret: bytes, body: bytes = BODY) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "header", [f"sha256={_sig(b'one')}", _sig(b"one"), f"sha256={_sig(b'two').upper()}"]
)
def test_a_body_hmac_from_any_listed_secret_passes(header: str) -> None:
    """The header verifies this body, and only this body."""
    check_body_hmac(BODY, header, [b"one", b"two"], "X-Telecom23-Signature")  # no raise
    with refused("signature_invalid"):
        check_body_hmac(BODY + b" ", header, [b"one", b"two"], "X-Telecom23-Signature")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        (f"sha256={_sig(b'three')}", "signature_invalid"),
        (f"sha256={_sig(b'one', BODY + b' ')}", "signature_invalid"),
        ("sha256=é", "signature_invalid"),
    ],
)
def test_a_wrong_or_missing_body_hmac_is_refused(header: str | None, code: str) -> None:
    with refused(code):
        check_body_hmac(BODY, header, [b"one", b"two"], "X-Telecom23-Signature")
