"""The API's declarations (receiver/schemas.py) are the one source: the OpenAPI document is made
from them, and docs/api.md names every field they declare."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from receiver import schemas
from receiver.api import registration
from receiver.api.openapi import build_spec

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def names(struct: type[msgspec.Struct]) -> set[str]:
    """A declaration's fields as the JSON has them."""
    return {field.encode_name for field in msgspec.structs.fields(struct)}


def paragraph(starts: str) -> str:
    """The paragraph of docs/api.md that starts with `starts`."""
    found = re.search(rf"^{re.escape(starts)}.*?(?=\n\n)", API_PAGE, re.M | re.S)
    assert found, starts
    return found[0]


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


@pytest.mark.parametrize(
    ("struct", "starts"),
    [(schemas.Registration, "The fields: ")],
)
def test_docs_name_every_declared_field(struct: type[msgspec.Struct], starts: str) -> None:
    assert names(struct) <= backticked(paragraph(starts))


def test_the_document_takes_its_schemas_from_the_declarations() -> None:
    components = build_spec()["components"]["schemas"]
    for name, struct in [("Error", schemas.Error), ("Registration", schemas.Registration)]:
        assert set(components[name]["properties"]) == names(struct), name
        assert components[name]["additionalProperties"] is False


def test_an_unknown_field_lists_the_declared_ones() -> None:
    assert sorted(names(schemas.Registration)) == registration.FIELDS


def test_the_registration_is_checked_in_its_declared_order() -> None:
    """Every declared field has its check (receiver/api/registration.py's CHECKS), and the
    first wrong field of a message is the one named."""
    assert list(registration.CHECKS) == [
        f.name for f in msgspec.structs.fields(schemas.Registration)
    ]
    with pytest.raises(Exception) as raised:
        registration.decode_registrations(
            b'{"provider": "nope", "message_id": 5, "to": 7}', ["twilio"]
        )
    assert raised.value.details == {"index": 0, "field": "provider"}  # type: ignore[attr-defined]
