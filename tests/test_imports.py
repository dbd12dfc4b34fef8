"""receiver's imports flow one way: no module imports, however indirectly, one that imports it.

Every import counts, at module level or inside a function, under TYPE_CHECKING or not: a
function-level import that closes a circle is the same circle in hiding. Importing a.b.c also
runs the package a.b's __init__ first, so it counts as importing a.b as well (unless the
importer sits inside a.b: a package's own modules run while it is being imported).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "receiver"


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of receiver/: its dotted name, file, and whether it is a package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _ancestors(name: str) -> Iterator[str]:
    while "." in name:
        name = name.rpartition(".")[0]
        yield name


def imports(name: str, path: Path, is_package: bool, known: set[str]) -> dict[str, int]:
    """The receiver modules `name` imports, each with the line of its first import."""
    here = name if is_package else name.rpartition(".")[0]
    targets: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:  # `from a.b import name`: name is not a module
            target = target.rpartition(".")[0]
        if not target:
            return
        own = {name, *_ancestors(name)}
        for module in (target, *_ancestors(target)):
            if module not in own:
                targets.setdefault(module, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base, node.lineno)
    return targets


def import_graph() -> dict[str, dict[str, int]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, pkg, known) for name, (path, pkg) in found.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """The strongly connected groups of more than one module (Tarjan), each with one circle
    through the group: a → b → ... → a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(group, _one_circle(graph, set(group), group[0])) for group in groups]


def _one_circle(graph: dict[str, dict[str, int]], group: set[str], start: str) -> list[str]:
    """A shortest path from `start` back to itself inside the group."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return [*paths[v], start]
            if w in group and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError("a strongly connected group always holds a circle")


def _say(graph: dict[str, dict[str, int]], circle: list[str]) -> str:
    return " → ".join(
        f"{a} (line {graph[a][b]})" if b else a
        for a, b in zip(circle, [*circle[1:], None], strict=True)
    )


def test_receiver_imports_have_no_circle() -> None:
    """Each tangle is named: its modules, and one circle through them with the line of every
    import in it."""
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(
        f"{len(group)} modules ({', '.join(group)}), one circle: {_say(graph, circle)}"
        for group, circle in found
    )


def test_the_walk_sees_function_level_and_type_checking_imports() -> None:
    """The walk itself: a circle closed inside a function or under TYPE_CHECKING is found."""
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 9}, "d": {"a": 1}}
    assert circles(graph) == [(["a", "b", "c"], ["a", "b", "c", "a"])]
    assert _say(graph, ["a", "b", "c", "a"]) == "a (line 3) → b (line 5) → c (line 9) → a"
    found = modules()
    edges = imports("receiver.app", *found["receiver.app"], set(found))
    assert "receiver.settings" in edges and "receiver.api" in edges  # the package, too
    # receiver/__init__.py imports the app inside a function (lazily), and the store only
    # under TYPE_CHECKING elsewhere: both are edges.
    assert "receiver.app" in imports("receiver", *found["receiver"], set(found))


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("receiver.engine", "receiver.env"),
        ("receiver.env", "receiver.store"),
        ("receiver.schemas", "receiver.store"),
        ("receiver.schemas", "receiver.api"),
        ("receiver.store", "receiver.providers"),
        ("receiver.store.base", "receiver.settings"),
        ("receiver.providers", "receiver.polling"),
        ("receiver.polling", "receiver.settings"),
        ("receiver.polling.twilio", "receiver.settings"),
        ("receiver.settings", "receiver.polling.scheduler"),
        ("receiver.settings", "receiver.api"),
        ("receiver.api.webhooks", "receiver.app"),
        ("receiver.app", "receiver.cli"),
    ],
)
def test_layers_flow_one_way(lower: str, upper: str) -> None:
    """The layers, bottom up: the engine and the value readers; the store's contract; the
    adapters; the status clients; the settings that compose them; the scheduler, the API and
    the app; the CLI. Nothing a lower module imports, however indirectly, is of a higher layer
    (a package counts as its __init__.py)."""
    graph = import_graph()
    reached = set()
    todo = [lower]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(graph[module])
    assert not {m for m in reached if m == upper or m.startswith(f"{upper}.")}, (
        f"{lower} reaches {upper}"
    )


def test_standard_knows_every_other_adapter() -> None:
    """The Standard Webhooks adapter lists the other adapters itself (it sits beside them, under
    the registry): a new adapter must join its list too."""
    from receiver.providers import REGISTRY
    from receiver.providers.standard import OTHER_PROVIDERS, StandardProvider

    assert {cls.name for cls in OTHER_PROVIDERS} | {StandardProvider.name} == set(REGISTRY)
