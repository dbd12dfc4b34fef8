"""A JSON answer, encoded with the declarations' encoder (receiver.schemas.encode): the same
compact UTF-8 JSON as Starlette's JSONResponse, several times faster for a page of messages.
send_answer sends a 200 one straight to ASGI, for the read that takes most of the traffic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Send

from receiver.schemas import encode


def answer(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        encode(content), status_code=status_code, headers=headers, media_type="application/json"
    )


async def send_answer(send: Send, content: Any) -> None:
    """answer(content) as the two ASGI messages its Response sends (the same headers, in the
    same order), without making the Response: about 10k instructions a GET of one message."""
    body = encode(content)
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
