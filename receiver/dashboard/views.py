"""The dashboard's pages: the overview of a window, a message search, a message with its
timeline, and the login form. Server-rendered (Jinja2, autoescaped), no JavaScript."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.api.errors import ApiError
from receiver.dashboard import access, charts, figures
from receiver.dashboard.meanings import meaning
from receiver.engine import RANK, Status, format_time
from receiver.settings import Settings
from receiver.store import MessageFilter, Store
from receiver.store.dashboard import FAILED_STATUSES
from receiver.version import __version__

HERE = Path(__file__).parent
MAX_FORM = 4096
MAX_QUERY = 256  # an id or a number (the API's longest id)
RECENT = 10
FAILED_PUSHES_COUNTED = 100  # the failed pushes counted on the page, at most
# Bottom to top in the stacked bar: the good news first.
STACK_ORDER = sorted((s.value for s in Status), key=lambda s: (-RANK[Status(s)], s))
SECURITY_HEADERS = {
    # Nothing runs on these pages: no script at all, styles and images from here only.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def message_path(provider: str, message_id: str) -> str:
    """A message page's path; the id keeps its "/" (the route takes the rest of the path)."""
    return f"/dashboard/messages/{quote(provider, safe='')}/{quote(message_id, safe='/')}"


class Dashboard:
    """The pages of one app, with its cookie keys and templates."""

    def __init__(self, settings: Settings) -> None:
        self.keys = access.Keys(settings)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            message_path=message_path,
            rate=figures.rate,
            seconds=figures.seconds,
            colour=charts.colour,
            version=__version__,
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dashboard", self.overview, methods=["GET"]),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/search", self.search, methods=["GET"]),
            Route(
                "/dashboard/messages/{provider}/{message_id:path}", self.message, methods=["GET"]
            ),
            Mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- rendering -----------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        settings: Settings = request.state.settings
        csrf = access.csrf_token(request, self.keys)
        html = self.env.get_template(template).render(
            request=request,
            csrf=csrf,
            logged_in=settings.api_token is not None and access.valid_session(request, self.keys),
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        access.set_csrf(request, response, csrf)
        return response

    def error(self, request: Request, exc: ApiError) -> HTMLResponse:
        return self.render(
            request, "error.html", status=exc.status, code=exc.error_code, message=exc.message
        )

    async def _allowed(self, request: Request) -> Response | None:
        """None when the caller may go on; else the answer to give (a login, a refusal)."""
        try:
            if access.check_access(request, self.keys):
                return None
        except ApiError as exc:
            return self.error(request, exc)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/dashboard/login?" + urlencode({"next": target}), status_code=303)

    # -- pages ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        if (refused := await self._allowed(request)) is not None:
            return refused
        try:
            window, provider = self._choice(request)
        except ApiError as exc:
            return self.error(request, exc)
        store: Store = request.state.store
        now = datetime.now(UTC)
        since = figures.window_start(window, now)
        kept = await store.dashboard_window(since, provider, window.chart_chars)
        summary = figures.stats(kept)
        failed = await store.dashboard_recent(FAILED_STATUSES, since, provider, RECENT)
        unconfirmed = await store.dashboard_recent(("unconfirmed",), since, provider, RECENT)
        queue = await store.dashboard_queue(format_time(now))
        bars = figures.over_time(kept, figures.chart_buckets(window, since, now))
        errors = {
            p: [(code, n, meaning(p, code)) for code, n in codes]
            for p, codes in figures.top_errors(kept).items()
        }
        return self.render(
            request,
            "overview.html",
            window=window,
            windows=figures.WINDOWS,
            provider=provider,
            providers=request.state.provider_names,
            since=since,
            now=format_time(now),
            stats=summary,
            statuses=[s for s in STACK_ORDER if summary["by_status"].get(s)],
            final_via=kept.final_via,
            chart=charts.stacked_bars(bars, STACK_ORDER),
            bars=bars,
            histogram=figures.histogram(kept.final_bins),
            histogram_chart=charts.histogram(figures.histogram(kept.final_bins)),
            errors=errors,
            failed=failed,
            unconfirmed=unconfirmed,
            queue=queue,
            pollers=self._pollers(request),
            pushes=await self._pushes(request, now),
            link=partial(self._link, {"window": window.name, "provider": provider}),
        )

    def _choice(self, request: Request) -> tuple[figures.Window, str | None]:
        params = request.query_params
        name = params.get("window", figures.DEFAULT_WINDOW)
        window = figures.WINDOWS.get(name)
        if window is None:
            raise ApiError(
                400,
                "invalid_parameter",
                f"window must be one of {', '.join(figures.WINDOWS)}",
                parameter="window",
            )
        provider = params.get("provider") or None
        names: list[str] = request.state.provider_names
        if provider is not None and provider not in names:
            raise ApiError(
                400,
                "invalid_parameter",
                f"unknown provider; one of {', '.join(names)}",
                parameter="provider",
            )
        return window, provider

    @staticmethod
    def _link(chosen: dict[str, str | None], **change: str | None) -> str:
        params = {**chosen, **change}
        return "/dashboard?" + urlencode({k: v for k, v in params.items() if v})

    @staticmethod
    async def _pushes(request: Request, now: datetime) -> dict[str, Any] | None:
        """The push outbox's state; None when pushes are off (no RECEIVER_PUSH_URL)."""
        settings: Settings = request.state.settings
        if not settings.push_url:
            return None
        # The outbox's reads are the stores' own, not the Store protocol's (as in receiver.api).
        store: Any = request.state.store
        stats = await store.push_stats()
        found, more = await store.list_pushes(
            status="failed", since=None, before_id=None, limit=FAILED_PUSHES_COUNTED
        )
        failed = f"{len(found)} or more" if more is not None else str(len(found))
        return figures.push_figures(stats, settings.push_url, failed, now)

    @staticmethod
    def _pollers(request: Request) -> list[dict[str, Any]]:
        """What the scheduler knows of each provider's polling (none when polling is off)."""
        poller = request.state.poller
        if poller is None:
            return []
        found = []
        for name, p in poller.pollers.items():
            status = p.status
            found.append(
                {
                    "provider": name,
                    "state": status.state if p.client is not None else "not_polled",
                    "detail": status.detail,
                    "last_error": status.last_error,
                    "failures": status.failures,
                }
            )
        return found

    async def search(self, request: Request) -> Response:
        if (refused := await self._allowed(request)) is not None:
            return refused
        query = (request.query_params.get("q") or "").strip()
        if not query:
            return RedirectResponse("/dashboard", status_code=303)
        if len(query) > MAX_QUERY:
            return self.error(
                request,
                ApiError(400, "invalid_parameter", f"search for at most {MAX_QUERY} characters"),
            )
        store: Store = request.state.store
        found = await store.get_messages(query)
        numbered, _ = await store.list_messages(MessageFilter(to_number=query, limit=50))
        seen = {(m["provider"], m["message_id"]) for m in found}
        found += [m for m in numbered if (m["provider"], m["message_id"]) not in seen]
        if len(found) == 1:
            only = found[0]
            return RedirectResponse(
                message_path(only["provider"], only["message_id"]), status_code=303
            )
        return self.render(request, "search.html", query=query, found=found)

    async def message(self, request: Request) -> Response:
        if (refused := await self._allowed(request)) is not None:
            return refused
        provider = request.path_params["provider"]
        message_id = request.path_params["message_id"]
        store: Store = request.state.store
        found = await store.get_messages(message_id, provider)
        if not found:
            return self.error(
                request,
                ApiError(404, "message_not_found", f"no {provider} message with this id"),
            )
        events = await store.get_events(provider, message_id)
        return self.render(request, "message.html", message=found[0], events=events)

    # -- login ---------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", next=_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _next(form.get("next"))
        try:
            access.check_csrf(request, self.keys, form.get("csrf"))
        except ApiError as exc:
            return self.error(request, exc)
        settings: Settings = request.state.settings
        if settings.api_token is None:
            return RedirectResponse(target, status_code=303)  # nothing to log in to
        if not access.token_matches(self.keys, form.get("token", "")):
            return self.render(
                request, "login.html", status=401, next=target, failed="this token is not valid"
            )
        response = RedirectResponse(target, status_code=303)
        access.open_session(request, response, self.keys)
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        try:
            access.check_csrf(request, self.keys, form.get("csrf"))
        except ApiError as exc:
            return self.error(request, exc)
        response = RedirectResponse("/dashboard/login", status_code=303)
        access.close_session(request, response)
        return response


def _next(value: str | None) -> str:
    """Where to go after logging in: a dashboard page only (never another site)."""
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return "/dashboard"


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the first value of each)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items()}
