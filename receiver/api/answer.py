"""A JSON answer, encoded with the declarations' encoder (receiver.schemas.encode): the same
compact UTF-8 JSON as Starlette's JSONResponse, several times faster for a page of messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from receiver.schemas import encode


def answer(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        encode(content), status_code=status_code, headers=headers, media_type="application/json"
    )
