"""The cost of the API's schemas: decoding a 1,000-message registration batch (with every check)
and encoding a 1,000-message list page, as the service does them.

Pure CPU in one process, no server: the fastest of --rounds runs of each, in CPU milliseconds
of this process (and µs per message), the figure a shared machine moves least. Run it before
and after a change to the declarations (receiver/schemas.py); with --candidates it also times
the libraries weighed for them (msgspec, pydantic) on the same data, on their own.

    .venv/bin/python bench/schemas.py
    .venv/bin/python bench/schemas.py --candidates --rounds 50
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from receiver.api import messages

BATCH = 1000


def registration_body(count: int = BATCH) -> bytes:
    """A batch as apps send it: every field set, metadata of a few keys."""
    return json.dumps(
        {
            "messages": [
                {
                    "provider": "twilio",
                    "message_id": f"SM{i:032x}",
                    "to": f"+1555{i:07d}",
                    "from": "+15550000000",
                    "sent_at": "2026-11-25T10:00:00Z",
                    "metadata": {"order": i, "campaign": "black-friday", "tags": ["a", "b"]},
                    "account": "AC" + "0" * 32,
                    "deadline": "5m",
                }
                for i in range(count)
            ]
        }
    ).encode()


def message_rows(count: int = BATCH) -> list[dict[str, Any]]:
    """Answers as the store gives them (store/answers.py's message_dict)."""
    return [
        {
            "provider": "twilio",
            "message_id": f"SM{i:032x}",
            "status": "delivered",
            "provider_status": "delivered",
            "error_code": None,
            "final": True,
            "final_via": "callback",
            "to": f"+1555{i:07d}",
            "from": "+15550000000",
            "account": "AC" + "0" * 32,
            "registered": True,
            "metadata": {"order": i, "campaign": "black-friday"},
            "created_at": "2026-11-25T10:00:00.000Z",
            "updated_at": "2026-11-25T10:00:03.000Z",
            "sent_at": "2026-11-25T10:00:00.000Z",
            "final_at": "2026-11-25T10:00:03.000Z",
            "final_reason": None,
            "poll": {
                "attempts": 0,
                "last_polled_at": None,
                "last_result": None,
                "next_poll_at": None,
            },
            "deadline": None,
            "deadline_missed": False,
        }
        for i in range(count)
    ]


def service_decode() -> Callable[[bytes], object]:
    """How the service reads a registration body today."""
    providers = ["mesms", "standard", "telecom23", "twilio"]
    decode = getattr(messages, "decode_registrations", None)
    if decode is not None:  # the declarations (receiver/api/schemas.py)
        return lambda body: decode(body, providers)

    def by_hand(body: bytes) -> object:  # before them: json, then each field by hand
        payload = json.loads(body)
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
        return [
            messages._registration(item, i, providers)  # type: ignore[attr-defined]
            for i, item in enumerate(payload["messages"])
        ]

    return by_hand


def service_encode() -> Callable[[dict[str, Any]], bytes]:
    """How the service writes a list page today."""
    try:
        from receiver.api.answer import answer
    except ImportError:  # before the declarations: Starlette's JSONResponse
        return lambda page: JSONResponse(page).body
    return lambda page: answer(page).body


def candidates(body: bytes, page: dict[str, Any]) -> dict[str, Callable[[], object]]:
    """The libraries weighed, each declaring the registration and the message once."""
    from typing import Annotated, Literal

    import msgspec
    import pydantic

    Text64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

    class MsRegistration(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
        provider: str
        message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
        to: Text64 | None = None
        from_: Text64 | None = msgspec.field(default=None, name="from")
        sent_at: Text64 | None = None
        metadata: dict[str, Any] | None = None
        account: Text64 | None = None
        deadline: str | float | None = None

    class MsBatch(msgspec.Struct, forbid_unknown_fields=True):
        messages: Annotated[list[MsRegistration], msgspec.Meta(min_length=1, max_length=1000)]

    class PdRegistration(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", strict=True)
        provider: str
        message_id: Annotated[str, pydantic.Field(min_length=1, max_length=256)]
        to: Annotated[str, pydantic.Field(min_length=1, max_length=64)] | None = None
        from_: Annotated[str, pydantic.Field(min_length=1, max_length=64)] | None = pydantic.Field(
            default=None, alias="from"
        )
        sent_at: Annotated[str, pydantic.Field(max_length=64)] | None = None
        metadata: dict[str, Any] | None = None
        account: Annotated[str, pydantic.Field(max_length=64)] | None = None
        deadline: str | float | None = None

    class PdBatch(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", strict=True)
        messages: Annotated[list[PdRegistration], pydantic.Field(min_length=1, max_length=1000)]

    class MsPoll(msgspec.Struct):
        attempts: int
        last_polled_at: str | None
        last_result: str | None
        next_poll_at: str | None

    class MsMessage(msgspec.Struct):
        provider: str
        message_id: str
        status: Literal["queued", "sent", "delivered", "undelivered", "failed"] | str
        provider_status: str | None
        error_code: str | None
        final: bool
        final_via: str | None
        to: str | None
        from_: str | None = msgspec.field(name="from")
        account: str | None = None
        registered: bool = False
        metadata: dict[str, Any] | None = None
        created_at: str = ""
        updated_at: str = ""
        sent_at: str | None = None
        final_at: str | None = None
        final_reason: str | None = None
        poll: MsPoll | None = None
        deadline: str | None = None
        deadline_missed: bool = False

    pd_batch = pydantic.TypeAdapter(PdBatch)
    pd_page = pydantic.TypeAdapter(dict[str, Any])
    ms_decoder = msgspec.json.Decoder(MsBatch)
    ms_encoder = msgspec.json.Encoder()
    rows = page["messages"]
    return {
        "decode msgspec Struct": lambda: ms_decoder.decode(body),
        "decode pydantic strict": lambda: pd_batch.validate_json(body),
        "decode json.loads alone": lambda: json.loads(body),
        "encode msgspec (the dicts)": lambda: ms_encoder.encode(page),
        "encode msgspec (Structs built)": lambda: ms_encoder.encode(
            {
                "messages": [msgspec.convert(r, MsMessage, from_attributes=False) for r in rows],
                "next_cursor": None,
            }
        ),
        "encode pydantic (the dicts)": lambda: pd_page.dump_json(page),
        "encode json.dumps (starlette)": lambda: JSONResponse(page).body,
    }


def timed(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        samples.append((time.process_time() - start) * 1000)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--candidates", action="store_true", help="time the libraries too")
    args = parser.parse_args()
    body = registration_body()
    page = {"messages": message_rows(), "next_cursor": "djE6MTIz"}
    decode, encode = service_decode(), service_encode()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min); fastest of {args.rounds} rounds, CPU")
    for name, fn in [
        (f"decode a {BATCH}-message registration batch (service)", lambda: decode(body)),
        (f"encode a {BATCH}-message list page (service)", lambda: encode(page)),
        *((name, fn) for name, fn in (candidates(body, page) if args.candidates else {}).items()),
    ]:
        ms = timed(fn, args.rounds)
        print(f"  {name:<55} {ms:8.2f} ms  {ms * 1000 / BATCH:7.2f} µs/message")


if __name__ == "__main__":
    main()
