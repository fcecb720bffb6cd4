"""The layers hold: every import in the code, including those inside functions, points down, and no two modules
import each other (directly or round a longer loop).

    loop  ->  generator  ->  judge | trainer  ->  prefloop

judge and trainer are siblings: neither imports the other. ``prefloop/__main__.py`` is the program's entry
point (a script nothing imports) and may start the application.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANK = {"prefloop": 0, "judge": 1, "trainer": 1, "generator": 2, "loop": 3}
ENTRY_POINTS = {"prefloop/__main__.py"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (annotations only: never executed)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, type-checking only)`` for every import statement anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _type_checking_lines(tree)
    here = module_name(path).split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, node.lineno in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                base = here[: len(here) - node.level + (1 if path.name == "__init__.py" else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from pkg import mod` may name a submodule: count both the package and pkg.mod
            out.append((name, node.lineno, node.lineno in typing_only))
            out += [(f"{name}.{alias.name}", node.lineno, node.lineno in typing_only) for alias in node.names]
    return out


def our_files() -> list[Path]:
    return sorted(p for pkg in RANK for p in (ROOT / pkg).rglob("*.py"))


def upward_edges() -> list[str]:
    bad: dict[tuple[str, int], str] = {}
    for path in our_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ENTRY_POINTS:
            continue
        mine = rel.split("/")[0]
        allowed = ", ".join(p for p, r in RANK.items() if r < RANK[mine]) or "nothing of ours"
        for name, line, _ in imports(path):
            top = name.split(".")[0]
            if top in RANK and top != mine and RANK[top] >= RANK[mine]:
                bad.setdefault((rel, line), f"{rel}:{line} imports {name} ({mine} may import: {allowed})")
    return sorted(bad.values())


def module_cycles() -> list[list[str]]:
    """Import cycles between our modules (type-checking-only imports left out: they never run)."""
    modules = {module_name(p): p for p in our_files()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        if path.relative_to(ROOT).as_posix() in ENTRY_POINTS:
            continue
        for name, _, typing_only in imports(path):
            if not typing_only and name in modules and name != mod and not mod.startswith(name + "."):
                graph[mod].add(name)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_every_import_points_down_the_layers():
    assert upward_edges() == []


def test_no_import_cycles():
    assert module_cycles() == []


def test_the_walk_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The check would catch today's kind of edge: a foundation module importing a stage inside a function."""
    fake = ROOT / "prefloop" / "_layers_probe.py"
    fake.write_text("def f():\n    from judge.evaluate import evaluate\n    return evaluate\n")
    try:
        assert any("prefloop/_layers_probe.py:2 imports judge.evaluate" in e for e in upward_edges())
    finally:
        fake.unlink()


@pytest.mark.parametrize("pkg", sorted(RANK))
def test_each_layer_says_what_it_may_import(pkg):
    doc = ast.get_docstring(ast.parse((ROOT / pkg / "__init__.py").read_text(encoding="utf-8"))) or ""
    assert "may import" in doc, f"{pkg}/__init__.py: its docstring should say what the package may import"
