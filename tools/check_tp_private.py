"""Fail when a file outside engine/tp_compat.py touches a private torch-pruning name (run by `make test`).

    .venv/bin/python tools/check_tp_private.py [FILE_OR_FOLDER ...]   # default: the whole repository

torch-pruning's private names are read from its installed sources (every `_name` it defines as a class,
function, module-level name or attribute). A file is flagged, with the line, for:
- importing a private name or module from torch_pruning (`from torch_pruning.ops import _ConcatOp`);
- an attribute chain from a torch_pruning module it imported with a private step (`tp.ops._ConcatOp`);
- `x._name` or `getattr(x, "_name")` with one of torch-pruning's private names, unless the file itself
  defines that name (its own attribute or function of the same spelling);
- a method of that name in a class with a base (an override of torch-pruning's private hook).
Exit status 1 with one line per finding, 0 when clean.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {Path("engine/tp_compat.py")}  # the one place torch-pruning's private API is used
SKIPPED = {".venv", "build", "dist", "runs", "node_modules", "__pycache__"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def torch_pruning_private_names() -> set[str]:
    """Every private name the installed torch-pruning defines."""
    spec = importlib.util.find_spec("torch_pruning")  # its sources, without importing it (and torch)
    if spec is None or not spec.origin:
        raise SystemExit("torch-pruning is not installed here: run the check with the project's environment")
    names: set[str] = set()
    for source in Path(spec.origin).parent.rglob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
    return {n for n in names if _private(n)}


def _own_names(tree: ast.AST) -> set[str]:
    """Names the file defines itself: functions, classes and attributes it assigns."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not _in_subclass(node):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    return own


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _in_subclass(func: ast.AST) -> bool:
    """Whether `func` is a method of a class with a base (which may be torch-pruning's)."""
    parent = getattr(func, "_check_parent", None)
    return isinstance(parent, ast.ClassDef) and bool(parent.bases)


def _chain(node: ast.Attribute) -> tuple[str | None, list[str]]:
    """(root name, attribute steps) of `a.b.c`; root None when it does not start at a name."""
    steps = []
    while isinstance(node, ast.Attribute):
        steps.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), steps[::-1]


def check_source(text: str, path: str, private: set[str]) -> list[str]:
    """One line per private torch-pruning name `text` touches."""
    tree = ast.parse(text, filename=path)
    for child, parent in _parents(tree).items():
        child._check_parent = parent
    aliases: set[str] = set()  # names bound to torch_pruning modules or objects
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch_pruning":
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append((node.lineno, f"imports {alias.name}"))
                    aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch_pruning":
            if any(_private(p) for p in node.module.split(".")):
                found.append((node.lineno, f"imports from {node.module}"))
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"imports {node.module}.{alias.name}"))
                aliases.add(alias.asname or alias.name)
    own = _own_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root, steps = _chain(node)
            if root in aliases:  # the whole chain once, from its outermost step
                if any(_private(s) for s in steps) and not isinstance(node._check_parent, ast.Attribute):
                    found.append((node.lineno, f"{root}.{'.'.join(steps)}"))
            elif node.attr in private and node.attr not in own:
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in private \
                and _in_subclass(node):
            found.append((node.lineno, f"overrides {node.name}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in private \
                and node.args[1].value not in own:
            found.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
    return [f"{path}:{line}: {what}: a private torch-pruning name; use (or add) a function in engine/tp_compat.py"
            for line, what in sorted(set(found))]


def python_files(paths: list[Path]) -> list[Path]:
    """The .py files under `paths`, leaving out environments, build output and hidden folders."""
    files = []
    for path in paths:
        if path.is_file():
            files.append(path)
            continue
        for folder, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".")]
            files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files)


def main(argv: list[str]) -> int:
    private = torch_pruning_private_names()
    findings = []
    for file in python_files([Path(a).resolve() for a in argv] or [ROOT]):
        relative = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        if relative in ALLOWED:
            continue
        findings += check_source(file.read_text(encoding="utf-8"), str(relative), private)
    for line in findings:
        print(line, file=sys.stderr)
    if findings:
        print(f"{len(findings)} use(s) of torch-pruning's private API outside engine/tp_compat.py", file=sys.stderr)
        return 1
    print("torch-pruning's private API: used only in engine/tp_compat.py")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
