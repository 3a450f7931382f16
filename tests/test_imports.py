"""The shape of python/lcfast, read statically (ast, nothing imported): its import graph has no
circle, and no function takes more than 10 positional parameters (Triton kernels aside: a kernel's
parameter list is its launch signature, and `@triton.jit` has no keyword-only parameters).

An edge A → B is any import of B written in A: at module level, under `if TYPE_CHECKING:` and
inside functions alike. The project imports torch, triton and pandas inside functions on purpose
(`lcfast --help` must not pay for them), but a function-local import between two lcfast modules
is still a dependency: a circle through one only hides until both are needed. A name taken from
a package's lazy re-export table (`_LAZY`, resolved by lcfast/_lazy.py on first use: `from lcfast
import TokenShard`) is an edge to the module the table names; any other name from a package
(`from lcfast import __version__`) an edge to the package. Not an edge: the implicit import of a
module's parent packages (every submodule has one; a package that re-exports its parts would
otherwise always be a circle), and anything outside lcfast.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PKG = ROOT / "python" / "lcfast"
MAX_POSITIONAL = 10


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every .py module of lcfast (a package: its __init__.py)."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _owner(name: str, known: set[str]) -> str | None:
    """The longest module of `known` that `name` is or lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def lazy_table(path: Path) -> dict[str, str]:
    """The `_LAZY` table (public name → module) of a package's __init__.py, or {}."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imported(mod: str, path: Path, known: set[str], lazy: dict[str, dict[str, str]]) -> set[str]:
    """The lcfast modules that `mod` imports anywhere in its file (see the module docstring);
    `lazy`: package → its lazy table."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for a in node.names:  # the submodule pkg.name, the module of a lazy name, else pkg
                sub = f"{base}.{a.name}"
                names.append(sub if sub in known else lazy.get(base, {}).get(a.name, base))
    out = {_owner(n, known) for n in names if n == "lcfast" or n.startswith("lcfast.")}
    return {m for m in out if m is not None and m != mod}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    # compiled modules (the Rust extension) are leaves of the graph
    known = set(files) | {f"lcfast.{p.name.split('.')[0]}" for p in PKG.glob("*.so")} | {"lcfast._core"}
    lazy = {m: lazy_table(p) for m, p in files.items() if p.name == "__init__.py"}
    return {m: imported(m, p, known, lazy) for m, p in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_checker_sees_a_circle_through_each_kind_of_import(tmp_path):
    """The checker itself: a circle closed by a TYPE_CHECKING import, a function-local import or a
    lazy table is found; a chain is not a circle."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    src = {
        "lcfast.p.x": "from lcfast.p.y import Y\n",
        "lcfast.p.y": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lcfast.p.x import X\n",
        "lcfast.p.z": "def f():\n    from lcfast.p import x\n",
        "lcfast.p.w": "from lcfast.q import Z, __version__\n",
    }
    known = set(src) | {"lcfast.p", "lcfast.q"}
    graph = {}
    for mod, text in src.items():
        (tmp_path / "m.py").write_text(text, encoding="utf-8")
        graph[mod] = imported(mod, tmp_path / "m.py", known, {"lcfast.q": {"Z": "lcfast.p.z"}})
    assert graph["lcfast.p.y"] == {"lcfast.p.x"} and graph["lcfast.p.z"] == {"lcfast.p.x"}
    assert graph["lcfast.p.w"] == {"lcfast.p.z", "lcfast.q"}
    graph["lcfast.p.x"] |= {"lcfast.p.w"}  # x → w → (lazy Z) z → x
    assert circles(graph) == [["lcfast.p.w", "lcfast.p.x", "lcfast.p.y", "lcfast.p.z"]]


def test_lcfast_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "lcfast.pipeline.collect.run" in graph  # the walk found the package
    assert "lcfast.pipeline.collect.options" in graph["lcfast.pipeline.collect.passes"]
    assert circles(graph) == []


def positional_parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters a caller may pass by position (self/cls included; *args not counted)."""
    return len(fn.args.posonlyargs) + len(fn.args.args)


def is_triton_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(ast.unparse(d).split("(")[0] in ("triton.jit", "jit") for d in fn.decorator_list)


def test_no_function_takes_more_than_ten_positional_parameters():
    """Past ten, a call site is a row of values matched to names by position: pass them by keyword
    (after a `*`) or as a record."""
    assert positional_parameters(ast.parse("def f(a, b, /, c, *d, e): pass").body[0]) == 3
    assert is_triton_kernel(ast.parse("@triton.jit\ndef k(a): pass").body[0])
    over = []
    for mod, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_triton_kernel(node):
                n = positional_parameters(node)
                if n > MAX_POSITIONAL:
                    over.append(f"{mod}:{node.lineno} {node.name} ({n})")
    assert over == []
