"""The API's shapes, each declared once (msgspec Structs): what a request may hold, and what an
answer holds. From these come the decoding of requests with their checks (receiver/api/),
the encoding of answers, the schemas of GET /openapi.json (receiver/api/openapi.py) and the
field lists of docs/api.md (tests/test_schemas.py holds the page to them).

msgspec was measured against pydantic and the hand-written code before (bench/schemas.py):
it decodes a 1,000-message registration batch and encodes a 1,000-message page several
times faster than either. A field's description is its `Meta(description=...)`; a request
field's sentence when it is wrong is `Meta(extra={"invalid": ...})`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = ["Error", "encode", "openapi_schemas"]

Schema = dict[str, Any]

# One encoder for every answer: compact UTF-8 JSON, as the service has always written it.
encode = msgspec.json.Encoder().encode


class Error(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Every failure: a stable `error_code`, a message for people, details."""

    error_code: Annotated[str, Meta(pattern="^[a-z_]+$")]
    message: Annotated[str, Meta(min_length=1)]
    # Where there is more to say: the offending `parameter`, `field` or `index`, the `allowed`
    # values, a `limit`. Left out when there is nothing.
    details: dict[str, Any] = msgspec.field(default_factory=dict)


def openapi_schemas(*types: Any) -> dict[str, Schema]:
    """The OpenAPI components of these declarations (and of those they hold), by name."""
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():
        # The title repeats the name; "default" describes a request, never an answer.
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("default", None)
            prop.pop("title", None)
    return components
