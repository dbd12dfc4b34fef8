"""README.md stays true to the code: the two commands, CI, the mapping tables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from receiver.engine import RANK, Status
from receiver.providers import mesms, telecom23
from receiver.providers.twilio import STATUS_MAP

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    level = len(title) - len(title.lstrip("#"))
    lines: list[str] = []
    inside = in_fence = False
    for line in README.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = not in_fence and re.match(r"(#+) ", line)
        if heading and inside and len(heading.group(1)) <= level:
            break
        if inside:
            lines.append(line)
        inside = inside or line == title
    return "\n".join(lines)


def test_quick_start_gives_the_run_and_test_commands_and_ci_runs_the_test_one() -> None:
    commands = re.findall(r"```sh\n#[^\n]*\n([^\n]+)\n```", section("## Quick start"))
    assert len(commands) == 2
    run, test = commands
    assert run.endswith("receiver serve")
    assert "pytest" in test
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci[-1] == test


def test_twilio_mapping_table_matches_the_adapter() -> None:
    rows = re.findall(r"^\| (`[a-z_`, ]+`) \| `([a-z]+)` \|$", section("### Twilio"), re.M)
    documented = {
        raw: canonical for raws, canonical in rows for raw in re.findall(r"`([a-z_]+)`", raws)
    }
    assert documented == {raw: status.value for raw, status in STATUS_MAP.items()}


@pytest.mark.parametrize(
    ("title", "table"),
    [("### 23 Telecom", telecom23.STATUS_MAP), ("### me-sms", mesms.STATUS_MAP)],
)
def test_provider_mapping_tables_match_the_adapters(
    title: str, table: Mapping[str, Status]
) -> None:
    documented = {}
    for raws, canonical in re.findall(r"^\| (`[^|]+`) \| `([a-z]+)` \|$", section(title), re.M):
        for raw in re.findall(r"`([^`]+)`", raws):
            documented[raw] = canonical
    assert documented == {raw: status.value for raw, status in table.items()}


def test_status_table_lists_every_status_with_its_rank() -> None:
    table = section("### The status model")
    documented: dict[str, int] = {}
    for rank, statuses in re.findall(r"^\| (\d) \| (.+?) \|", table, re.M):
        for name in re.findall(r"`([a-z]+)`", statuses):
            documented[name] = int(rank)
    assert documented == {status.value: rank for status, rank in RANK.items()}
    assert set(documented) == {s.value for s in Status}
