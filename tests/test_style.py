"""Whole-codebase rules of the developer guide, read from the source with ast: no function over 60 lines in the
library and the apps, type hints on every argument of the library's public functions, and the library's ten packages
importing only those before them in data-flow order."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _functions(tree: ast.AST):
    return (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def test_no_function_is_longer_than_60_lines():
    """A function's length runs from its `def` line to its last line, docstring and blank lines included."""
    offenders = [
        f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} is {fn.end_lineno - fn.lineno + 1} lines"
        for path in _sources("sde_diffusion", "experiments")
        for fn in _functions(ast.parse(path.read_text(), str(path)))
        if fn.end_lineno - fn.lineno + 1 > MAX_LINES
    ]
    assert not offenders, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(offenders)


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _unhinted(scope: ast.AST, is_class: bool = False):
    """(function, [arguments without a hint]) for every public function and method of a public class in `scope`."""
    for node in ast.iter_child_nodes(scope):
        if isinstance(node, ast.ClassDef) and _public(node.name):
            yield from _unhinted(node, is_class=True)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            a = node.args
            args = a.posonlyargs + a.args + a.kwonlyargs + [v for v in (a.vararg, a.kwarg) if v is not None]
            if is_class and args and args[0].arg in ("self", "cls"):
                args = args[1:]
            missing = [arg.arg for arg in args if arg.annotation is None]
            if missing:
                yield node, missing


def test_public_functions_of_the_library_hint_every_argument():
    offenders = [
        f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}: {', '.join(missing)}"
        for path in _sources("sde_diffusion")
        if not path.name.startswith("_") or path.name == "__init__.py"
        for fn, missing in _unhinted(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, "public functions with arguments lacking a type hint:\n" + "\n".join(offenders)


def test_the_checks_see_a_long_function_and_a_missing_hint():
    """The two rules catch what they are for, so an empty offender list means something."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"def long(a: int):\n{body}\n\nclass C:\n    def m(self, b, c: int): ...\n")
    assert [fn.end_lineno - fn.lineno + 1 for fn in _functions(tree)] == [MAX_LINES + 1, 1]
    assert [(fn.name, missing) for fn, missing in _unhinted(tree)] == [("m", ["b"])]


# The library's packages in data-flow order: each imports only the packages before it (and itself).
LAYERS = ("core", "infra", "data", "models", "objectives", "likelihood", "sampling", "training", "evaluation", "apps")


def _imported_packages(source: str, package: list[str]) -> set[str]:
    """The library packages that a module of `package` (e.g. ["sde_diffusion", "core"]) imports, relative imports
    resolved from its package; a name imported from the top level comes from core (its re-exports)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sde_diffusion"):
            target = node.module.split(".")
        else:
            continue
        if len(target) == 1:
            found |= {a.name if a.name in LAYERS else "core" for a in node.names}
        else:
            found.add(target[1])
    return found


def test_the_top_level_is_ten_packages_and_no_import_runs_back_up():
    top = sorted(p.name for p in (ROOT / "sde_diffusion").iterdir() if p.name != "__pycache__")
    assert top == sorted([*LAYERS, "__init__.py"]), top
    upward = [
        f"{path.relative_to(ROOT)} ({pkg}) imports {other}"
        for pkg in LAYERS
        for path in (ROOT / "sde_diffusion" / pkg).rglob("*.py")
        for other in _imported_packages(
            path.read_text(), ["sde_diffusion", *path.relative_to(ROOT / "sde_diffusion").parts[:-1]]
        )
        if other in LAYERS and LAYERS.index(other) > LAYERS.index(pkg)
    ]
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    """Relative and absolute imports of a sub-package's module resolve to the packages they name."""
    source = "from ...evaluation import x\nfrom .. import sample\nfrom sde_diffusion.infra.tracking import T\n"
    assert _imported_packages(source, ["sde_diffusion", "sampling", "guidance"]) == {"evaluation", "sampling", "infra"}
    assert _imported_packages("from .. import VPSDE, training\n", ["sde_diffusion", "data"]) == {"core", "training"}
