"""Log configuration: JSON lines for machines, console lines for people, one chain for both."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import structlog
from starlette.types import Message, Receive, Scope, Send

from receiver.logging import LineWriter, RequestContextMiddleware, UtcTimestamp, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_level_time_and_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", cache=False)
    structlog.contextvars.bind_contextvars(request_id="r1")
    try:
        structlog.get_logger("t").info("callback", provider="twilio", outcome="applied")
        structlog.get_logger("t").debug("hidden")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # debug is filtered at info level
    record = json.loads(lines[0])
    assert record["event"] == "callback" and record["level"] == "info"
    assert record["request_id"] == "r1" and record["provider"] == "twilio"
    assert record["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    "ns",
    [
        1_764_790_000_123_456_789,  # the microseconds are rounded down, as datetime.now() does
        1_764_790_000_000_000_999,  # a zero fraction is left out, as isoformat() does
        1_764_790_001_000_001_000,
        951_782_400_999_999_999,  # 2000-02-29, a second before midnight
    ],
)
def test_timestamp_is_the_iso_utc_text_of_structlogs_timestamper(
    ns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: ns)
    stamp = UtcTimestamp()
    expected = datetime.datetime.fromtimestamp(0, datetime.UTC) + datetime.timedelta(
        microseconds=ns // 1000
    )
    for _ in range(2):  # the second time from the second's cached text
        record = stamp(None, "info", {})
        assert record["timestamp"] == expected.isoformat().replace("+00:00", "Z")


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_loggers_such_as_uvicorns_render_as_json_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json", cache=False)
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["event"] == "Uvicorn running"
    assert record["logger"] == "uvicorn.error"


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console", cache=False)
    structlog.get_logger("t").info("started", version="1")
    out = capsys.readouterr().out
    assert "started" in out and "version" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.strip().splitlines()[-1])


def test_lines_of_one_loop_turn_are_written_together_in_order() -> None:
    """On the event loop, lines wait for the end of the turn, then go out in one write."""

    class Stream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Stream()
    writer = LineWriter(stream)

    async def main() -> None:
        writer.msg("one")
        writer.msg("two")
        assert stream.getvalue() == ""  # not yet: the turn is still running
        await asyncio.sleep(0)
        assert stream.getvalue() == "one\ntwo\n"
        assert stream.writes == 1

    asyncio.run(main())
    writer.msg("three")  # no loop running: written at once
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_two_event_loops_in_two_threads_each_write_their_own_lines() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream)

    async def burst(name: str) -> None:
        for i in range(50):
            writer.msg(f"{name}{i}")
            await asyncio.sleep(0)

    threads = [threading.Thread(target=asyncio.run, args=(burst(n),)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{n}{i}" for n in "ab" for i in range(50))
    assert [line for line in lines if line.startswith("a")] == [f"a{i}" for i in range(50)]


def test_a_request_binds_its_id_and_leaves_no_context_behind() -> None:
    """Requests run one after another in one task (as an in-process client runs them): each
    line carries its own request's id and context, and none is left once a request is done."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        structlog.contextvars.bind_contextvars(provider=scope["path"].rsplit("/", 1)[-1])
        structlog.get_logger("t").info("callback")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestContextMiddleware(endpoint)
    echoed: list[bytes] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            echoed.append(dict(message["headers"])[b"x-request-id"])

    async def main() -> dict[str, object]:
        for request_id, provider in [("r1", "twilio"), ("r2", "mesms")]:
            scope = {
                "type": "http",
                "method": "POST",
                "path": f"/v1/webhook/{provider}",
                "headers": [(b"x-request-id", request_id.encode())],
            }
            await app(scope, receive, send)
        return structlog.contextvars.get_contextvars()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        left = asyncio.run(main())
    assert [(e["request_id"], e["provider"]) for e in logs] == [("r1", "twilio"), ("r2", "mesms")]
    assert echoed == [b"r1", b"r2"]
    assert left == {}
