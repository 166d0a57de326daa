"""The house qremote lives in, held to its plan (docs/LAYOUT.md): no import cycle, no
import that runs upwards (commands above the daemon, the daemon above the delivery, the
delivery above the capabilities), function-local imports only where start-up needs them
and marked so, and a map that names every module."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).parent.parent
PACKAGE = ROOT / "qremote"
LAYERS = ["qremote.cli", "qremote.daemon", "qremote.delivery"]
"""Top first: a module may import its own layer and those below, never one above."""


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: pathlib.Path) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    """Every import of a qremote module in ``path``, with the module it names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qremote"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node, t) for t in [node.module, *names] if t in MODULES]
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name in MODULES]
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {t for _, t in _imports(path) if t != name and not name.startswith(t + ".")}
    return graph


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _layer(name: str) -> int:
    for rank, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return rank
    return len(LAYERS)


def test_no_import_runs_upwards():
    upward = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        if _layer(target) < _layer(name)
    ]
    assert upward == []


def test_function_local_imports_are_marked_as_start_up():
    """An import inside a function hides structure unless it is there to keep start-up
    short; those say so in a ``# start-up:`` comment above their group."""
    unmarked = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for node, _ in _imports(path):
            if node.col_offset == 0:
                continue
            if "# start-up:" in lines[node.lineno - 1]:
                continue
            above = node.lineno - 2
            while above >= 0 and (
                not lines[above].strip() or lines[above].lstrip().startswith(("from ", "import "))
            ):
                above -= 1  # the rest of the group (and blank lines) up to what introduces it
            said = lines[above].strip() if above >= 0 else ""
            if not (said.startswith("# start-up:") or said.startswith("if TYPE_CHECKING")):
                unmarked.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert sorted(set(unmarked)) == []


def test_the_map_names_every_module():
    layout = (ROOT / "docs" / "LAYOUT.md").read_text()
    missing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and f"`{path.relative_to(PACKAGE)}`" not in layout
    ]
    assert missing == []
