"""Structured logs: JSON lines in production, readable lines on a terminal; request ids.

`configure_logging()` is called once by the entry point; tests read logs as data with
`structlog.testing.capture_logs()`.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import json
import logging
import random
import re
import sys
import time
from typing import Any, TextIO

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LineWriter:
    """A structlog logger writing one line per event to a stream, flushed.

    On an event loop, the lines of one loop turn (say, the callbacks of one group commit) are
    written together at the end of the turn, in one system call rather than one each: each call
    releases the GIL, and getting it back from the writer thread costs the hot path. Elsewhere
    (other threads, start-up) a line is written at once.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        # Lines waiting for the end of their loop's turn; each loop only touches its own list.
        self._pending: dict[asyncio.AbstractEventLoop, list[str]] = {}
        atexit.register(self.flush)  # a turn cut short by exit still gets its lines out

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write([message])
            return
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append(message)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        lines = self._pending.pop(loop, None)
        if lines:
            self._write(lines)

    def flush(self) -> None:
        for loop in list(self._pending):
            self._flush(loop)

    def _write(self, lines: list[str]) -> None:
        lines.append("")
        self._stream.write("\n".join(lines))
        self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _fallback(obj: Any) -> str:
    return repr(obj)


# Built once: json.dumps with any option builds a new encoder on every call.
_encode = json.JSONEncoder(default=_fallback).encode


def render_json(logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> str:
    return _encode(event_dict)


class UtcTimestamp:
    """Adds `timestamp` as structlog's TimeStamper(fmt="iso", utc=True) does, the same text,
    with the date and time of day formatted once a second: per line, datetime's formatting
    was a sixth of the log line's cost."""

    def __init__(self) -> None:
        self._second = (-1, "")  # the last second formatted, and its text

    def __call__(
        self, logger: Any, method_name: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        # Microseconds rounded down, as datetime.now() takes them from the same clock.
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        cached, text = self._second
        if second != cached:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            text = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        # isoformat() leaves a zero fraction out.
        event_dict["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", *, cache: bool = True) -> None:
    """Set structlog's production chain; `fmt` is json, console, or auto (console on a tty)."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    # Fields keep the order the code logs them in (the start-up summary reads top-down).
    renderer: Any = structlog.dev.ConsoleRenderer(sort_keys=False) if console else render_json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamp(),
    ]
    # uvicorn's own lines (start-up, errors) go through the same renderer, so the output is
    # one format from end to end.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
        named.setLevel(logging.NOTSET)  # the root's level rules
    # httpx logs every request the poller makes at info; the poller logs what matters itself.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, _LEVELS[level]))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_factory(LineWriter(sys.stdout)),
        cache_logger_on_first_use=cache,
    )


def _factory(writer: LineWriter) -> Any:
    return lambda *args: writer


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("receiver.http")
_UNLOGGED = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContextMiddleware:
    """Binds a request id (the caller's X-Request-ID when sane) to every log line of a request,
    echoes it in the response, and logs one line per API request (webhooks log their own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        # 32 hex digits, as uuid4().hex gave, without its os.urandom: a system call that let
        # the reading threads take the GIL from the loop on every request.
        request_id = request_id or f"{random.getrandbits(128):032x}"
        # Bound without a clear_contextvars() first: uvicorn runs each request in a task of its
        # own, and the clear in `finally` leaves nothing behind where requests share a task.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path: str = scope["path"]
            # Probes and scrapes come every few seconds; a line each would drown the rest.
            if not path.startswith("/v1/webhook/") and path not in _UNLOGGED:
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()
