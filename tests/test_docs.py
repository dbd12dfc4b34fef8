"""README.md and docs/ stay true to the code: the two commands, CI, the mapping, status and
metrics tables, every endpoint, and examples that do not go stale."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from receiver.app import create_app
from receiver.engine import RANK, Outcome, Status
from receiver.metrics import Metrics
from receiver.providers import mesms, telecom23
from receiver.providers.twilio import STATUS_MAP
from receiver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250


def section(title: str, page: str = "README.md") -> str:
    """The text under a heading of `page` (relative to the repository root), up to the next
    heading of the same or a higher level."""
    level = len(title) - len(title.lstrip("#"))
    lines: list[str] = []
    inside = in_fence = False
    for line in (ROOT / page).read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = not in_fence and re.match(r"(#+) ", line)
        if heading and inside and len(heading.group(1)) <= level:
            break
        if inside:
            lines.append(line)
        inside = inside or line == title
    assert inside, f"no heading {title!r} in {page}"
    return "\n".join(lines)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)


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


def test_readme_is_a_short_front_door_that_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)(?:#[^)]*)?\)", readme))
    assert linked == {f"docs/{page.name}" for page in DOCS.glob("*.md")}
    for title in ("## Quick start", "## Demo", "## An end-to-end example"):
        assert section(title).strip()


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_each_docs_page_has_one_title_then_the_readers_task(page: Path) -> None:
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert [line for line in strip_code(page.read_text()) if line.startswith("# ")] == [lines[0]]
    assert lines[1] == "" and lines[2] and not lines[2].startswith(("#", "|", "```", "-"))


def strip_code(text: str) -> list[str]:
    """The lines of `text` outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_hold_no_fixed_dates(page: Path) -> None:
    """A fixed sent_at (or since) in an example goes stale: a message registered with one is
    given up a few days later. Examples compute times, or leave them out."""
    for block in code_blocks(page.read_text()):
        assert not re.search(r"\b20\d\d-\d\d-\d\d", block), block


def test_twilio_mapping_table_matches_the_adapter() -> None:
    table = section("## Twilio", "docs/providers.md")
    rows = re.findall(r"^\| (`[a-z_`, ]+`) \| `([a-z]+)` \|$", table, re.M)
    documented = {
        raw: canonical for raws, canonical in rows for raw in re.findall(r"`([a-z_]+)`", raws)
    }
    assert documented == {raw: status.value for raw, status in STATUS_MAP.items()}


@pytest.mark.parametrize(
    ("title", "table"),
    [("## 23 Telecom", telecom23.STATUS_MAP), ("## me-sms", mesms.STATUS_MAP)],
)
def test_provider_mapping_tables_match_the_adapters(
    title: str, table: Mapping[str, Status]
) -> None:
    documented = {}
    text = section(title, "docs/providers.md")
    for raws, canonical in re.findall(r"^\| (`[^|]+`) \| `([a-z]+)` \|$", text, re.M):
        for raw in re.findall(r"`([^`]+)`", raws):
            documented[raw] = canonical
    assert documented == {raw: status.value for raw, status in table.items()}


def test_status_table_lists_every_status_with_its_rank() -> None:
    table = section("## The status model", "docs/integrate.md")
    documented: dict[str, int] = {}
    for rank, statuses in re.findall(r"^\| (\d) \| (.+?) \|", table, re.M):
        for name in re.findall(r"`([a-z]+)`", statuses):
            documented[name] = int(rank)
    assert documented == {status.value: rank for status, rank in RANK.items()}
    assert set(documented) == {s.value for s in Status}


def test_outcome_table_lists_every_outcome() -> None:
    table = section("## The status model", "docs/integrate.md")
    documented = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| [^|]+ \|$", table, re.M)
    assert sorted(documented) == sorted(o.value for o in Outcome)


def test_metrics_table_matches_the_registry() -> None:
    """Every metric the service exports is in the table, with its type and labels."""
    metrics = Metrics(["twilio"])
    # Every labelled series made, so each family shows its label names.
    metrics.start_poll_series(["twilio"])
    metrics.set_poll_due({"twilio": 0})
    metrics.rejected("twilio", 400, "missing_field")
    exported = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        exported[name] = (family.type, labels)
    documented = {}
    for name, kind, labels in re.findall(
        r"^\| `(receiver_[a-z_]+)` \| ([a-z]+) \|([^|]*)\|",
        section("## Metrics", "docs/operate.md"),
        re.M,
    ):
        documented[name] = (kind, set(re.findall(r"`([a-z_]+)`", labels)))
    assert documented == exported


def test_api_page_documents_every_route(tmp_path: Path) -> None:
    """Each route of the app is named in docs/api.md: `METHOD /path`, and the callback paths
    in the table of callback routes."""
    app = create_app(Settings.from_env({"RECEIVER_DATABASE": str(tmp_path / "receiver.db")}))
    api = (DOCS / "api.md").read_text()
    callbacks = section("## `POST /v1/webhook/...`: provider callbacks", "docs/api.md")
    seen = set()
    for route in app.routes:
        path = re.sub(r":\w+\}", "}", getattr(route, "path", "")).rstrip("/") or "/"
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            seen.add((method, path))
    assert seen
    for method, path in seen:
        if path.startswith("/v1/webhook/"):
            written = re.sub(r"\{(\w+)\}", r"<\1>", path)  # /dlr/{token} is /dlr/<token>
            assert f"`{written}`" in callbacks, path
        else:
            assert f"`{method} {path}`" in api, (method, path)


def test_settings_page_lists_each_setting_once() -> None:
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", (DOCS / "settings.md").read_text(), re.M)
    assert len(rows) == len(set(rows))
    assert set(rows) == set(Settings().env_names())


def test_deploy_page_names_every_deploy_file() -> None:
    text = (DOCS / "deploy.md").read_text()
    for path in (ROOT / "deploy").iterdir():
        if path.name != "README.md":
            assert f"deploy/{path.name}" in text, path.name


SCALING = "one instance per sqlite file; several instances need postgresql."


@pytest.mark.parametrize(
    "page", ["docs/deploy.md", "docs/polling.md", "docs/operate.md", "docs/postgresql.md"]
)
def test_scaling_is_said_one_way(page: str) -> None:
    """Each page that says how many instances may run says it in the same words, and a leased
    `poll --once` job beside one instance is named where cron sweeps are."""
    text = " ".join((ROOT / page).read_text().split()).lower()
    assert SCALING in text
    if page != "docs/postgresql.md":
        assert "receiver poll --once" in text


@pytest.mark.parametrize(
    "path",
    [*PAGES, ROOT / "deploy" / "README.md", *(ROOT / "deploy").glob("*.y*ml"), ROOT / "app.json"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_page_says_postgresql_is_still_to_come(path: Path) -> None:
    """Said before the PostgreSQL store, these would now contradict the statement above."""
    flat = " ".join(path.read_text().split()).lower()
    for stale in (
        "not supported yet",
        "does not support yet",
        "is planned",
        "store is planned",
        "not available yet",
        "instances sharing",
        "exactly one instance per",
        "trial only",
    ):
        assert stale not in flat, stale
