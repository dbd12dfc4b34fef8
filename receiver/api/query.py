"""Query strings, read strictly: unknown or repeated parameters are a 400, never ignored."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request

from receiver.api.errors import ApiError


def query(request: Request, allowed: set[str]) -> Mapping[str, str]:
    """The request's query parameters, once each, all of them among `allowed`."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter: {unknown[0]}",
            allowed=sorted(allowed),
        )
    for key in params:
        if len(params.getlist(key)) > 1:
            raise ApiError(400, "invalid_parameter", f"{key} given more than once", parameter=key)
    return params
