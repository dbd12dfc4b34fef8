"""A JSON answer, encoded with the declarations' encoder (receiver.schemas.encode): the same
compact UTF-8 JSON as Starlette's JSONResponse, several times faster for a page of messages.
And plain_asgi, for a read route that takes much of the traffic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from receiver.schemas import encode


def answer(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        encode(content), status_code=status_code, headers=headers, media_type="application/json"
    )


Handler = Callable[[Request], Awaitable[Response]]


class PlainEndpoint:
    """A request-response handler as a plain ASGI app (see plain_asgi)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.__name__ = handler.__name__  # the route's name, as for a function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def plain_asgi(handler: Handler) -> PlainEndpoint:
    """`handler` as an endpoint Starlette calls as an ASGI app (it does so with any endpoint
    that is not a function), as receiver.api.webhooks.Endpoint is: a function endpoint gets a
    second layer of exception handling per request, about 15 us of the event loop's CPU on
    GET /v1/messages/{id}. Errors still reach the app's handlers, through ExceptionMiddleware.
    """
    return PlainEndpoint(handler)
