"""Reading request bodies with a hard size limit, before anything in them is trusted."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it proves larger than `limit` bytes (see `read_body`)."""
    return await read_body(request.receive, request.headers.get("content-length", ""), limit)


async def read_body(receive: Receive, content_length: str, limit: int) -> bytes | None:
    """The body from the ASGI `receive`, or None as soon as it proves larger than `limit`.

    A Content-Length over the limit is refused before reading; a chunked body at the chunk
    that crosses it (the server then closes the connection rather than drain the rest). A
    client gone before the end raises ClientDisconnect, as Starlette's Request.stream() does.
    """
    if content_length.isascii() and content_length.isdigit() and int(content_length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
