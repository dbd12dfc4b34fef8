"""Tests for receiver.providers.form: parse_form is parse_qs(keep_blank_values=True,
max_num_fields=n), field for field, on whatever a caller may send."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.providers.form import parse_form

# Characters that mean something to a form body, and some that need decoding.
PIECES = st.sampled_from(
    [
        *("&", "=", "+", "%", "%2B", "%2b", "2B", "%20", "%zz", "%C3%A9", "%C3", "%ff"),
        *("a", "B", "é", ";", " ", "~"),
    ]
)


def expected(text: str, max_fields: int) -> dict[str, list[str]] | str:
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:
        return "ValueError"


def got(text: str, max_fields: int) -> dict[str, list[str]] | str:
    try:
        return parse_form(text, max_fields)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a=1",
        "a=1&a=2&b=",
        "a&b=&=c&&",
        "To=%2B15550001&From=+15017122661&Body=caf%C3%A9+au+lait",
        "To=%2B1555%2B0001&From=%2b1501&Body=%2B+%2B%20&%2B=%2",
        "bad=%zz%&utf=%ff&k%20ey=v%3Dw",
        "a=1;b=2",
        "MessageSid=SM1&MessageStatus=delivered&ErrorCode=",
    ],
)
def test_parse_form_matches_parse_qs_on_examples(text: str) -> None:
    assert got(text, 200) == expected(text, 200)


def test_parse_form_refuses_more_fields_than_the_limit_as_parse_qs_does() -> None:
    assert got("a=1&b=2&c=3", 2) == expected("a=1&b=2&c=3", 2) == "ValueError"
    assert got("a=1&b=2", 2) == expected("a=1&b=2", 2)
    assert got("&&&", 3) == expected("&&&", 3) == "ValueError"


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(PIECES, max_size=30).map("".join), st.integers(min_value=1, max_value=12))
def test_parse_form_matches_parse_qs_on_anything(text: str, max_fields: int) -> None:
    """Same dict (names, values, their order) or the same refusal, for any text."""
    assert got(text, max_fields) == expected(text, max_fields)
    result = got(text, max_fields)
    if isinstance(result, dict):
        assert list(result) == list(expected(text, max_fields))  # type: ignore[arg-type]
