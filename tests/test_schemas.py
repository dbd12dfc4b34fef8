"""The API's declarations (receiver/schemas.py) are the one source: the OpenAPI document is made
from them, and docs/api.md names every field they declare."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from support import LiveServer, make_settings, new_sid, post_status

from receiver import changes, schemas
from receiver.api import registration
from receiver.api.openapi import build_spec
from receiver.push import payload

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def names(struct: type[msgspec.Struct]) -> set[str]:
    """A declaration's fields as the JSON has them."""
    return {field.encode_name for field in msgspec.structs.fields(struct)}


def section(heading: str) -> str:
    """The section under the heading that starts with `heading`, of docs/api.md or of the page
    named before a colon ("push.md: ...")."""
    page = API_PAGE
    if re.match(r"[a-z]+\.md: ", heading):
        name, _, heading = heading.partition(": ")
        page = (ROOT / "docs" / name).read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(heading)}.*?(?=^## )", page, re.M | re.S)
    assert found, heading
    return found[0]


def mentioned(text: str) -> set[str]:
    """The names a page's text gives a field: `name` in prose, "name": in an example."""
    return set(re.findall(r"`([a-z0-9_]+)`", text)) | set(re.findall(r'"([a-z0-9_]+)":', text))


@pytest.mark.parametrize(
    ("heading", "structs"),
    [
        ("Errors", [schemas.Error]),
        (
            "`POST /v1/messages`",
            [schemas.Registration, schemas.Registered, schemas.RegisteredBatch],
        ),
        ("`GET /v1/messages/{message_id}`:", [schemas.Message, schemas.Poll]),
        ("`GET /v1/messages/{message_id}/events`", [schemas.MessageEvents, schemas.Event]),
        ("`GET /v1/messages`:", [schemas.MessagePage]),
        ("`GET /v1/stats`", [schemas.Stats, schemas.TimeToFinal]),
        ("push.md: What your app receives", [schemas.PushPayload, schemas.ChangeData]),
        ("`GET /v1/pushes`", [schemas.PushPage, schemas.PushDetail, schemas.PushAttempt]),
    ],
)
def test_docs_name_every_declared_field(heading: str, structs: list[type[msgspec.Struct]]) -> None:
    """docs/api.md names each field of the answers and requests it describes."""
    text = section(heading)
    for struct in structs:
        assert names(struct) <= mentioned(text), (struct.__name__, names(struct) - mentioned(text))


DECLARED = [
    schemas.Push,
    schemas.PushDetail,
    schemas.PushPage,
    schemas.Recovered,
    schemas.PushPayload,
    schemas.ChangeData,
    schemas.Error,
    schemas.Registration,
    schemas.Registered,
    schemas.RegisteredBatch,
    schemas.Message,
    schemas.Event,
    schemas.MessageEvents,
    schemas.MessagePage,
    schemas.Stats,
]


@pytest.mark.parametrize("struct", DECLARED, ids=lambda s: s.__name__)
def test_the_document_takes_its_schemas_from_the_declarations(
    struct: type[msgspec.Struct],
) -> None:
    components = build_spec()["components"]["schemas"]
    schema = components[struct.__name__]
    assert set(schema["properties"]) == names(struct)
    assert schema["additionalProperties"] is False


def test_the_answers_are_what_is_declared(tmp_path: Path) -> None:
    """Real answers of a live server decode strictly against their declarations: every field
    there, of its type, and nothing else."""
    server = LiveServer(make_settings(tmp_path)).start()
    sid, late = new_sid(), new_sid()
    try:
        with server.client() as client:

            def decoded(response: httpx.Response, struct: type[msgspec.Struct]) -> Any:
                assert response.status_code < 300, response.text
                assert response.headers["content-type"] == "application/json"
                return msgspec.json.decode(response.content, type=struct)

            body = {
                "provider": "twilio",
                "message_id": sid,
                "to": "+15558675310",
                "metadata": {"order": 42},
                "sent_at": "2000-01-01",
                "deadline": "5m",
            }
            one = decoded(client.post("/v1/messages", json=body), schemas.Registered)
            assert one.warnings  # sent_at is past RECEIVER_POLL_MAX_AGE
            decoded(
                client.post("/v1/messages", json=[{"provider": "mesms", "message_id": late}]),
                schemas.RegisteredBatch,
            )
            assert post_status(client, server.callback_url, sid, "delivered").status_code == 204
            message = decoded(client.get(f"/v1/messages/{sid}"), schemas.Message)
            assert message.status == "delivered" and message.final
            events = decoded(client.get(f"/v1/messages/{sid}/events"), schemas.MessageEvents)
            assert events.events
            page = decoded(client.get("/v1/messages", params={"limit": 1}), schemas.MessagePage)
            assert page.next_cursor is not None
            decoded(client.get("/v1/stats"), schemas.Stats)
            error = client.get("/v1/messages", params={"limit": 0})
            assert error.status_code == 400
            assert msgspec.json.decode(error.content, type=schemas.Error).details
    finally:
        server.stop()


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


def test_a_push_and_a_change_are_what_is_declared() -> None:
    """The push body the outbox keeps, and the stream's data, decode strictly against their
    declarations."""
    data = payload.message_data(
        provider="twilio",
        message_id="SM1",
        status="delivered",
        previous_status="sent",
        provider_status="delivered",
        final=True,
        final_via="callback",
        metadata={"order": 42},
    )
    body = payload.body(payload.STATUS_CHANGED, "2026-11-25T10:00:00.000Z", data)
    pushed = msgspec.json.decode(body, type=schemas.PushPayload)
    assert pushed.data.status == "delivered"
    row = {
        "provider": "twilio",
        "message_id": "SM1",
        "status": "sent",
        "previous_status": None,
        "provider_status": "sent",
        "error_code": None,
        "final_via": None,
        "to_number": "+15558675310",
        "account": None,
        "metadata": '{"order": 42}',
        "sent_at": None,
        "final_at": None,
    }
    msgspec.convert(changes.change_data(row), schemas.ChangeData)
    assert payload.TYPES == (payload.STATUS_CHANGED, payload.DEADLINE_MISSED)
