"""Tests for receiver.providers.twilio_signature: Twilio's published vectors, parity with
the twilio SDK's RequestValidator (a test-only dependency), and rejection of bad requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

import pytest
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator, add_port, remove_port

from receiver.providers.twilio_signature import (
    compute_body_hash,
    compute_signature,
    url_variants,
    validate,
)

Params = Mapping[str, Sequence[str]]

# --- Published vectors ------------------------------------------------------------------
# PY  = twilio/twilio-python tests/unit/test_request_validator.py
# NODE = twilio/twilio-node spec/validation.spec.js
# DOCS = the worked example on https://www.twilio.com/docs/usage/security
# SNIPPET = TwilioDevEd/api-snippets security/signature_validation/signature_validation.py
#           (the Python sample shown on that docs page)

TOKEN = "12345"  # PY, NODE, DOCS, SNIPPET
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"  # PY, NODE, DOCS, SNIPPET
HTTP_URL = URL.replace("https", "http")
PARAMS: Params = {  # PY, NODE, SNIPPET
    "CallSid": ["CA1234567890ABCDE"],
    "Caller": ["+14158675309"],
    "Digits": ["1234"],
    "From": ["+14158675309"],
    "To": ["+18005551212"],
}
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="  # PY, NODE, SNIPPET
DOCS_PARAMS: Params = {**PARAMS, "Caller": ["+14158675310"], "From": ["+14158675310"]}  # DOCS
DOCS_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="  # DOCS
# PY test_compute_signature_duplicate_*; NODE "multiple params and values"
DUPLICATE_PARAMS: Params = {
    "Sid": ["CA123"],
    "SidAccount": ["AC123"],
    "Digits": ["5678", "1234", "1234"],
}
DUPLICATE_SIGNATURE = "IK+Dwps556ElfBT0I3Rgjkr1wJU="
ARRAY_SIGNATURE = "83O6e2vORAoJHUNzJjDWN1jz+BA="  # NODE "array parameter"
JSON_BODY = b'{"property": "value", "boolean": true}'  # PY, NODE
JSON_BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"  # PY, NODE
JSON_URL = f"{URL}&bodySHA256={JSON_BODY_HASH}"  # PY, NODE
JSON_SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="  # PY, NODE
EMPTY_JSON_HASH = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # NODE


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        pytest.param(URL, PARAMS, SIGNATURE, id="py-form-params"),
        pytest.param(URL, DUPLICATE_PARAMS, DUPLICATE_SIGNATURE, id="py-repeated-key"),
        pytest.param(URL, DOCS_PARAMS, DOCS_SIGNATURE, id="docs-worked-example"),
        pytest.param(JSON_URL, None, JSON_SIGNATURE, id="py-json-url-alone"),
    ],
)
def test_compute_signature_matches_published_vectors(
    url: str, params: Params | None, expected: str
) -> None:
    assert compute_signature(url, params, TOKEN) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(JSON_BODY, JSON_BODY_HASH, id="py-json-body"),
        pytest.param(b"{}", EMPTY_JSON_HASH, id="node-empty-object"),
    ],
)
def test_compute_body_hash_matches_published_vectors(body: bytes, expected: str) -> None:
    assert compute_body_hash(body) == expected


@pytest.mark.parametrize(
    ("url", "params", "body", "signature"),
    [
        pytest.param(URL, PARAMS, None, SIGNATURE, id="py-form"),
        pytest.param(URL, DOCS_PARAMS, None, DOCS_SIGNATURE, id="docs-worked-example"),
        pytest.param(
            URL.replace(".com", ".com:1234"), PARAMS, None, SIGNATURE, id="py-https-port-stripped"
        ),
        pytest.param(
            HTTP_URL.replace(".com", ".com:1234"),
            PARAMS,
            None,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",  # signed with the :1234 kept
            id="py-http-port-kept",
        ),
        pytest.param(URL, PARAMS, None, "kvajT1Ptam85bY51eRf/AJRuM3w=", id="py-https-443-added"),
        pytest.param(HTTP_URL, PARAMS, None, "0ZXoZLH/DfblKGATFgpif+LLRf4=", id="py-http-80-added"),
        pytest.param(JSON_URL, None, JSON_BODY, JSON_SIGNATURE, id="py-json-body"),
        pytest.param(
            f"{URL}&bodySHA256={EMPTY_JSON_HASH}",
            None,
            b"{}",
            "Ldidvp12m26NI7eqEvxnEpkd9Hc=",
            id="node-empty-json-body",
        ),
        pytest.param(
            f"https://mycompany.com/myapp.php?bodySHA256={JSON_BODY_HASH}",
            None,
            JSON_BODY,
            "y77kIzt2vzLz71DgmJGsen2scGs=",
            id="node-only-body-hash-param",
        ),
        pytest.param(
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            PARAMS,
            None,
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
            id="node-credentials",
        ),
        pytest.param(
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
            PARAMS,
            None,
            "2YRLlVAflCqxaNicjMpJcSTgzSs=",
            id="node-username-only",
        ),
        pytest.param(
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            PARAMS,
            None,
            "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI=",  # signed with :443 added after the credentials
            id="node-credentials-443-added",
        ),
        pytest.param(
            URL,
            {"MessagingBinding.Address": ["+1325xxxxxxx", "+1415xxxxxxx"]},
            None,
            ARRAY_SIGNATURE,
            id="node-array-param",
        ),
        pytest.param(
            URL,
            {"MessagingBinding.Address": ["+1415xxxxxxx", "+1325xxxxxxx"]},
            None,
            ARRAY_SIGNATURE,
            id="node-array-param-reordered",
        ),
        pytest.param(URL, DUPLICATE_PARAMS, None, DUPLICATE_SIGNATURE, id="node-multiple-values"),
        pytest.param(
            # NODE "special characters": node's URL parser sends the ' as %27; the signed URL
            # is that encoded form, which is what arrives on the request line.
            f"{URL}&Body=It%27s+amazing",
            PARAMS,
            None,
            "TfZzewPq8wqrGlMfyAud8+/IvJ0=",
            id="node-special-characters-encoded",
        ),
    ],
)
def test_validate_accepts_published_vectors(
    url: str, params: Params | None, body: bytes | None, signature: str
) -> None:
    assert validate(url, params, body, signature, [TOKEN])


def test_unencoded_special_characters_are_not_re_encoded() -> None:
    """The URL is not normalised beyond ports: the raw ' form of NODE's vector fails, as in
    the Python SDK (node's extra "legacy querystring" retries are node-only)."""
    url = f"{URL}&Body=It's+amazing"
    signature = "TfZzewPq8wqrGlMfyAud8+/IvJ0="
    assert not RequestValidator(TOKEN).validate(url, _sdk_params(PARAMS), signature)
    assert not validate(url, PARAMS, None, signature, [TOKEN])


# --- Twilio's algorithm, pinned -------------------------------------------------------


def test_repeated_values_are_deduplicated_and_sorted() -> None:
    """a=2&a=1&a=1 signs exactly like a=1&a=2 (Twilio collapses duplicates)."""
    assert compute_signature(URL, {"a": ["2", "1", "1"]}, TOKEN) == compute_signature(
        URL, {"a": ["1", "2"]}, TOKEN
    )


def test_names_sort_by_code_point_so_upper_case_first() -> None:
    expected = compute_signature(URL + "B2a1", None, TOKEN)
    assert compute_signature(URL, {"a": ["1"], "B": ["2"]}, TOKEN) == expected


def test_str_value_is_one_value_not_characters() -> None:
    assert compute_signature(URL, {"a": "xyz"}, TOKEN) == compute_signature(
        URL, {"a": ["xyz"]}, TOKEN
    )


def test_multidict_params_contribute_every_value() -> None:
    """starlette FormData returns the last value from [] but all from getlist()."""
    form = FormData(
        [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    )
    assert compute_signature(URL, form, TOKEN) == DUPLICATE_SIGNATURE  # type: ignore[arg-type]


def test_compute_signature_uses_url_verbatim() -> None:
    assert compute_signature("https://example.com/p?", None, TOKEN) != compute_signature(
        "https://example.com/p", None, TOKEN
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/p", ("https://example.com/p", "https://example.com:443/p")),
        ("http://example.com/p", ("http://example.com/p", "http://example.com:80/p")),
        ("https://example.com:443/p", ("https://example.com/p", "https://example.com:443/p")),
        ("https://example.com:8443/p", ("https://example.com/p", "https://example.com:8443/p")),
        ("HTTPS://example.com/p?", ("https://example.com/p", "https://example.com:443/p")),
        # Divergences from the SDK, which cuts the netloc at its first colon:
        (
            "https://u:pw@example.com:8443/p",
            ("https://u:pw@example.com/p", "https://u:pw@example.com:8443/p"),
        ),
        (
            "https://[2001:db8::1]:8443/p",
            ("https://[2001:db8::1]/p", "https://[2001:db8::1]:8443/p"),
        ),
        # ... and which treats :0 as no port at all.
        ("https://example.com:0/p", ("https://example.com/p", "https://example.com:0/p")),
        # Unparseable port or host: only the URL as given.
        ("https://example.com:99999/p", ("https://example.com:99999/p",)),
        ("https://example.com:abc/p", ("https://example.com:abc/p",)),
        ("https://[::1/p", ("https://[::1/p",)),
    ],
)
def test_url_variants(url: str, expected: tuple[str, ...]) -> None:
    assert url_variants(url) == expected


def test_body_hash_variant_signs_url_alone_ignoring_params() -> None:
    assert validate(JSON_URL, {"property": ["value"]}, JSON_BODY, JSON_SIGNATURE, [TOKEN])


def test_body_hash_param_without_body_falls_back_to_form_signing() -> None:
    """Like the SDK: with no body given, bodySHA256 is just part of the signed URL."""
    signature = compute_signature(JSON_URL, PARAMS, TOKEN)
    assert validate(JSON_URL, PARAMS, None, signature, [TOKEN])


def test_form_body_is_ignored_without_body_hash_param() -> None:
    assert validate(URL, PARAMS, b"CallSid=CA1234567890ABCDE&...", SIGNATURE, [TOKEN])


def test_get_request_signs_url_alone() -> None:
    url = "https://example.com/status?MessageSid=SM1&MessageStatus=delivered"
    assert validate(url, None, None, compute_signature(url, None, TOKEN), [TOKEN])
    assert validate(url, None, b"", compute_signature(url, None, TOKEN), [TOKEN])


# --- Parity with the twilio SDK ------------------------------------------------------


class _SdkParams(dict[str, list[str]]):
    """The QueryDict shape RequestValidator reads repeated keys from (via getlist)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def _sdk_params(params: Params | None) -> _SdkParams | None:
    return None if params is None else _SdkParams({k: list(v) for k, v in params.items()})


PARITY_URLS = [
    URL,
    "https://example.com",
    "https://example.com/",
    "https://example.com/twilio/status",
    "https://example.com:443/twilio/status?tenant=acme",
    "http://example.com/twilio/status",
    "http://example.com:80/twilio/status",
    "https://example.com:8443/cb?a=b&c=d",
    "http://localhost:8000/twilio/status",
    "https://EXAMPLE.com/Path/",
    "HTTPS://example.com/p",
    "https://example.com/p?",
    "https://example.com/p#frag",
    "https://example.com/a;b?c=d",
    "https://example.com/dlr/%C3%A9t%C3%A9?to=%2B15551234567",
    "https://example.com/ünïcode?q=é&emoji=😀",
    "https://user:pass@example.com/secure",
    "https://[2001:db8::1]/cb",
]

PARITY_PARAMS: list[Params | None] = [
    None,
    {},
    PARAMS,
    DUPLICATE_PARAMS,
    {"Body": ["héllo wörld", "日本語", "😀"], "From": ["+15551234567"]},
    {"Body": ["e\u0301"], "Bódy": ["\u00e9"]},  # no Unicode normalisation either way
    {"a": ["1"], "B": ["2"], "_": ["3"], "Ä": ["4"]},
    {"Sid": ["x"], "SidAccount": ["y"], "S": ["z"]},
    {"Body": ["a&b=c+d %20 ;#?"], "Empty": [""], "Dup": ["", "", "x"]},
    {"MessageStatus": ["delivered"], "ErrorCode": ["30003", "30003"]},
]

PARITY_TOKENS = ["12345", "0123456789abcdef0123456789abcdef", "tökén"]


@pytest.mark.parametrize("params", PARITY_PARAMS)
@pytest.mark.parametrize("url", PARITY_URLS)
def test_compute_signature_equals_sdk(url: str, params: Params | None) -> None:
    for token in PARITY_TOKENS:
        expected = RequestValidator(token).compute_signature(url, _sdk_params(params))
        assert compute_signature(url, params, token) == expected


@pytest.mark.parametrize("url", PARITY_URLS)
def test_url_variants_equal_sdk_port_handling(url: str) -> None:
    parsed = urlparse(url)
    assert set(url_variants(url)) == {remove_port(parsed), add_port(parsed)}


@pytest.mark.parametrize("params", PARITY_PARAMS)
@pytest.mark.parametrize("url", PARITY_URLS)
def test_validate_agrees_with_sdk(url: str, params: Params | None) -> None:
    """Signatures over each URL form, and forgeries, get the same verdict from both."""
    sdk = RequestValidator(TOKEN)
    parsed = urlparse(url)
    candidates = {
        sdk.compute_signature(form, _sdk_params(params))
        for form in (url, remove_port(parsed), add_port(parsed), url + "x")
    }
    candidates.add(RequestValidator("54321").compute_signature(url, _sdk_params(params)))
    for signature in candidates:
        expected = sdk.validate(url, _sdk_params(params), signature)
        assert validate(url, params, None, signature, [TOKEN]) is expected, signature


JSON_BODIES = [JSON_BODY, b"{}", b"", '{"msg": "héllo 😀"}'.encode(), b"[1, 2, 3]\n"]


@pytest.mark.parametrize("body", JSON_BODIES)
@pytest.mark.parametrize(
    "base", ["https://example.com/events?", "https://example.com:443/events?x=1&", URL + "&"]
)
def test_json_body_validation_agrees_with_sdk(base: str, body: bytes) -> None:
    sdk = RequestValidator(TOKEN)
    url = f"{base}bodySHA256={compute_body_hash(body)}"
    for form in url_variants(url):
        signature = sdk.compute_signature(form, {})
        assert sdk.validate(url, body.decode(), signature)
        assert validate(url, None, body, signature, [TOKEN])
        tampered = body + b" "
        assert not sdk.validate(url, tampered.decode(), signature)
        assert not validate(url, None, tampered, signature, [TOKEN])


@pytest.mark.parametrize("params", PARITY_PARAMS[2:])
def test_sdk_accepts_our_signatures(params: Params) -> None:
    for url in PARITY_URLS:
        for form in url_variants(url):
            signature = compute_signature(form, params, TOKEN)
            assert RequestValidator(TOKEN).validate(url, _sdk_params(params), signature)


# --- Rejections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "body"),
    [
        pytest.param(URL, {**PARAMS, "Digits": ["9999"]}, None, id="tampered-value"),
        pytest.param(URL, {**PARAMS, "Extra": ["1"]}, None, id="added-param"),
        pytest.param(URL, {k: v for k, v in PARAMS.items() if k != "To"}, None, id="removed-param"),
        pytest.param(URL, {**PARAMS, "Digits": ["1234", "5678"]}, None, id="added-value"),
        pytest.param(URL, {**PARAMS, "digits": PARAMS["Digits"]}, None, id="renamed-param"),
        pytest.param(URL.replace("foo=1", "foo=2"), PARAMS, None, id="tampered-query"),
        pytest.param(URL.replace("myapp", "other"), PARAMS, None, id="other-path"),
        pytest.param(URL.replace("https", "http"), PARAMS, None, id="other-scheme"),
        pytest.param(URL + "/", PARAMS, None, id="trailing-slash"),
        pytest.param(URL, None, None, id="params-dropped"),
    ],
)
def test_rejects_tampered_form_request(url: str, params: Params | None, body: bytes | None) -> None:
    assert not validate(url, params, body, SIGNATURE, [TOKEN])


@pytest.mark.parametrize(
    ("url", "body"),
    [
        pytest.param(JSON_URL, JSON_BODY.replace(b"true", b"false"), id="tampered-body"),
        pytest.param(JSON_URL, JSON_BODY + b"\n", id="appended-newline"),
        pytest.param(JSON_URL, b"", id="empty-body"),
        pytest.param(
            JSON_URL.replace(JSON_BODY_HASH, JSON_BODY_HASH.upper()), JSON_BODY, id="upper-hex"
        ),
        pytest.param(URL, JSON_BODY, id="body-without-hash-param"),
        pytest.param(f"{URL}&bodySHA256=", JSON_BODY, id="blank-hash-param"),
    ],
)
def test_rejects_body_not_covered_by_signature(url: str, body: bytes) -> None:
    assert not validate(url, None, body, JSON_SIGNATURE, [TOKEN])


@pytest.mark.parametrize("url", [URL, f"{URL}&bodySHA256="])
def test_rejects_unhashed_body_even_with_valid_url_signature(url: str) -> None:
    """A signature over the bare URL (a GET, a param-less POST) must not vouch for a body
    that no bodySHA256 covers; the SDK raises TypeError here."""
    signature = compute_signature(url, None, TOKEN)
    assert validate(url, None, None, signature, [TOKEN])
    assert not validate(url, None, JSON_BODY, signature, [TOKEN])


def test_rejects_body_hash_swapped_for_the_tampered_bodys_hash() -> None:
    """Rewriting bodySHA256 to match a forged body breaks the URL signature instead."""
    forged = b'{"property": "evil"}'
    url = JSON_URL.replace(JSON_BODY_HASH, compute_body_hash(forged))
    assert not validate(url, None, forged, JSON_SIGNATURE, [TOKEN])


@pytest.mark.parametrize("tokens", [["54321"], ["1234"], ["123456"], [" 12345"], ["12345\n"]])
def test_rejects_wrong_token(tokens: list[str]) -> None:
    assert not validate(URL, PARAMS, None, SIGNATURE, tokens)


@pytest.mark.parametrize("tokens", [[], (), [""], ["", ""], ""])
def test_rejects_without_usable_token(tokens: Sequence[str]) -> None:
    """An empty token is skipped: anyone could sign with an empty HMAC key."""
    assert not validate(URL, PARAMS, None, compute_signature(URL, PARAMS, ""), tokens)


@pytest.mark.parametrize("tokens", [["old", TOKEN], [TOKEN, "new"], ["", TOKEN], (TOKEN,), TOKEN])
def test_accepts_any_configured_token(tokens: Sequence[str]) -> None:
    """Primary or secondary token (during rotation); a bare str is one token."""
    assert validate(URL, PARAMS, None, SIGNATURE, tokens)


@pytest.mark.parametrize(
    "url", ["https://example.com/cb", "https://example.com:443/cb", "http://localhost:8000/cb"]
)
@pytest.mark.parametrize("tokens", [[TOKEN, "other"], ["other", TOKEN]])
def test_accepts_every_url_form_under_every_token(url: str, tokens: list[str]) -> None:
    """The form as called is signed first and the others only when it fails: a signature over
    any form, by any token, is accepted, and one by no token over no form is refused."""
    for form in url_variants(url):
        assert validate(url, PARAMS, None, compute_signature(form, PARAMS, TOKEN), tokens)
        assert not validate(url, PARAMS, None, compute_signature(form, PARAMS, "54321"), tokens)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        " ",
        SIGNATURE.lower(),
        SIGNATURE[:-1],
        SIGNATURE + "=",
        f" {SIGNATURE}",
        f"{SIGNATURE}\n",
        SIGNATURE.rstrip("="),
        "not base64 at all!",
        "=" * 28,
        "é" * 28,
        "\x00" * 28,
        "\udcff" * 28,
        "A" * 10_000,
        DOCS_SIGNATURE,
    ],
)
def test_rejects_missing_or_garbage_signature(signature: str | None) -> None:
    assert validate(URL, PARAMS, None, signature, [TOKEN]) is False


ODD_URLS = [
    "",
    "not a url",
    "/relative/path?x=1",
    "https://[::1",
    "https://example.com:99999/p",
    "https://example.com:-1/p",
    "https://example.com:/p",
    "https://\uff03evil.example/p",  # urllib rejects NFKC-unsafe hosts
    "https://example.com/\udcff?bodySHA256=\udcff",
    "https://example.com/p?bodySHA256=%ZZ&bodySHA256=x",
    "mailto:someone@example.com",
    "https://exa mple.com/p\t\n",
]


@pytest.mark.parametrize("url", ODD_URLS)
def test_odd_input_never_raises(url: str) -> None:
    odd_params: Params = {"\udcff": ["\ud800"], "Body": ["\x00é😀"]}
    for params in (None, PARAMS, odd_params):
        for body in (None, b"", b"\xff\xfe", JSON_BODY):
            for signature in (SIGNATURE, "\udcff", "é"):
                assert validate(url, params, body, signature, [TOKEN, "tökén"]) in (True, False)
    assert compute_signature(url, odd_params, "\ud800")


def test_odd_url_is_still_checked_verbatim() -> None:
    """A URL urllib cannot parse is not rejected outright: its exact form may still be signed."""
    url = "https://example.com:99999/p"
    assert validate(url, PARAMS, None, compute_signature(url, PARAMS, TOKEN), [TOKEN])
