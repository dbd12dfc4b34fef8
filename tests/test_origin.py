"""Which addresses count as loopback for the token-less API."""

from __future__ import annotations

import pytest

from receiver.api.origin import is_loopback


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 loopback written by a dual-stack proxy
        ("localhost", True),
        ("203.0.113.7", False),
        ("::ffff:203.0.113.7", False),
        ("10.0.0.1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_is_loopback(address: str | None, expected: bool) -> None:
    assert is_loopback(address) is expected
