"""The Standard Webhooks signature check, against the specification's published test vectors.

The vectors are those of the reference libraries (standard-webhooks/standard-webhooks,
libraries/*/tests): the secret, message id, payload and the expected signature of the "sign"
test, and the cases every library checks (missing headers, bad timestamp, tolerance both ways,
several signatures, with and without the whsec_ prefix).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from receiver.providers.standard_signature import SignatureError, decode_secret, sign, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
PAYLOAD = b'{"test": 2432232314}'
SIGN_TIMESTAMP = 1614265330
SIGN_EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The spec's "invalid signature" case: the expected one with its last character changed.
INVALID = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
TOLERANCE = 300
NOW = 1_800_000_000


def key() -> bytes:
    return decode_secret(SECRET)


def check(
    *,
    msg_id: str | None = MSG_ID,
    timestamp: str | None = str(SIGN_TIMESTAMP),
    signature: str | None = SIGN_EXPECTED,
    body: bytes = PAYLOAD,
    now: float = SIGN_TIMESTAMP,
    keys: list[bytes] | None = None,
) -> int:
    return verify(keys or [key()], msg_id, timestamp, signature, body, now=now, tolerance=TOLERANCE)


def test_the_spec_sign_vector() -> None:
    assert sign(key(), MSG_ID, SIGN_TIMESTAMP, PAYLOAD) == SIGN_EXPECTED


def test_the_spec_sign_vector_verifies() -> None:
    assert check() == SIGN_TIMESTAMP


def test_the_secret_works_with_and_without_its_prefix() -> None:
    assert decode_secret(SECRET) == decode_secret(SECRET.removeprefix("whsec_"))
    assert decode_secret(SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_the_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    """Computed here from the definition, independently of sign()."""
    content = f"{MSG_ID}.{SIGN_TIMESTAMP}.".encode() + PAYLOAD
    digest = hmac.new(key(), content, hashlib.sha256).digest()
    assert "v1," + base64.b64encode(digest).decode() == SIGN_EXPECTED


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ({"msg_id": None}, "signature_missing"),
        ({"timestamp": None}, "signature_missing"),
        ({"signature": None}, "signature_missing"),
        ({"timestamp": "hello"}, "timestamp_invalid"),
        ({"timestamp": "-1614265330"}, "timestamp_invalid"),
        ({"signature": INVALID}, "signature_invalid"),
        ({"signature": "v2," + SIGN_EXPECTED[3:]}, "signature_invalid"),  # unknown version
        ({"signature": SIGN_EXPECTED[3:]}, "signature_invalid"),  # no version at all
        ({"body": PAYLOAD + b" "}, "signature_invalid"),
        ({"msg_id": MSG_ID + "x"}, "signature_invalid"),
        ({"keys": [b"another key of enough length"]}, "signature_invalid"),
    ],
)
def test_the_spec_failure_cases(case: dict[str, object], code: str) -> None:
    with pytest.raises(SignatureError) as info:
        check(**case)  # type: ignore[arg-type]
    assert info.value.error_code == code


@pytest.mark.parametrize("offset", [-(TOLERANCE + 1), TOLERANCE + 1, -86_400, 10**6])
def test_a_timestamp_outside_the_tolerance_fails_either_way(offset: int) -> None:
    timestamp = NOW + offset
    signature = sign(key(), MSG_ID, timestamp, PAYLOAD)
    with pytest.raises(SignatureError) as info:
        check(timestamp=str(timestamp), signature=signature, now=NOW)
    assert info.value.error_code == "timestamp_out_of_tolerance"


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_a_timestamp_inside_the_tolerance_passes(offset: int) -> None:
    timestamp = NOW + offset
    signature = sign(key(), MSG_ID, timestamp, PAYLOAD)
    assert check(timestamp=str(timestamp), signature=signature, now=NOW) == timestamp


def test_one_valid_signature_among_several_is_enough() -> None:
    """The spec's multi-signature case: the valid one among others of other keys/versions."""
    header = " ".join(
        [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            SIGN_EXPECTED,
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        ]
    )
    assert check(signature=header) == SIGN_TIMESTAMP


def test_any_of_several_secrets_verifies_during_rotation() -> None:
    assert check(keys=[b"the new secret, 32 bytes long...", key()]) == SIGN_TIMESTAMP


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_c2hvcnQ=", ""])
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        decode_secret(secret)
