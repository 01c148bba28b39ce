"""The fence: the rooms of DESIGN §2 and their doors, read from the source (AST only, nothing imported).

Three rules, each failing with the offending file and line:

- a room imports only the rooms the table below allows (``ALLOWED``); every import counts, at module
  level, inside functions and under ``TYPE_CHECKING`` alike, because a lazy import is still a dependency;
- no import cycle between modules (same counting);
- nothing in ``api/`` imports ``sdfleet.store`` except ``api/app.py``, the one place that builds the store
  and the services: routes call services in ``jobs/``.

To let a new room in, add it to ``ALLOWED`` with the rooms it may use, and say why in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "sdfleet"

# room → the rooms it may import (a room is a top-level module or package of sdfleet).
LEAVES: dict[str, set[str]] = {
    "errors": set(),
    "validation": {"errors"},
    "domain": {"errors", "validation"},
    "config": {"errors", "validation"},
    "netguard": {"errors"},
    "filehash": set(),  # a file's sha256 and its .sha256 sidecar: the engine, the model cache and blobs share it
    "specs": {"domain", "errors", "validation"},
    "wire": {"domain", "errors", "specs", "validation"},
}
ALLOWED: dict[str, set[str]] = {
    **LEAVES,
    "a1111": {"domain", "errors", "specs", "validation"},
    # the model-free ControlNet preprocessors (numpy/OpenCV, no torch): the engine runs them inline, the job
    # service in the API process for /controlnet/detect
    "annotators": {"errors", "specs"},
    "blobs": {"errors", "filehash"},
    "store": {"domain", "errors", "specs"},
    "jobs": {
        "a1111",
        "annotators",
        "blobs",
        "config",
        "domain",
        "errors",
        "netguard",
        "specs",
        "store",
        "validation",
        "wire",
    },
    "api": {
        "a1111",
        "blobs",
        "config",
        "domain",
        "errors",
        "jobs",
        "netguard",
        "specs",
        "store",
        "validation",
        "wire",
    },
    "engine": {"a1111", "annotators", "domain", "errors", "filehash", "specs"},
    "models": {"domain", "errors", "filehash", "netguard", "wire"},
    "training": {"domain", "engine", "errors", "specs"},
    "worker": {"config", "domain", "engine", "errors", "models", "netguard", "specs", "training", "wire"},
    "demo": {"domain", "engine", "errors", "specs", "training"},
    # test fixtures for tests, benchmarks and demos: tiny models (engine) and a live orchestrator in a thread
    # (testing/server.py: api, config) — nothing in the product imports testing
    "testing": {"api", "config", "domain", "engine", "errors", "specs", "training"},
    "bench": {"errors"},  # the load generator talks to the public HTTP API only
    "autoscale": {"domain", "errors"},  # scaling policy and providers; its inputs come through a protocol
    "ui": set(),
    # composition roots: they wire everything together
    "cli": {"*"},
    "supervise": {"*"},
    "__main__": {"*"},
    "__init__": set(),
}
STORE_DOOR = "sdfleet/api/app.py"  # the only module of api/ that may import sdfleet.store


@dataclass(frozen=True)
class Edge:
    """One import: from module ``source`` (file ``path``, line ``line``) of module ``target``."""

    source: str
    target: str
    path: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The module an imported dotted name stands for: itself, or the longest module prefix
    (``from sdfleet.store import SqlStore`` → ``sdfleet.store``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, text: str | None = None) -> Iterator[Edge]:
    """The imports of one module (``text`` stands in for the file's source when given)."""
    source = path.read_text(encoding="utf-8") if text is None else text
    tree = ast.parse(source, filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = str(path.relative_to(SRC))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        for name in names:
            if not name.startswith("sdfleet"):
                continue
            target = resolve(name)
            if target is not None and target != module:
                yield Edge(module, target, rel, node.lineno)


EDGES = [edge for module, path in sorted(MODULES.items()) for edge in imports_of(module, path)]


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_is_in_the_table() -> None:
    missing = sorted({room(m) for m in MODULES} - set(ALLOWED))
    assert not missing, (
        f"rooms with no entry in ALLOWED (add them, with the rooms they may import): {missing}"
    )


def test_rooms_import_only_what_the_table_allows() -> None:
    wrong = [
        f"{e.path}:{e.line}: {room(e.source)} imports {e.target}"
        for e in EDGES
        if room(e.source) != room(e.target)
        and "*" not in ALLOWED.get(room(e.source), set())
        and room(e.target) not in ALLOWED.get(room(e.source), set()) | {"__init__"}  # the version string
    ]
    assert not wrong, "imports the rooms table forbids:\n" + "\n".join(wrong)


def test_only_create_app_builds_the_store() -> None:
    wrong = [
        f"{e.path}:{e.line}: imports {e.target}"
        for e in EDGES
        if room(e.source) == "api" and room(e.target) == "store" and e.path != STORE_DOOR
    ]
    assert not wrong, "api/ must reach the store through jobs/ services:\n" + "\n".join(wrong)


def store_reads_in(path: Path) -> list[int]:
    """Lines where ``path`` reaches for a ``.store`` attribute of something (``ctx.store.read(…)``,
    ``ctx.jobs.store``); a call of a method named so (``inputs.store()``, which writes images) is not one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}  # ``inputs.store()`` is a verb
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr == "store" and id(n) not in called
    ]


def test_routes_hold_no_store() -> None:
    """Routes call services: no module of api/ outside create_app's reads a ``.store`` attribute."""
    wrong = [
        f"{path.relative_to(SRC)}:{line}"
        for module, path in sorted(MODULES.items())
        if room(module) == "api" and str(path.relative_to(SRC)) != STORE_DOOR
        for line in store_reads_in(path)
    ]
    assert not wrong, "api/ reaches a store around the services:\n" + "\n".join(wrong)


def test_the_store_finder_sees_a_route_holding_the_store(tmp_path: Path) -> None:
    route = tmp_path / "route.py"
    route.write_text(
        "async def f(ctx, inputs):\n    await inputs.store()\n    return await ctx.store.read(lambda tx: tx.list_workers())\n"
    )
    assert store_reads_in(route) == [3]


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(EDGES)
    described = []
    for members in cycles:
        inside = sorted(
            {
                f"  {e.path}:{e.line} → {e.target}"
                for e in EDGES
                if e.source in members and e.target in members
            }
        )
        described.append(" ↔ ".join(members) + "\n" + "\n".join(inside))
    assert not cycles, "import cycles:\n" + "\n".join(described)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("import sdfleet.store.sql\n", "api/routes/jobs.py"),
        ("from sdfleet.api.app import create_app\n", "jobs/service.py"),
        ("def f() -> None:\n    from sdfleet.training import trainer\n", "wire.py"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sdfleet.worker import runner\n",
            "engine/base.py",
        ),
    ],
)
def test_the_fence_catches_a_forbidden_import(source: str, where: str) -> None:
    """The rules are not vacuous: a forbidden import planted in a real module is reported."""
    path = PACKAGE / where
    [planted] = imports_of(module_name(path), path, text=source)
    src_room, dst_room = room(planted.source), room(planted.target)
    assert dst_room not in ALLOWED[src_room] or (src_room == "api" and dst_room == "store")


def test_the_cycle_finder_sees_a_cycle() -> None:
    planted = [
        Edge("a", "b", "a.py", 1),
        Edge("b", "c", "b.py", 1),
        Edge("c", "a", "c.py", 1),
        Edge("c", "d", "c.py", 2),
    ]
    assert find_cycles(planted) == [["a", "b", "c"]]
