"""What the code accepts, read from its source text instead of importing it.

Config validation must answer in well under a second, before torch or Lightning are imported
(importing them alone takes seconds). So the choices a constructor accepts (``HARD_RULES`` in
``hardneg/losses/sct.py``) and the keyword arguments a ``_target_`` takes are read here with
``ast`` from the files Python would import: the code stays the one place that defines them,
and the schema cannot drift from it.

Everything here answers ``None`` ("don't know") rather than guess when the source is not plain
enough to read (dynamic exports, C extensions); callers then skip the check.
"""
from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

_MAX_HOPS = 8  # re-export chains followed (lightning.Trainer -> lightning.pytorch -> ...trainer.trainer)


@cache
def module_file(module: str) -> Path | None:
    """The source file of a dotted module, found without executing any package ``__init__``."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: finds, imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin and not rest:
        return Path(spec.origin) if spec.origin.endswith(".py") else None
    else:
        return None
    path = base.joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _absolute(module: str, node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` (file ``path``) names."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def top_level_names(module: str) -> set[str] | None:
    """Names a module defines or imports at top level; ``None`` if it exports dynamically."""
    path = module_file(module)
    tree = _parse(path) if path else None
    if tree is None:
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    if "__getattr__" in names:  # module-level __getattr__: anything may exist
        return None
    return names


def _find_class(module: str, name: str, hops: int = 0) -> tuple[str, ast.ClassDef] | None:
    """(defining module, class node) of ``module.name``, following ``from x import name``."""
    path = module_file(module)
    tree = _parse(path) if path else None
    if tree is None or hops > _MAX_HOPS:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _find_class(_absolute(module, node, path), alias.name, hops + 1)
        elif isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b as name` names a module, not a class
                if alias.asname == name:
                    return None
    # A submodule of that name (``pkg.sub`` given as pkg + sub) is not a class either.
    return None


def _base_name(module: str, cls: ast.ClassDef, base: ast.expr) -> tuple[str, str] | None:
    """(module, name) a base class expression refers to, if it is a plain imported/local name."""
    if isinstance(base, ast.Name):
        path = module_file(module)
        tree = _parse(path) if path else None
        for node in tree.body if tree else ():
            if isinstance(node, ast.ClassDef) and node.name == base.id:
                return module, base.id
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == base.id:
                        return _absolute(module, node, path), alias.name
    return None


def _init_arguments(cls: ast.ClassDef) -> tuple[set[str], bool] | None:
    """(keyword names of ``__init__``, whether it takes ``**kwargs``); None without an ``__init__``."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]} - {"self"}
            return names, args.kwarg is not None
    return None


def _dataclass_fields(cls: ast.ClassDef) -> set[str] | None:
    decorated = any(
        (isinstance(d, ast.Name) and d.id == "dataclass")
        or (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", "")) == "dataclass")
        or (isinstance(d, ast.Attribute) and d.attr == "dataclass")
        for d in cls.decorator_list
    )
    if not decorated:
        return None
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


@cache
def constructor_keywords(target: str) -> frozenset[str] | None:
    """The keyword arguments ``instantiate`` may pass to ``target`` (a dotted class path).

    Follows ``**kwargs`` into base classes; ``None`` when that cannot be read from source
    (the caller then accepts any key).
    """
    module, _, name = target.rpartition(".")
    found = _find_class(module, name) if module else None
    if found is None:
        return None
    return _class_keywords(*found, hops=0)


def _class_keywords(module: str, cls: ast.ClassDef, hops: int) -> frozenset[str] | None:
    if hops > _MAX_HOPS:
        return None
    fields = _dataclass_fields(cls)
    if fields is not None:
        return frozenset(fields)
    init = _init_arguments(cls)
    if init is not None and not init[1]:
        return frozenset(init[0])
    own = init[0] if init else set()
    # No __init__ of its own, or **kwargs forwarded: the (first) base class decides the rest.
    for base in cls.bases:
        ref = _base_name(module, cls, base)
        found = _find_class(*ref) if ref else None
        if found is None:
            return None
        inherited = _class_keywords(*found, hops=hops + 1)
        return None if inherited is None else frozenset(own | inherited)
    return frozenset(own) if init is not None else frozenset()


def target_exists(target: str) -> bool | None:
    """Whether ``module.Name`` is defined (True/False), or None when the source can't tell."""
    module, _, name = target.rpartition(".")
    if not module:
        return False
    if module_file(module) is None:
        parent_names = top_level_names(module.rpartition(".")[0]) if "." in module else None
        return None if parent_names is None else False
    names = top_level_names(module)
    if names is None:
        return None
    return name in names or module_file(f"{module}.{name}") is not None


def code_constant(module: str, name: str) -> tuple[str, ...] | None:
    """The string choices a module defines as ``NAME = ("a", "b")`` or ``NAME = {"a": ..., ...}``;
    None when the constant is gone (the check is then skipped at run time, and
    tests/test_validate.py, which checks each constant the schema names, fails)."""
    path = module_file(module)
    tree = _parse(path) if path else None
    for node in tree.body if tree else ():
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            if isinstance(node.value, ast.Dict) and not node.value.keys:  # a registry filled by decorators
                return _registered_names(tree, name)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value
            try:
                if isinstance(value, (ast.Tuple, ast.List, ast.Set)):
                    return tuple(ast.literal_eval(e) for e in value.elts)
                if isinstance(value, ast.Dict):
                    return tuple(ast.literal_eval(k) for k in value.keys if k is not None)
            except ValueError:  # not literals
                return None
    return None


def _registered_names(tree: ast.Module, registry: str) -> tuple[str, ...] | None:
    """Names registered into ``registry = {}`` by decorators of the same module:
    ``@register("name")`` where ``register`` is a module function that mentions ``registry``."""
    registrars = {
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(n, ast.Name) and n.id == registry for n in ast.walk(node))
    }
    names = []
    for node in tree.body:
        for decorator in getattr(node, "decorator_list", ()):
            if (
                isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
                and decorator.func.id in registrars and decorator.args
                and isinstance(decorator.args[0], ast.Constant) and isinstance(decorator.args[0].value, str)
            ):
                names.append(decorator.args[0].value)
    return tuple(names) or None
