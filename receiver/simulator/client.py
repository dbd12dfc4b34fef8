"""A small synchronous client for the simulator's control API, for the tests and the demo."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx


class SimulatorError(RuntimeError):
    """The control API refused a request; the message is its error text."""


class SimulatorClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    # Where the receiver's status clients should point (TWILIO_API_BASE and friends).
    @property
    def twilio_api_base(self) -> str:
        return self.base_url

    @property
    def telecom23_api_base(self) -> str:
        return self.base_url + "/api/v1"

    @property
    def mesms_api_base(self) -> str:
        return self.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SimulatorError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/config")
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the configuration (keys as in POST /_sim/config); returns all of it."""
        result: dict[str, Any] = self._call("POST", "/_sim/config", json=changes)
        return result

    def point_at_receiver(
        self,
        receiver_url: str,
        *,
        providers: Iterable[str] = ("twilio",),
        standard_sources: Mapping[str, str] | None = None,
        api_token: str | None = None,
    ) -> dict[str, Any]:
        """Send each provider's callbacks to a receiver at `receiver_url`.

        telecom23 and me-sms callback URLs carry a signed token, asked of the receiver
        (GET /v1/callback-url); standard sources are given as {source: whsec secret}.
        """
        receiver_url = receiver_url.rstrip("/")
        callbacks: dict[str, str] = {}
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        for provider in providers:
            if provider == "twilio":
                callbacks[provider] = receiver_url + "/v1/webhook/twilio/sms-status"
                continue
            response = httpx.get(
                receiver_url + "/v1/callback-url",
                params={"provider": provider},
                headers=headers,
                timeout=10,
            )
            response.raise_for_status()
            callbacks[provider] = response.json()["url"]
        sources = {
            name: {"url": f"{receiver_url}/v1/webhook/standard/{name}", "secret": secret}
            for name, secret in (standard_sources or {}).items()
        }
        return self.configure(callbacks=callbacks, standard_sources=sources)

    def create_messages(
        self,
        provider: str,
        count: int = 1,
        *,
        to: Sequence[str] | None = None,
        sender: str | None = None,
        body: str | None = None,
        outcomes: Mapping[str, float] | None = None,
        realism: Mapping[str, Any] | None = None,
        source: str | None = None,
        status_provider: str | None = None,
        per_send: int | None = None,
        callback_url: str | None = None,
        account: str | None = None,
        segments: int | None = None,
    ) -> list[str]:
        """Make messages as if sent through the provider now; returns their message ids.

        `account`: twilio only, the simulated subaccount's SID to send from it. `segments`:
        each message sent as this many segments, each with its id (the ids come per
        recipient, in order) and its own fate: a multipart message."""
        fields = {
            "to": list(to) if to is not None else None,
            "from": sender,
            "body": body,
            "outcomes": dict(outcomes) if outcomes is not None else None,
            "realism": dict(realism) if realism is not None else None,
            "source": source,
            "status_provider": status_provider,
            "per_send": per_send,
            "callback_url": callback_url,
            "account": account,
            "segments": segments,
        }
        payload = {"provider": provider, "count": count}
        payload |= {k: v for k, v in fields.items() if v is not None}
        ids: list[str] = self._call("POST", "/_sim/messages", json=payload)["message_ids"]
        return ids

    def messages(self, **filters: str) -> list[dict[str, Any]]:
        """Every message (filters: provider, source, send_id), with its final status."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/messages", params=filters)[
            "messages"
        ]
        return result

    def message(self, message_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/_sim/messages/{message_id}")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def fault(self, provider: str, kind: str, **params: Any) -> dict[str, Any]:
        """Inject a fault: kind rate_limit (count, retry_after), outage (count or seconds,
        status), unauthorized (until cleared) or clear."""
        result: dict[str, Any] = self._call(
            "POST", "/_sim/faults", json={"provider": provider, "kind": kind, **params}
        )
        return result

    def clear_faults(self, provider: str | None = None) -> None:
        payload = {"kind": "clear"} | ({"provider": provider} if provider else {})
        self._call("POST", "/_sim/faults", json=payload)

    def reset(self, seed: int | None = None) -> None:
        self._call("POST", "/_sim/reset", json={} if seed is None else {"seed": seed})

    def wait_idle(self, timeout: float = 30.0, interval: float = 0.02) -> dict[str, Any]:
        """Wait until every planned push is delivered or given up; returns the stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["pending"] == 0 and stats["in_flight"] == 0:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator still has {stats['pending']} pushes pending")
            time.sleep(interval)
