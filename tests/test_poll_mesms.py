"""me-sms's recipients page: the list under `data` or under `recipients`.

Its documents name the cursor fields (`nextCursor`, `hasMore`) but not the list's key, and the
simulator serves one shape only, so the other shapes are served by httpx.MockTransport (as in
test_poll_clients.py).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from receiver.polling.base import DueMessage, PollAnswer, Unavailable
from receiver.polling.mesms import MeSmsStatusClient
from receiver.settings import Settings

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
FIRST = {"msisdn": "66812345678", "status": "success", "updatedAt": "2026-02-13T10:30:04Z"}
SECOND = {"msisdn": "66812345679", "status": "failed", "errorCode": "PHONE_OFF"}


def due(msisdn: str) -> DueMessage:
    return DueMessage(
        pk=1,
        provider="mesms",
        message_id=f"{UUID}:{msisdn}",
        account=None,
        status="queued",
        provider_status="pending",
        poll_attempts=0,
        created_at="2026-02-13T10:30:00.000Z",
        sent_at=None,
    )


async def sweep(
    pages: Callable[[int], dict[str, Any]], *msisdns: str
) -> tuple[dict[str, PollAnswer], list[int], list[str]]:
    """Poll `msisdns` of one send against a recipients endpoint answering `pages(after)`:
    the answers by message id, the cursors asked for, and the results observed."""
    asked: list[int] = []
    observed: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v2/sms/{UUID}/recipients"
        asked.append(int(request.url.params["after"]))
        return httpx.Response(200, json=pages(asked[-1]))

    client = MeSmsStatusClient(Settings(provider_env=MappingProxyType({"MESMS_API_KEY": "k"})))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        answers = await client.poll(http, [due(m) for m in msisdns], observed.append)
    return {a.message_id: a for a in answers}, asked, observed


def statuses(answers: dict[str, PollAnswer]) -> dict[str, str | None]:
    return {i: a.event.provider_status if a.event else None for i, a in answers.items()}


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["data", "recipients"])
async def test_the_recipients_list_is_read_under_either_key(key: str) -> None:
    answers, asked, observed = await sweep(
        lambda after: {key: [FIRST, SECOND], "hasMore": False}, FIRST["msisdn"]
    )
    assert statuses(answers) == {
        f"{UUID}:{FIRST['msisdn']}": "success",
        f"{UUID}:{SECOND['msisdn']}": "failed",
    }
    event = answers[f"{UUID}:{SECOND['msisdn']}"].event
    assert event is not None and event.error_code == "PHONE_OFF"
    assert (asked, observed) == ([0], ["ok"])


@pytest.mark.anyio
async def test_recipients_pages_are_followed_by_their_cursor() -> None:
    pages = {
        0: {"recipients": [FIRST], "hasMore": True, "nextCursor": 7},
        7: {"recipients": [SECOND], "hasMore": False, "nextCursor": None},
    }
    answers, asked, observed = await sweep(pages.__getitem__, FIRST["msisdn"])
    assert set(statuses(answers).values()) == {"success", "failed"}
    assert (asked, observed) == ([0, 7], ["ok", "ok"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("page", "seen"),
    [
        pytest.param({"recipients": [FIRST], "data": [SECOND]}, "success", id="both-lists"),
        pytest.param({"recipients": 2, "data": [SECOND]}, "failed", id="recipients-a-count"),
        pytest.param({"recipients": [FIRST], "data": {"total": 1}}, "success", id="data-a-dict"),
    ],
)
async def test_with_both_keys_the_recipients_list_is_read_first(
    page: dict[str, Any], seen: str
) -> None:
    """`recipients` names what it holds; a generic `data` beside it is read only when
    `recipients` is not a list."""
    answers, _, _ = await sweep(lambda after: {**page, "hasMore": False}, FIRST["msisdn"])
    assert seen in statuses(answers).values()
    assert len([s for s in statuses(answers).values() if s is not None]) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "page",
    [
        pytest.param({"hasMore": False}, id="no-list"),
        pytest.param({"recipients": {"66812345678": "success"}, "hasMore": False}, id="a-dict"),
        pytest.param({"recipients": None, "data": None, "hasMore": False}, id="both-null"),
    ],
)
async def test_a_page_without_a_recipients_list_is_unavailable(page: dict[str, Any]) -> None:
    with pytest.raises(Unavailable, match="recipients") as caught:
        await sweep(lambda after: page, FIRST["msisdn"])
    assert caught.value.result == "unavailable"
