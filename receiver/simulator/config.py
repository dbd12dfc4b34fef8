"""The simulator's configuration: fake accounts, callback targets, realism, timing, delivery.

Built in code (create_simulator, the CLI) or changed at run time through POST /_sim/config; the
JSON form is checked here, and a bad value is a ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from receiver.simulator.model import Realism, Timing


class ConfigError(ValueError):
    """A configuration value the simulator cannot use; the message names the field."""


@dataclass
class Accounts:
    """The simulated accounts' credentials: fake, documented defaults (never real ones)."""

    twilio_account_sid: str = "AC" + "0" * 28 + "5151"
    twilio_auth_token: str = "sim-twilio-auth-token"
    # One subaccount of it, with its own token: its messages are its own (404 under the main
    # account), and its callbacks carry its SID and are signed with its token.
    twilio_subaccount_sid: str = "AC" + "0" * 28 + "5152"
    twilio_subaccount_token: str = "sim-twilio-subaccount-token"
    telecom23_api_key: str = "sim-telecom23-api-key"
    telecom23_account: int = 42
    # When set, telecom23 callbacks carry X-Telecom23-Signature (the gateway's optional HMAC).
    telecom23_webhook_secret: str | None = None
    mesms_api_key: str = "sim-mesms-api-key"


@dataclass
class StandardSource:
    url: str
    secret: str  # "whsec_<base64>"


@dataclass
class SimConfig:
    seed: int = 0
    speed: float = 1.0  # simulated seconds per real second
    accounts: Accounts = field(default_factory=Accounts)
    realism: Realism = field(default_factory=Realism)
    timing: Timing = field(default_factory=Timing)
    # Where each provider pushes: twilio (unless a message has its own StatusCallback),
    # telecom23 and mesms (the receiver's signed callback URLs).
    callbacks: dict[str, str] = field(default_factory=dict)
    standard_sources: dict[str, StandardSource] = field(default_factory=dict)
    batch_size: dict[str, int] = field(default_factory=lambda: {"telecom23": 1, "mesms": 1})
    telecom23_format: str = "json"  # "json" or "form" (form needs batch_size 1)
    telecom23_field_variants: bool = False  # use client_message_id/recipient/delivered_at too
    mesms_flat: bool = False  # push one flat recipient instead of {"recipients": [...]}
    max_attempts: int = 5  # per push, counting the first
    retry_base: float = 5.0  # simulated seconds before the first retry; doubles each time
    concurrency: int = 4  # pushes in flight at once (more is rarely faster on one host)
    push_timeout: float = 10.0  # real seconds per push request
    api_latency: float = 0.0  # real seconds each provider API answer takes

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _number(data: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a number from {lo} to {hi}; got {value!r}")
    return float(value)


def _int(data: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}; got {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    if not isinstance(data[key], bool):
        raise ConfigError(f"{key} must be true or false; got {data[key]!r}")
    return bool(data[key])


def _str(data: Mapping[str, Any], key: str) -> str:
    if not isinstance(data[key], str) or not data[key]:
        raise ConfigError(f"{key} must be a non-empty string; got {data[key]!r}")
    return str(data[key])


def _range(data: Mapping[str, Any], key: str, hi: float) -> tuple[float, float]:
    value = data[key]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] <= value[1] <= hi
    ):
        raise ConfigError(f"{key} must be [min, max] with 0 <= min <= max <= {hi}; got {value!r}")
    return float(value[0]), float(value[1])


def _url(value: Any, key: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"{key} must be an http(s) URL; got {value!r}")
    return value


