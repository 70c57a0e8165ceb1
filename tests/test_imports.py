"""The package's import graph: every module imports on its own, and the imports form no cycle.

Which imports count: every import that can run, at module level or inside a function. A module-level cycle
makes the result depend on which module a caller happens to import first (a half-initialised module, an
``ImportError`` for a name not yet defined); a cycle through a function-level (lazy) import is a loop in the
design, two modules that each need the other, even though it cannot fail at import time. Imports inside
functions are still how the package keeps torch and the models off ``hsidenoise --help``; they just have to
point down the graph too. Imports under ``if TYPE_CHECKING:`` count as well: they never run, but a type that
two modules each take from the other is the same loop in the design (the shared type belongs in a module of its
own, as :mod:`hsidenoise.training.config` holds ``TrainConfig``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hsidenoise"


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (packages by their ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement may load: the module, and for ``from m import x`` also ``m.x``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or node.module is None:
        raise AssertionError(f"relative import at line {node.lineno}: the package uses absolute imports only")
    return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, at module level, inside its functions or under
    ``if TYPE_CHECKING:`` (type-only imports count). Importing ``a.b.c`` also runs the packages
    ``a`` and ``a.b``; those that contain ``module`` are running already and are not edges for that reason
    alone, but they are when ``module`` takes a name from them (``from hsidenoise.io import open_cube`` inside
    ``hsidenoise.io.convert`` depends on the package's ``__init__``), unlike a submodule
    (``from hsidenoise.io import base``).
    """
    ancestors = {".".join(module.split(".")[:depth]) for depth in range(1, module.count(".") + 1)}
    if path.name == "__init__.py":
        ancestors.add(module)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported_names(child):
                    parts = name.split(".")
                    for depth in range(1, len(parts) + 1):
                        target = ".".join(parts[:depth])
                        if target in modules and target != module and target not in ancestors:
                            found.add(target)
                named = [alias.name for alias in child.names] if isinstance(child, ast.Import) else []
                if isinstance(child, ast.ImportFrom) and any(
                    f"{child.module}.{alias.name}" not in modules for alias in child.names
                ):
                    named.append(child.module or "")
                found.update(name for name in named if name in ancestors and name != module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None when it has none (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_every_module_imports_in_a_fresh_interpreter_in_sorted_order() -> None:
    """One fresh interpreter imports them all in sorted order (``__main__`` is the entry point: it runs the CLI)."""
    modules = sorted(name for name in module_files() if not name.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert sys.modules[name] is module, name\n"
        "print('imported', len(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def test_imports_form_no_cycle() -> None:
    """No cycle among the package's imports, function-level (lazy) and type-only ones included."""
    modules = module_files()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_and_counts_every_import(tmp_path: Path) -> None:
    """The check above can fail: a loop is found, and module-level, function-level, guarded and type-only
    imports are edges; a package above the module is not, unless a name is taken from it.
    """
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    modules = module_files()
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from hsidenoise.errors import ConfigError\n"
        "if TYPE_CHECKING:\n"
        "    from hsidenoise.methods import build_method\n"
        "def later():\n"
        "    from hsidenoise.denoise import denoise\n"
        "try:\n"
        "    import hsidenoise.subspace.config\n"
        "except ImportError:\n"
        "    pass\n",
        encoding="utf-8",
    )
    assert imports_of("hsidenoise.m", source, modules) == {
        "hsidenoise.errors",
        "hsidenoise.methods",
        "hsidenoise.denoise",
        "hsidenoise.subspace",
        "hsidenoise.subspace.config",
    }
    inside = tmp_path / "inside.py"
    inside.write_text("from hsidenoise.io import base\ndef later():\n    from hsidenoise.io import open_cube\n")
    assert imports_of("hsidenoise.io.inside", inside, modules) == {"hsidenoise.io.base", "hsidenoise.io"}
    inside.write_text("from hsidenoise.io import base, formats\n")
    assert imports_of("hsidenoise.io.inside", inside, modules) == {"hsidenoise.io.base", "hsidenoise.io.formats"}
