"""The shape of the code: modules, import depth and cycles per package, the largest modules and functions,
and the `duplicates` pair count. Every import counts, also those inside functions and under TYPE_CHECKING,
since each is a dependency a reader has to follow.

    python benchmarks/structure.py [--root DIR] [--check-cycles gui,cli]

With --check-cycles it prints only the cycles of the named packages and exits 1 when any has one
(`make check-structure`).
"""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

TOP = ("engine", "cli", "gui")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect(root: Path) -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    modules = {}
    for top in TOP:
        for path in sorted((root / top).rglob("*.py")):
            modules[module_name(root, path)] = path
    return modules


def resolve(modules: dict[str, Path], name: str, package: str, node: ast.AST) -> list[str]:
    """The project's modules one import statement reaches (a `from pkg import sub` reaches pkg.sub)."""
    targets = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                targets.append(alias.name)
        return targets
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = package.split(".")
        base = base[: len(base) - node.level + 1]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        if sub in modules:
            targets.append(sub)
        elif origin in modules:
            targets.append(origin)
    return targets


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in resolve(modules, name, package, node) if t != name)
        graph[name] = edges
    return graph


def strongly_connected(nodes: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of the graph restricted to `nodes` (iterative: no recursion limit)."""
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start] & inside)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & inside))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                components.append(sorted(component))
    return components


def depth(nodes: list[str], graph: dict[str, set[str]]) -> int:
    """The longest chain of imports inside the package, a cycle counted as one step."""
    components = strongly_connected(nodes, graph)
    owner = {m: i for i, c in enumerate(components) for m in c}
    memo: dict[int, int] = {}
    # Tarjan yields components in reverse topological order: successors come first.
    for i, component in enumerate(components):
        successors = {owner[t] for m in component for t in graph[m] if t in owner and owner[t] != i}
        memo[i] = max((memo[s] + 1 for s in successors), default=0)
    return max(memo.values(), default=0)


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def packages(modules: dict[str, Path]) -> list[str]:
    """The three top packages and every subpackage (a folder with an __init__.py)."""
    return sorted({n for n, p in modules.items() if p.name == "__init__.py"})


def members(modules: dict[str, Path], package: str) -> list[str]:
    return sorted(n for n in modules if n == package or n.startswith(package + "."))


def duplicates_pairs(root: Path) -> str:
    if shutil.which("duplicates") is None:
        return "n/a (no `duplicates` on PATH)"
    out = subprocess.run(["duplicates", "--repo", str(root), "--seconds", "120"], capture_output=True,
                         text=True, cwd=root).stdout
    first = out.splitlines()[0] if out else ""
    match = re.search(r"(\d+) pairs?", first)
    return match.group(1) if match else first or "no output"


def report(root: Path) -> int:
    modules = collect(root)
    graph = import_graph(modules)
    print(f"# structure of {root}")
    print(f"{'package':24} {'modules':>7} {'lines':>6} {'depth':>5} {'cycles':>6}  files in cycles")
    for package in packages(modules):
        names = members(modules, package)
        lines = sum(len(modules[n].read_text().splitlines()) for n in names)
        cycles = [c for c in strongly_connected(names, graph) if len(c) > 1]
        in_cycles = "; ".join(f"{len(c)}: " + ", ".join(m.removeprefix(package + ".") for m in c) for c in cycles)
        print(f"{package:24} {len(names):7} {lines:6} {depth(names, graph):5} {len(cycles):6}  {in_cycles}")
    for top in TOP:
        names = members(modules, top)
        sizes = sorted(((len(modules[n].read_text().splitlines()), n) for n in names), reverse=True)[:10]
        funcs = sorted(((size, f"{n}:{f}") for n in names for size, f in functions(modules[n])), reverse=True)[:10]
        print(f"\n## {top}: the 10 largest modules (lines)")
        for size, name in sizes:
            print(f"  {size:5}  {name}")
        print(f"## {top}: the 10 largest functions (lines)")
        for size, name in funcs:
            print(f"  {size:5}  {name}")
    print(f"\nduplicates pairs (whole tree, `duplicates --repo {root}`): {duplicates_pairs(root)}")
    return 0


def check_cycles(root: Path, names: list[str]) -> int:
    modules = collect(root)
    graph = import_graph(modules)
    failed = 0
    for package in names:
        cycles = [c for c in strongly_connected(members(modules, package), graph) if len(c) > 1]
        for cycle in cycles:
            print(f"import cycle in {package}/: {' <-> '.join(cycle)}", file=sys.stderr)
        failed += len(cycles)
        if not cycles:
            print(f"{package}/: no import cycle (function-level and TYPE_CHECKING imports counted)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--check-cycles", metavar="PACKAGES", help="comma-separated top packages, e.g. gui,cli")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.check_cycles:
        return check_cycles(root, args.check_cycles.split(","))
    return report(root)


if __name__ == "__main__":
    sys.exit(main())
