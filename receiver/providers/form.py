"""Form bodies (application/x-www-form-urlencoded) parsed on the callback path, fast.

`parse_form(text, n)` is exactly `urllib.parse.parse_qs(text, keep_blank_values=True,
max_num_fields=n)` (tests/test_form.py checks it against the standard library), at a third of
its cost: a field with no '%' or '+' (most of a status callback) is taken as it is, rather
than through `unquote` and its re-split, and one whose only escape is a phone number's "+"
(%2B: To and From) has it replaced.
"""

from __future__ import annotations

from urllib.parse import unquote


def _decoded(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" in text:
        if text.count("%") == text.count("%2B"):
            return text.replace("%2B", "+")  # as unquote would, at a fraction of its cost
        text = unquote(text)  # utf-8, errors="replace", as parse_qs decodes
    return text


def parse_form(text: str, max_fields: int) -> dict[str, list[str]]:
    """Each name's values in arrival order; blank values kept; ValueError past `max_fields`."""
    if not text:
        return {}
    if text.count("&") + 1 > max_fields:
        raise ValueError("Max number of fields exceeded")
    found: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")  # a name with no '=' has a blank value
        if "%" in pair or "+" in pair:
            name = _decoded(name)
            value = _decoded(value)
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    return found
