"""`receiver serve` stopped as a user stops it (Ctrl-C, or SIGTERM from a supervisor), and the
line that says where it listens. Each test runs the real command as a child process."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ROOT, ServerProcess, event_counts, signed_callback
from support import POLL_INTERVAL, WAIT, wait_for_healthz, wait_until

WORKERS = 4
PER_WORKER = 200  # bounded: the signal normally comes long before this
SIGNAL_AFTER_ACKS = 40


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a server's output file (anything else is left out)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def start(tmp_path: Path, **env: str) -> tuple[ServerProcess, Path]:
    log = tmp_path / "serve.log"
    server = ServerProcess(tmp_path / "serve.db", log=log, RECEIVER_LOG_LEVEL="info", **env)
    return server.start(), log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_service_quietly_with_exit_code_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C (as the docs say to stop it) or a supervisor's SIGTERM: no traceback, exit 0,
    and the shutdown that closes the store ran."""
    server, log = start(tmp_path)
    try:
        assert server.proc is not None
        server.proc.send_signal(signum)
        code = server.proc.wait(timeout=WAIT)
    finally:
        server.stop()
    output = log.read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert code == 0, output
    lines = log_lines(log)
    events = [line["event"] for line in lines]
    assert events.index("started") < events.index("listening") < events.index("stopped")
    [stopping] = [line for line in lines if line["event"] == "stopping"]
    assert stopping["signal"] == signum.name


def test_the_listening_line_names_the_url_event_loop_and_http_parser(tmp_path: Path) -> None:
    server, log = start(tmp_path)
    try:
        wait_until(
            lambda: any(line["event"] == "listening" for line in log_lines(log)),
            what="the listening line",
        )
    finally:
        server.stop()
    [line] = [line for line in log_lines(log) if line["event"] == "listening"]
    assert line["url"] == server.base_url
    assert line["level"] == "info"
    # uvloop and httptools when they are installed, as uvicorn's "auto" would pick.
    expected_loop = "uvloop" if _importable("uvloop") else "asyncio"
    expected_http = "httptools" if _importable("httptools") else "h11"
    assert (line["loop"], line["http"]) == (expected_loop, expected_http)


def test_port_0_is_named_in_the_listening_line_as_the_real_port(tmp_path: Path) -> None:
    """The line is where a user learns the port the system picked: it must be the real one."""
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
    env |= {
        "RECEIVER_DATABASE": str(tmp_path / "p0.db"),
        "RECEIVER_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: (
                    proc.poll() is not None
                    or any(line["event"] == "listening" for line in log_lines(log))
                ),
                what="the listening line",
            )
            [line] = [line for line in log_lines(log) if line["event"] == "listening"]
            url: str = line["url"]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            assert wait_for_healthz(url, proc).status_code == 200
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=WAIT) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)


def test_callbacks_acknowledged_before_ctrl_c_are_all_in_the_database(tmp_path: Path) -> None:
    """SIGINT under load: requests in flight finish, the last batch commits, nothing that got
    a 204 is missing afterwards."""
    server, log = start(tmp_path)
    acked: list[str] = []  # list.append is atomic: the workers share it

    def load(worker: int) -> None:
        with httpx.Client(timeout=WAIT) as client:
            for _ in range(PER_WORKER):
                sid = f"SM{worker:02d}{uuid.uuid4().hex[2:]}"
                body, headers = signed_callback(server.callback_url, sid)
                try:
                    response = client.post(server.callback_url, content=body, headers=headers)
                except httpx.TransportError:
                    return  # the server stopped taking requests: this one was never answered
                if response.status_code != 204:
                    return
                acked.append(sid)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(WORKERS)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + WAIT
        while len(acked) < SIGNAL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)  # mid-load: requests are in flight
        code = server.proc.wait(timeout=WAIT)
        for thread in threads:
            thread.join(timeout=WAIT)
    finally:
        server.stop()
    assert code == 0, log.read_text()
    assert len(acked) >= SIGNAL_AFTER_ACKS
    stored = {message_id for message_id, _outcome in event_counts(server.database)}
    assert [sid for sid in acked if sid not in stored] == []


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_simulator_stops_as_quietly_as_the_service(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """`receiver simulate`, stopped with Ctrl-C as the docs say: no traceback, exit 0."""
    output = tmp_path / "simulate.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "simulate", "--port", "0"],
            cwd=ROOT,
            env=env | {"PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: proc.poll() is not None or "provider simulator on" in output.read_text(),
                what="the simulator's first line",
            )
            url = output.read_text().split("provider simulator on ", 1)[1].split()[0]
            wait_until(lambda: proc.poll() is not None or _answers(url + "/_sim/stats"), what="200")
            assert proc.poll() is None, output.read_text()
            proc.send_signal(signum)
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
    text = output.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert code == 0, text
