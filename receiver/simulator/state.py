"""The simulator's state: its messages, counters and injected faults, and how messages are made."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from receiver.simulator.config import ConfigError, SimConfig, parse_realism
from receiver.simulator.model import (
    API_PROVIDERS,
    ERROR_CODES,
    FLAVORS,
    PROVIDERS,
    Clock,
    Realism,
    SimMessage,
    choose_final,
    hex_id,
    plan_pushes,
    plan_timeline,
)

MAX_CREATE = 100_000  # messages per create request
DEFAULT_SENDERS = {
    "twilio": "+15005550006",
    "telecom23": "SimApp",
    "mesms": "SimSender",
    "standard": "SimSender",
}


@dataclass
class MesmsSend:
    """One me-sms send: its uuid and recipients, in the order the recipients endpoint pages."""

    uuid: str
    created: float
    recipients: list[SimMessage]
    status_requests: int = 0  # recipients pages asked for
    polls_in_flight: int = 0
    max_concurrent_polls: int = 0


@dataclass
class Fault:
    """What a provider's API answers instead of the truth, for a while."""

    unauthorized: bool = False
    rate_limited: int = 0  # the next n requests get 429
    retry_after: int = 1
    outage_requests: int = 0  # the next n requests get outage_status
    outage_until: float = 0.0  # monotonic time until which every request gets outage_status
    outage_status: int = 503

    def as_json(self) -> dict[str, Any]:
        return {
            "unauthorized": self.unauthorized,
            "rate_limited": self.rate_limited,
            "retry_after": self.retry_after,
            "outage_requests": self.outage_requests,
            "outage_seconds_left": round(max(0.0, self.outage_until - time.monotonic()), 3),
            "outage_status": self.outage_status,
        }


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # "<provider>.<endpoint>"
    responses: dict[str, Counter[str]] = field(default_factory=dict)  # endpoint -> HTTP status
    push_attempts: Counter[str] = field(default_factory=Counter)  # per provider
    push_answers: dict[str, Counter[str]] = field(default_factory=dict)  # provider -> status
    pushes_succeeded: int = 0
    pushes_gave_up: int = 0

    def answered(self, endpoint: str, status: int) -> None:
        self.responses.setdefault(endpoint, Counter())[str(status)] += 1

    def pushed(self, provider: str, answer: str) -> None:
        self.push_attempts[provider] += 1
        self.push_answers.setdefault(provider, Counter())[answer] += 1


