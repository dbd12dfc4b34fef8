"""The data of a change as apps receive it: the stream's `data:` and a push's `data`, built in
one place so the two say the same thing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from receiver.engine import is_final
from receiver.schemas import ChangeData

# The fields, in order: what an app may rely on (declared in receiver/schemas.py's ChangeData).
DATA_FIELDS = tuple(field.encode_name for field in msgspec.structs.fields(ChangeData))


def change_data(row: Mapping[str, Any]) -> dict[str, Any]:
    """The data of one change from a row with the messages table's column names (`to_number`,
    `metadata` as JSON text or a dict) plus `previous_status`: `status` is the status the
    change left the message in; `final_via` and `final_at` only go with a final one."""
    status = row["status"]
    final = is_final(status)
    metadata = row["metadata"]
    if isinstance(metadata, str):
        metadata = json.loads(metadata) if metadata else None
    return {
        "provider": row["provider"],
        "message_id": row["message_id"],
        "status": status,
        "previous_status": row["previous_status"],
        "provider_status": row["provider_status"],
        "error_code": row["error_code"],
        "final": final,
        "final_via": row["final_via"] if final else None,
        "to": row["to_number"],
        "account": row["account"],
        "metadata": metadata or None,
        "sent_at": row["sent_at"],
        "final_at": row["final_at"] if final else None,
    }
