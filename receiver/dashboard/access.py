"""Who may see the dashboard: the query API's rule (receiver.api.auth). A browser cannot send
the bearer token, so the login form takes it once and sets a signed session cookie
(HttpOnly, SameSite=Strict); every form that changes something carries a CSRF token.

The cookies are signed with RECEIVER_SECRET_KEY (and its fallbacks) when set, else with the
API token itself. A session names a digest of the token it was opened with, so changing
RECEIVER_API_TOKEN ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from receiver.api.auth import require_api_access
from receiver.api.errors import ApiError
from receiver.settings import Settings

SESSION_COOKIE = "receiver_dashboard"
CSRF_COOKIE = "receiver_dashboard_csrf"
SESSION_MAX_AGE = 12 * 3600  # a working day; then the token again
CSRF_MAX_AGE = 24 * 3600
COOKIE_PATH = "/dashboard"


class Keys:
    """The signers of one app's cookies."""

    def __init__(self, settings: Settings) -> None:
        # Without any configured key (no token, no secret key) only the CSRF cookie is signed:
        # a key of this process's own does, since nothing needs it to outlive a restart.
        keys = [*settings.secret_keys(), settings.api_token or secrets.token_urlsafe(32)]
        # itsdangerous signs with the last key and accepts every one.
        keys.reverse()
        self.session = URLSafeTimedSerializer(keys, salt="receiver-dashboard-session")
        self.csrf = URLSafeTimedSerializer(keys, salt="receiver-dashboard-csrf")
        self.token = settings.api_token

    def token_digest(self) -> str:
        return hashlib.sha256(f"receiver-dashboard:{self.token}".encode()).hexdigest()[:32]


def check_access(request: Request, keys: Keys) -> bool:
    """True when the caller may see the dashboard; False when a login would let them.

    Raises ApiError 403 (loopback_only) as the API does when no token is set and the caller is
    not on this host."""
    settings: Settings = request.state.settings
    if settings.api_token is None:
        require_api_access(request)
        return True
    if "authorization" in request.headers:
        require_api_access(request)  # a bearer token, as the API takes it: 401 when wrong
        return True
    return valid_session(request, keys)


def valid_session(request: Request, keys: Keys) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or keys.token is None:
        return False
    try:
        opened = keys.session.loads(cookie, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return False
    digest = opened.get("token") if isinstance(opened, dict) else None
    return isinstance(digest, str) and hmac.compare_digest(digest, keys.token_digest())


def token_matches(keys: Keys, given: str) -> bool:
    expected = keys.token
    return expected is not None and hmac.compare_digest(given.strip().encode(), expected.encode())


def _secure(request: Request) -> bool:
    settings: Settings = request.state.settings
    return request.url.scheme == "https" or (settings.public_url or "").startswith("https:")


def open_session(request: Request, response: Response, keys: Keys) -> None:
    value = keys.session.dumps({"token": keys.token_digest()})
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def close_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


def csrf_token(request: Request, keys: Keys) -> str:
    """The page's CSRF token: the cookie's when it is valid, else a new one (set_csrf sends
    it). A form posts it back; the cookie and the field must match (double submit), and a
    SameSite=Strict cookie never comes with another site's request."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and _valid_csrf(keys, current):
        return current
    token: str = keys.csrf.dumps(secrets.token_urlsafe(16))
    return token


def set_csrf(request: Request, response: Response, token: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            max_age=CSRF_MAX_AGE,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )


def _valid_csrf(keys: Keys, token: str) -> bool:
    try:
        keys.csrf.loads(token, max_age=CSRF_MAX_AGE)
    except BadSignature:
        return False
    return True


def check_csrf(request: Request, keys: Keys, field: str | None) -> None:
    """Raise ApiError 403 (csrf_failed) unless the form's token matches the cookie's, and the
    request, when it says where it comes from, comes from this site."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        settings: Settings = request.state.settings
        allowed = {own, (settings.public_url or "").rstrip("/")}
        if origin.rstrip("/") not in allowed:
            raise ApiError(403, "csrf_failed", "this form was sent from another site")
    cookie = request.cookies.get(CSRF_COOKIE)
    if (
        not cookie
        or not field
        or not hmac.compare_digest(cookie.encode(), field.encode())
        or not _valid_csrf(keys, cookie)
    ):
        raise ApiError(
            403, "csrf_failed", "the form is out of date or came from elsewhere: reload the page"
        )