class Simulator:
    """Everything the simulator knows. Used from one event loop only, so it needs no locks."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = Clock(config.speed)
        self.rng = random.Random(config.seed)
        self.messages: dict[str, SimMessage] = {}
        self.mesms_sends: dict[str, MesmsSend] = {}
        self.stats = Stats()
        self.faults: dict[str, Fault] = {}
        self._telecom23_seq = 0

    def reset(self, seed: int | None = None) -> None:
        """Forget messages, counters and faults, and restart the random stream; keep config."""
        if seed is not None:
            self.config.seed = seed
        self.rng = random.Random(self.config.seed)
        self.messages.clear()
        self.mesms_sends.clear()
        self.stats = Stats()
        self.faults.clear()

    def callback_url(self, message: SimMessage) -> str | None:
        if message.callback_url:
            return message.callback_url
        if message.provider == "standard":
            source = self.config.standard_sources.get(message.source or "")
            return source.url if source else None
        return self.config.callbacks.get(message.provider)

    def create(
        self,
        provider: str,
        count: int,
        *,
        to: Sequence[str] | None = None,
        sender: str | None = None,
        body: str = "simulated message",
        outcomes: Mapping[str, float] | None = None,
        realism: Realism | None = None,
        source: str | None = None,
        status_provider: str | None = None,
        per_send: int = 100,
        callback_url: str | None = None,
        account: str | None = None,
        segments: int = 1,
    ) -> list[SimMessage]:
        """Make `count` messages as if the provider had accepted them now, with their plans.

        `segments`: each message goes out as this many segments (a concatenated SMS), each a
        message of the provider's with its own id and its own fate, in order per recipient.

        `account`: the Twilio account sending them, the main one (the default) or its
        subaccount; a message belongs to the account it was sent from.
        """
        flavor_name = status_provider or provider
        accounts = self.config.accounts
        if account is not None and (
            provider != "twilio"
            or account not in (accounts.twilio_account_sid, accounts.twilio_subaccount_sid)
        ):
            raise ConfigError(
                "account is for twilio messages: the simulated account's SID or its subaccount's"
            )
        if provider == "twilio":
            account = account or accounts.twilio_account_sid
        if provider == "standard" and (source is None or not source):
            raise ConfigError("a standard message needs its source")
        if status_provider is not None and (
            provider != "standard" or status_provider not in API_PROVIDERS
        ):
            raise ConfigError(
                "status_provider is for standard sources, naming twilio, telecom23 or mesms"
            )
        flavor = FLAVORS[flavor_name]
        if outcomes is not None:
            unknown = set(outcomes) - set(flavor.canonical)
            if unknown or not outcomes or sum(outcomes.values()) <= 0:
                raise ConfigError(
                    f"outcomes must weigh {flavor_name} statuses ({', '.join(flavor.canonical)})"
                )
        if to is not None and len(to) != count:
            raise ConfigError("to must list one number per message")
        if segments > 1 and provider == "mesms":
            raise ConfigError("me-sms reports a recipient once: it has no segments")
        if count * segments > MAX_CREATE:
            raise ConfigError(f"at most {MAX_CREATE} segments per request")
        realism = realism or self.config.realism
        sender = sender or DEFAULT_SENDERS[provider]
        now = self.clock.now()
        made: list[SimMessage] = []
        if provider == "mesms":
            numbers = list(to) if to is not None else self._msisdns(count)
            for start in range(0, count, per_send):
                send = MesmsSend(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), now, [])
                for msisdn in numbers[start : start + per_send]:
                    message = self._make(provider, f"{send.uuid}:{msisdn}", msisdn, now, sender)
                    message.send_id = send.uuid
                    send.recipients.append(message)
                    made.append(message)
                self.mesms_sends[send.uuid] = send
        else:
            for i in range(count):
                number = to[i] if to is not None else f"+1555{self.rng.randrange(10**7):07d}"
                first: str | None = None
                for n in range(1, segments + 1):
                    message = self._make(provider, self._new_id(provider, now), number, now, sender)
                    if segments > 1:
                        first = first or message.message_id
                        message.segment, message.segments, message.first_segment = (
                            n,
                            segments,
                            first,
                        )
                    made.append(message)
        for message in made:
            message.body = body
            message.source = source
            message.status_provider = status_provider
            message.flavor_name = flavor_name
            message.callback_url = callback_url
            message.account = account
            # A stream of its own per message: changing one message's knobs (say, more
            # duplicates) leaves every other message's plan as it was.
            rng = random.Random(self.rng.getrandbits(64))
            final = choose_final(rng, flavor, realism, outcomes)
            message.timeline = plan_timeline(rng, flavor, now, final, self.config.timing)
            if final in flavor.failures:
                message.error_code = rng.choice(ERROR_CODES[flavor_name])
            message.plan, flags = plan_pushes(rng, message, realism)
            for key, value in flags.items():
                setattr(message, key, value)
            if message.plan and self.callback_url(message) is None:
                message.plan, message.dropped = [], "no_target"
            self.messages[message.message_id] = message
        return made

    def _make(self, provider: str, message_id: str, to: str, now: float, sender: str) -> SimMessage:
        return SimMessage(provider, message_id, to, sender, now, [], None, [], provider)

    def _new_id(self, provider: str, now: float) -> str:
        if provider == "twilio":
            return "SM" + hex_id(self.rng, 32)
        if provider == "telecom23":
            self._telecom23_seq += 1
            ns = int(now * 1e9) + self._telecom23_seq
            return f"api_{self.config.accounts.telecom23_account}_{ns}_{hex_id(self.rng, 16)}"
        return "std_" + hex_id(self.rng, 24)

    def _msisdns(self, count: int) -> list[str]:
        # Distinct within the request, so "<uuid>:<msisdn>" names one recipient.
        start = self.rng.randrange(10**8 - count)
        return [f"668{start + i:08d}" for i in range(count)]

    def fault(self, provider: str) -> Fault:
        return self.faults.setdefault(provider, Fault())


def parse_create(data: Mapping[str, Any], base: Realism) -> dict[str, Any]:
    """The keyword arguments of Simulator.create from a POST /_sim/messages body."""
    known = {"provider", "count", "to", "from", "body", "outcomes", "realism", "source"}
    known |= {"status_provider", "per_send", "callback_url", "account", "segments"}
    extra = set(data) - known
    if extra:
        raise ConfigError(f"unknown field(s): {', '.join(sorted(extra))}")
    provider = data.get("provider")
    if provider not in PROVIDERS:
        raise ConfigError(f"provider must be one of {', '.join(PROVIDERS)}")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CREATE:
        raise ConfigError(f"count must be a whole number from 1 to {MAX_CREATE}")
    per_send = data.get("per_send", 100)
    if isinstance(per_send, bool) or not isinstance(per_send, int) or not 1 <= per_send <= 10_000:
        raise ConfigError("per_send must be a whole number from 1 to 10000")
    args: dict[str, Any] = {"count": count, "per_send": per_send}
    segments = data.get("segments", 1)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= 255:
        raise ConfigError("segments must be a whole number from 1 to 255")
    if segments > 1:
        args["segments"] = segments
    to = data.get("to")
    if to is not None:
        if not isinstance(to, list) or not all(isinstance(n, str) and n for n in to):
            raise ConfigError("to must be a list of phone numbers")
        if len(set(to)) != len(to):
            raise ConfigError("to must not repeat a number")
        args["to"] = to
    for key, arg in (
        ("from", "sender"),
        ("body", "body"),
        ("source", "source"),
        ("account", "account"),
    ):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"{key} must be a non-empty string")
            args[arg] = data[key]
    if "status_provider" in data:
        args["status_provider"] = data["status_provider"]
    if "callback_url" in data:
        if not isinstance(data["callback_url"], str) or not data["callback_url"].startswith(
            ("http://", "https://")
        ):
            raise ConfigError("callback_url must be an http(s) URL")
        args["callback_url"] = data["callback_url"]
    if "outcomes" in data:
        outcomes = data["outcomes"]
        if not isinstance(outcomes, dict) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and w >= 0
            for w in outcomes.values()
        ):
            raise ConfigError("outcomes must map provider statuses to weights >= 0")
        args["outcomes"] = {k: float(v) for k, v in outcomes.items()}
    if "realism" in data:
        if not isinstance(data["realism"], dict):
            raise ConfigError("realism must be a JSON object")
        args["realism"] = parse_realism(data["realism"], base)
    return {"provider": provider, **args}
