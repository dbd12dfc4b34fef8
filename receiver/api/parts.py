"""A registration's `parts` (a multipart message: receiver.store.parts), checked in one place:
the provider's ids of its segments, in order, under the app's message id (or the first
segment's id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.api.errors import ApiError
from receiver.schemas import CONFLICTS, MAX_PART_ID_LENGTH, MAX_PARTS

__all__ = ["CONFLICTS", "MAX_PARTS", "MAX_PART_ID_LENGTH", "parts_field"]


def parts_field(item: Mapping[str, Any], index: int, message_id: str) -> tuple[str, ...] | None:
    """The registration's parts (None: a message of one part), or the ApiError saying why not."""
    value = item.get("parts")
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(
            400,
            "invalid_parts",
            "parts must be a list of the provider's ids of the message's segments",
            index=index,
            field="parts",
        )
    if not value:
        raise ApiError(
            400, "parts_empty", "parts must name at least one part", index=index, field="parts"
        )
    if len(value) > MAX_PARTS:
        raise ApiError(
            400,
            "too_many_parts",
            f"at most {MAX_PARTS} parts per message",
            index=index,
            field="parts",
            limit=MAX_PARTS,
        )
    parts: list[str] = []
    for position, part in enumerate(value):
        if not isinstance(part, str) or not part.strip() or len(part) > MAX_PART_ID_LENGTH:
            raise ApiError(
                400,
                "invalid_parts",
                f"each part must be a non-empty string of at most {MAX_PART_ID_LENGTH} characters",
                index=index,
                field="parts",
                position=position,
            )
        parts.append(part.strip())
    seen: set[str] = set()
    for position, part in enumerate(parts):
        if part in seen:
            raise ApiError(
                400,
                "duplicate_parts",
                f"part {part!r} is named twice",
                index=index,
                field="parts",
                position=position,
            )
        seen.add(part)
    if message_id in seen and parts[0] != message_id:
        # The message's id is the app's own, or its first part's: never a later part's.
        raise ApiError(
            400,
            "part_is_message_id",
            "message_id may be the first part's id, never another part's: "
            f"{message_id!r} is part {parts.index(message_id) + 1} of {len(parts)}",
            index=index,
            field="parts",
            position=parts.index(message_id),
        )
    return tuple(parts)
