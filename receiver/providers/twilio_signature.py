"""Verification of Twilio's ``X-Twilio-Signature`` webhook header.

Pure functions, standard library only. Accepts exactly what twilio-python's
``RequestValidator`` (twilio/request_validator.py) accepts, minus its crashes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import ParseResult, parse_qs, urlparse

__all__ = [
    "BODY_HASH_PARAM",
    "body_hash_param",
    "compute_body_hash",
    "compute_signature",
    "url_variants",
    "validate",
]

BODY_HASH_PARAM = "bodySHA256"
"""Query parameter Twilio adds to the URL when the body is not form-encoded (e.g. JSON)."""


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (e.g. from a surrogateescape decode) must not raise;
    # for every well-formed str this is plain UTF-8, as Twilio uses.
    return text.encode("utf-8", "surrogatepass")


def _equal(a: str, b: str) -> bool:
    # compare_digest rejects non-ASCII str, so compare the encoded bytes instead.
    return hmac.compare_digest(_utf8(a), _utf8(b))


def _values(params: Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    # Multi-dicts (starlette FormData, Django QueryDict, multidict) return one value from
    # __getitem__; ask them for all of them, like the SDK does.
    getter = getattr(params, "getall", None) or getattr(params, "getlist", None)
    values: Sequence[str] = getter(name) if callable(getter) else params[name]
    # A bare str is a Sequence[str] too; iterating it would sign its characters.
    return (values,) if isinstance(values, str) else values


def _params_text(params: Mapping[str, Sequence[str]] | None) -> str:
    # Names sorted; each name's values de-duplicated, then sorted (code-point order).
    if not params:
        return ""
    # A plain dict of lists (parse_form's, on every callback) is read directly: asking each
    # name for getall/getlist first cost more than the signing.
    plain = type(params) is dict
    parts: list[str] = []
    for name in sorted(params):
        values = params[name] if plain else None
        if type(values) is not list:
            values = _values(params, name)
        if len(values) == 1:
            parts.append(name + values[0])
        else:
            parts.extend(name + value for value in sorted(set(values)))
    return "".join(parts)


def _sign(text: str, token: str) -> str:
    # Not the one-shot hmac.digest(): as fast alone, but on the busy server it took three
    # times hmac.new's share of the event loop (py-spy over bench/inproc.py).
    digest = hmac.new(_utf8(token), _utf8(text), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def compute_signature(url: str, params: Mapping[str, Sequence[str]] | None, token: str) -> str:
    """base64(HMAC-SHA1(token, url + name+value for every param)), as Twilio signs.

    Names are sorted; each name's values are de-duplicated, then sorted (code-point
    order), so ``a=2&a=1&a=1`` signs like ``a=1&a=2``. The url is used verbatim:
    the port and normalisation variants are :func:`validate`'s business.
    """
    return _sign(url + _params_text(params), token)


def compute_body_hash(body: bytes) -> str:
    """Lower-case hex SHA-256 of the raw body: the value Twilio puts in ``bodySHA256``."""
    return hashlib.sha256(body).hexdigest()


def _parse(url: str) -> ParseResult | None:
    try:
        return urlparse(url)
    except ValueError:  # e.g. an unclosed "[" IPv6 literal
        return None


# The URL is the same for nearly every callback: parse it once, not per request (bounded, as
# the query string is the caller's).
@functools.lru_cache(maxsize=256)
def url_variants(url: str) -> tuple[str, ...]:
    """The URL without and with its port, as the SDK tries them (Twilio is inconsistent).

    Like the SDK: both forms are rebuilt by urllib (scheme lower-cased, an empty ``?``,
    ``#`` or ``;`` dropped), an explicit port of any value is stripped, and a missing port
    becomes 443 for https and 80 for any other scheme. Unlike the SDK, stripping keeps
    userinfo and IPv6 brackets intact and ``:0`` counts as a port. A URL urllib cannot
    parse, or whose port is not a number in 0-65535, is only tried verbatim.
    """
    parsed = _parse(url)
    if parsed is None:
        return (url,)
    try:
        port = parsed.port
    except ValueError:
        return (url,)
    if port is None:
        default_port = 443 if parsed.scheme == "https" else 80
        without_port = parsed.geturl()
        with_port = parsed._replace(netloc=f"{parsed.netloc}:{default_port}").geturl()
    else:
        # A valid port means the netloc ends in ":<digits>", so cut at the last colon.
        without_port = parsed._replace(netloc=parsed.netloc.rpartition(":")[0]).geturl()
        with_port = parsed.geturl()
    return tuple(dict.fromkeys((without_port, with_port)))


@functools.lru_cache(maxsize=256)
def _forms_to_try(url: str) -> tuple[str, ...]:
    """url_variants, the URL as called first: Twilio signs the URL it was given, so that form
    nearly always matches and the other need not be signed."""
    return tuple(sorted(url_variants(url), key=lambda form: form != url))


@functools.lru_cache(maxsize=256)
def body_hash_param(url: str) -> str | None:
    """The URL's ``bodySHA256`` value (the JSON variant), or None."""
    parsed = _parse(url)
    if parsed is None:
        return None
    # parse_qs as the SDK does: percent-decoded, blank values ignored, first value wins.
    values = parse_qs(parsed.query).get(BODY_HASH_PARAM)
    return values[0] if values else None


def validate(
    url: str,
    params: Mapping[str, Sequence[str]] | None,
    body: bytes | None,
    signature: str | None,
    tokens: Sequence[str],
) -> bool:
    """True if ``signature`` is valid for this request under any token in ``tokens``.

    ``url`` is the full URL Twilio requested, query string included. ``params`` are the
    form fields (name -> every value, in arrival order); None for GET or a JSON body.
    ``body`` is the raw body; it is checked only when the URL carries ``bodySHA256``:
    then its SHA-256 must match and the signature covers the URL alone, so ``params``
    are ignored (trust them only if they were parsed from this body). A non-empty body
    with ``params=None`` and no ``bodySHA256`` is rejected: nothing would vouch for it.
    Empty tokens are skipped (anyone can sign with an empty key). Never raises.
    """
    keys = [token for token in ((tokens,) if isinstance(tokens, str) else tokens) if token]
    if not signature or not keys:
        return False

    signed_params = params
    body_ok = True
    expected_hash = body_hash_param(url) if body is not None else None
    if body is not None and expected_hash is not None:
        body_ok = _equal(compute_body_hash(body), expected_hash)
        signed_params = None
    elif body and params is None:
        return False

    # Every token is checked against a URL form without stopping at a match: timing says
    # nothing about which token matched. The next form is tried only if none did: which
    # form Twilio signed is no secret, and a forgery is still checked against them all.
    suffix = _params_text(signed_params)
    matched = False
    for candidate in _forms_to_try(url):
        for token in keys:
            matched |= _equal(_sign(candidate + suffix, token), signature)
        if matched:
            break
    return body_ok and matched
