"""rolepool's imports point one way, as ../shared/DESIGN.md lays them out:
`cli -> evals -> agents -> runtime -> pools, tools -> core`, with `zoo` beside `pools` (pools may
load zoo checkpoints by name; zoo imports nothing above tools) and `heap` and `cli_args` (the
argparse types every layer's command uses), leaves like core.

Every import counts, also one inside a function or under `TYPE_CHECKING`: a lazy import still
makes the importer depend on the imported module, and moving an import into a function is how a
cycle hides. A new top-level part must be placed in `MAY_IMPORT` on purpose."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import rolepool

TOP = "rolepool"  # the package itself: rolepool/__init__.py, the public SDK's re-exports
_BELOW_AGENTS = {"runtime", "pools", "tools", "zoo", "heap", "cli_args", "core"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "heap": set(),
    "cli_args": set(),
    "tools": {"cli_args", "core"},
    "zoo": {"tools", "heap", "cli_args", "core"},
    "pools": {"tools", "zoo", "heap", "cli_args", "core"},
    "runtime": {"pools", "tools", "zoo", "heap", "cli_args", "core"},
    "agents": _BELOW_AGENTS,
    "evals": {"agents", *_BELOW_AGENTS},
    TOP: {"evals", "agents", *_BELOW_AGENTS},
    "cli": {TOP, "evals", "agents", *_BELOW_AGENTS},
}
"""For each top-level part of the package (a sub-package or a module), the parts it may import."""

Graph = dict[str, set[str]]


def _module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: for `from m import x`, `m.x` (a submodule
    or a name in `m`) as well as `m`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path) -> Graph:
    """Each module under the package at `root` -> the package's modules it imports, anywhere."""
    modules = _module_names(root)

    def resolve(name: str) -> str | None:  # the module that defines `name`
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                targets.update(resolve(n) for n in _imported(node, module, is_package))
        graph[module] = targets - {None, module}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def part(module: str) -> str:
    """`rolepool.pools.compute` -> `pools`; the package itself -> `rolepool`."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def wrong_way(graph: Graph, may_import: dict[str, set[str]]) -> list[str]:
    """Imports between parts that `may_import` does not allow, and parts it does not place."""
    problems = []
    for module, targets in sorted(graph.items()):
        if part(module) not in may_import:
            problems.append(f"{module}: part {part(module)!r} has no place in the import order")
            continue
        for target in sorted(targets):
            if part(target) != part(module) and part(target) not in may_import[part(module)]:
                problems.append(f"{module} imports {target}")
    return problems


ROOT = Path(rolepool.__file__).parent


def test_no_module_is_on_an_import_cycle():
    assert cycles(import_graph(ROOT)) == []


def test_parts_import_only_in_the_designed_direction():
    assert wrong_way(import_graph(ROOT), MAY_IMPORT) == []


def test_the_designed_direction_is_itself_one_way():
    assert cycles(MAY_IMPORT) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "rolepool"


def test_the_checks_see_lazy_cycles_relative_imports_and_wrong_directions(tmp_path):
    package = _write(
        tmp_path,
        {
            "rolepool/__init__.py": "",
            "rolepool/pools/__init__.py": "from .compute import tune\n",
            "rolepool/pools/compute.py": "import os\n\ndef tune(): pass\n",
            "rolepool/pools/worker.py": "def load():\n    from rolepool.zoo import train\n",
            "rolepool/zoo/__init__.py": "",
            "rolepool/zoo/train.py": "from ..pools import worker\n",
            "rolepool/extra.py": "",
        },
    )
    graph = import_graph(package)
    assert graph["rolepool.pools"] == {"rolepool.pools.compute"}
    assert cycles(graph) == [["rolepool.pools.worker", "rolepool.zoo.train"]]
    assert wrong_way(graph, MAY_IMPORT) == [
        "rolepool.extra: part 'extra' has no place in the import order",
        "rolepool.zoo.train imports rolepool.pools.worker",
    ]


INSTALLED_WITH = {"pydantic_core": "pydantic"}
"""Modules that come with a declared distribution, pinned by it to the exact version it needs."""


def _declared() -> set[str]:
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    return {
        _normalise(re.match(r"[\w.-]+", req).group()) for req in project["dependencies"] + extras
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared_imports(root: Path, declared: set[str]) -> list[str]:
    """Third-party modules imported under `root` whose distribution pyproject.toml does not list
    (a dependency that only arrives through another one can vanish with its next release)."""
    distributions = importlib.metadata.packages_distributions()
    missing = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top in sys.stdlib_module_names or top == root.name:
                    continue
                top = INSTALLED_WITH.get(top, top)
                candidates = {_normalise(d) for d in distributions.get(top, [top])}
                if not candidates & declared:
                    missing.add(f"{top} ({path.relative_to(root.parent)})")
    return sorted(missing)


def test_every_third_party_import_is_declared():
    assert undeclared_imports(ROOT, _declared()) == []


def test_an_undeclared_import_is_reported(tmp_path):
    package = _write(tmp_path, {"rolepool/__init__.py": "import json\n\nimport tqdm\n"})
    assert undeclared_imports(package, {"anyio"}) == ["tqdm (rolepool/__init__.py)"]
    assert undeclared_imports(package, {"tqdm"}) == []
