"""A misspelt setting is named at start, with the setting it was probably meant to be.

Without this, `TWILIO_TOKEN=...` would be ignored in silence and every callback refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import ServerProcess
from support import WAIT

from receiver.settings import Settings, unknown_variables

BIN = Path(sys.executable).parent / "receiver"


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("TWILIO_TOKEN", "TWILIO_AUTH_TOKEN"),
        ("TWILIO_SID", "TWILIO_ACCOUNT_SID"),
        ("RECEIVER_API_TOKNE", "RECEIVER_API_TOKEN"),
        ("RECEIVER_DB", "RECEIVER_DATABASE"),
        ("RECEIVER_SECRET", "RECEIVER_SECRET_KEY"),
        ("TELECOM23_SECRET", "TELECOM23_WEBHOOK_SECRET"),
        ("MESMS_APIKEY", "MESMS_API_KEY"),
        ("STANDARD_WEBHOOK_SECRET", "STANDARD_WEBHOOK_SECRETS"),
        ("RECEIVER_PORT", "PORT"),  # the service prefix on a setting that has none
        ("RECEIVER_HOST", "HOST"),
        ("receiver_database", "RECEIVER_DATABASE"),  # names are read in capitals only
        ("MESMS_COLOUR_OF_THE_SKY", None),  # nothing close: still named, without a guess
    ],
)
def test_an_unknown_variable_is_named_with_the_closest_setting(
    name: str, closest: str | None
) -> None:
    assert unknown_variables({name: "x", "PATH": "/bin"}) == {name: closest}


def test_every_setting_and_other_names_are_not_warned_about() -> None:
    env = {name: "x" for name in Settings().env_names()}
    env |= {"PATH": "/bin", "HOME": "/root", "PYTHONPATH": "/app", "SECRET_KEY": "x"}
    env["RECEIVER_URL"] = "http://127.0.0.1:8000"  # the app's variable, in a shared env
    assert unknown_variables(env) == {}


def test_kubernetes_service_variables_are_not_warned_about() -> None:
    """A Service named "receiver" (as in deploy/) puts these in every Pod of its namespace."""
    env = {
        "RECEIVER_SERVICE_HOST": "10.96.0.12",
        "RECEIVER_SERVICE_PORT": "8000",
        "RECEIVER_SERVICE_PORT_HTTP": "8000",
        "RECEIVER_PORT": "tcp://10.96.0.12:8000",
        "RECEIVER_PORT_8000_TCP": "tcp://10.96.0.12:8000",
        "RECEIVER_PORT_8000_TCP_PROTO": "tcp",
        "RECEIVER_PORT_8000_TCP_PORT": "8000",
        "RECEIVER_PORT_8000_TCP_ADDR": "10.96.0.12",
        "TWILIO_MOCK_SERVICE_HOST": "10.96.0.13",
    }
    assert unknown_variables(env) == {}


def test_serve_logs_one_warning_per_unknown_variable_without_its_value(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = ServerProcess(
        tmp_path / "u.db",
        log=log,
        TWILIO_TOKEN="value-not-to-be-logged",
        RECEIVER_API_TOKNE="another-value-not-to-be-logged",
        RECEIVER_LOG_LEVEL="info",
    ).start()
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=WAIT)
    finally:
        server.stop()
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line["event"] == "unknown_setting"]
    assert sorted((w["variable"], w["did_you_mean"]) for w in warned) == [
        ("RECEIVER_API_TOKNE", "RECEIVER_API_TOKEN"),
        ("TWILIO_TOKEN", "TWILIO_AUTH_TOKEN"),
    ]
    assert all(w["level"] == "warning" for w in warned)
    # Before `started` (docs/operate.md says so): logged as soon as the settings are read.
    events = [line["event"] for line in lines]
    assert events.index("started") > max(i for i, e in enumerate(events) if e == "unknown_setting")
    assert "did you mean TWILIO_AUTH_TOKEN?" in next(
        w["detail"] for w in warned if w["variable"] == "TWILIO_TOKEN"
    )
    assert "value-not-to-be-logged" not in text


def test_a_command_that_prints_warns_on_stderr(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
    env |= {"RECEIVER_DATABASE": str(tmp_path / "m.db"), "RECEIVER_RETENTON_DAYS": "7"}
    result = subprocess.run(
        [str(BIN), "migrate"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "receiver: warning: RECEIVER_RETENTON_DAYS is not a receiver setting and is ignored; "
        "did you mean RECEIVER_RETENTION_DAYS?\n"
    )
    assert "applied" in result.stdout