def _object(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a JSON object")
    return value


def _unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = set(data) - known
    if extra:
        raise ConfigError(f"unknown {where}field(s): {', '.join(sorted(extra))}")


_PROBABILITIES = ("duplicate", "reorder", "late_sent", "drop_all", "drop_final", "delivered")


def parse_realism(data: Mapping[str, Any], base: Realism) -> Realism:
    _unknown(data, {*_PROBABILITIES, "delay"}, "realism ")
    changes: dict[str, Any] = {k: _number(data, k, 0, 1) for k in _PROBABILITIES if k in data}
    if "delay" in data:
        changes["delay"] = _range(data, "delay", 86_400)
    return dataclasses.replace(base, **changes)


def parse_timing(data: Mapping[str, Any], base: Timing) -> Timing:
    _unknown(data, {"sent_after", "final_after"}, "timing ")
    return dataclasses.replace(base, **{k: _range(data, k, 7 * 86_400) for k in data})


def parse_standard_source(name: str, data: Any) -> StandardSource:
    data = _object(data, f"standard_sources.{name}")
    _unknown(data, {"url", "secret"}, "standard source ")
    secret = data.get("secret")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ConfigError(f"standard_sources.{name}.secret must be 'whsec_<base64>'")
    return StandardSource(_url(data.get("url"), f"standard_sources.{name}.url"), secret)


def update_config(config: SimConfig, data: Mapping[str, Any]) -> SimConfig:
    """A copy of `config` with the JSON `data`'s changes, all checked before any is applied."""
    simple = {"speed", "max_attempts", "retry_base", "concurrency", "push_timeout", "api_latency"}
    flags = {"telecom23_field_variants", "mesms_flat"}
    nested = {"accounts", "realism", "timing", "callbacks", "standard_sources", "batch_size"}
    _unknown(data, simple | flags | nested | {"telecom23_format"}, "")
    new = dataclasses.replace(config)
    if "speed" in data:
        new.speed = _number(data, "speed", 0.001, 1_000_000)
    if "max_attempts" in data:
        new.max_attempts = _int(data, "max_attempts", 1, 50)
    if "retry_base" in data:
        new.retry_base = _number(data, "retry_base", 0, 86_400)
    if "concurrency" in data:
        new.concurrency = _int(data, "concurrency", 1, 256)
    if "push_timeout" in data:
        new.push_timeout = _number(data, "push_timeout", 0.1, 300)
    if "api_latency" in data:
        new.api_latency = _number(data, "api_latency", 0, 30)
    for flag in flags & set(data):
        setattr(new, flag, _bool(data, flag))
    if "telecom23_format" in data:
        if data["telecom23_format"] not in ("json", "form"):
            raise ConfigError("telecom23_format must be 'json' or 'form'")
        new.telecom23_format = data["telecom23_format"]
    if "accounts" in data:
        new.accounts = _parse_accounts(_object(data["accounts"], "accounts"), config.accounts)
    if "realism" in data:
        new.realism = parse_realism(_object(data["realism"], "realism"), config.realism)
    if "timing" in data:
        new.timing = parse_timing(_object(data["timing"], "timing"), config.timing)
    if "callbacks" in data:
        callbacks = _object(data["callbacks"], "callbacks")
        _unknown(callbacks, {"twilio", "telecom23", "mesms"}, "callbacks ")
        new.callbacks = dict(config.callbacks)
        for provider, url in callbacks.items():
            if url is None:
                new.callbacks.pop(provider, None)
            else:
                new.callbacks[provider] = _url(url, f"callbacks.{provider}")
    if "standard_sources" in data:
        sources = _object(data["standard_sources"], "standard_sources")
        new.standard_sources = dict(config.standard_sources)
        for name, source in sources.items():
            if source is None:
                new.standard_sources.pop(name, None)
            else:
                new.standard_sources[name] = parse_standard_source(name, source)
    if "batch_size" in data:
        sizes = _object(data["batch_size"], "batch_size")
        _unknown(sizes, {"telecom23", "mesms"}, "batch_size ")
        limits = {"telecom23": 100, "mesms": 1000}
        new.batch_size = {**config.batch_size, **{k: _int(sizes, k, 1, limits[k]) for k in sizes}}
    if new.telecom23_format == "form" and new.batch_size["telecom23"] != 1:
        raise ConfigError("telecom23_format 'form' carries one report: batch_size.telecom23 = 1")
    return new


def _parse_accounts(data: Mapping[str, Any], base: Accounts) -> Accounts:
    fields = {f.name for f in dataclasses.fields(Accounts)}
    _unknown(data, fields, "accounts ")
    changes: dict[str, Any] = {}
    for key in fields & set(data):
        if key == "telecom23_account":
            changes[key] = _int(data, key, 1, 10**9)
        elif key == "telecom23_webhook_secret" and data[key] is None:
            changes[key] = None
        else:
            changes[key] = _str(data, key)
    return dataclasses.replace(base, **changes)
