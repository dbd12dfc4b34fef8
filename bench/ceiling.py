"""The benchmark's ceiling: a bare Starlette endpoint on the receiver's uvicorn stack.

It reads the body and answers 204, nothing else, so the receiver's throughput can be quoted
as a fraction of what this machine's Python HTTP stack can do at all.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.cli import tune_gc


async def callback(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


app = Starlette(routes=[Route("/v1/webhook/twilio/sms-status", callback, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same garbage-collector tuning and uvicorn options `receiver serve` uses.
    tune_gc()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
