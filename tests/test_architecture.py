"""The import direction of ``ARCHITECTURE.md``, read from the code with ``ast``.

Every import of a ``tumor_det`` module counts: module level, inside functions, and under
``if TYPE_CHECKING:``. A subpackage may import only from the layers below it (and itself); no
two modules may import each other, directly or through others; only ``compat`` patches other
libraries' modules (``sys.modules``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tumor_det"

#: Bottom to top, as ARCHITECTURE.md lists them: each imports only from the layers before it.
LAYERS = [
    {"compat", "_C_fallback", "utils"},  # foundations
    {"modeling"},
    {"config"},
    {"io"},
    {"data"},
    {"checkpoint"},
    {"evaluation"},
    {"engine"},
    {"inference"},
    {"export"},
    {"splash"},
    {"report"},
    {"cli"},
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``tumor_det`` module ``path`` imports (``from X import y`` counts ``X.y`` when that
    is a module, else ``X``); ``import tumor_det`` alone means ``tumor_det.compat`` (what it
    runs)."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == "tumor_det":
                target = "tumor_det.compat"
            if target.startswith("tumor_det."):
                found.add(target)
    return found


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def subpackage(module: str) -> str:
    return module.split(".")[1]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_has_a_layer():
    names = {subpackage(m) for m in graph() if m != "tumor_det"}
    assert names <= set(LAYER), f"add {sorted(names - set(LAYER))} to LAYERS and ARCHITECTURE.md"


def test_no_import_from_a_higher_layer():
    wrong = []
    for module, targets in graph().items():
        if module == "tumor_det":  # the package's lazy re-exports: the top, by definition
            continue
        for target in targets:
            if LAYER[subpackage(target)] > LAYER[subpackage(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports from a higher layer:\n" + "\n".join(sorted(wrong))


def test_no_package_circle():
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if module != "tumor_det":
            edges.setdefault(subpackage(module), set()).update(
                subpackage(t) for t in targets if subpackage(t) != subpackage(module))
    assert_acyclic(edges)


def test_no_module_circle():
    assert_acyclic({m: {t for t in ts if t != m} for m, ts in graph().items()
                    if m != "tumor_det"})


def assert_acyclic(edges: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(
                    [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_only_compat_patches_modules():
    """``sys.modules[...] = ...`` (putting a module in place of another) only in ``compat``."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if module_name(path) == "tumor_det.compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.Delete):
                for target in node.targets:
                    if (isinstance(target, ast.Subscript)
                            and ast.unparse(target.value) == "sys.modules"):
                        wrong.append(f"{module_name(path)}:{node.lineno}")
    assert not wrong, f"patching sys.modules outside tumor_det.compat: {wrong}"
