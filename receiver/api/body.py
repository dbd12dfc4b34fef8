"""Reading request bodies with a hard size limit, before anything in them is trusted."""

from __future__ import annotations

from starlette.requests import Request


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it proves larger than `limit` bytes.

    A Content-Length over the limit is refused before reading; a chunked body at the chunk
    that crosses it (the server then closes the connection rather than drain the rest).
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
