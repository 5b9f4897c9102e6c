"""Where a dotted name is defined in the installed packages, found by reading their files with
`ast`: nothing is imported.

The site shows some 250 excerpts of TRL's source and 60 tables of its config fields. Finding
them by importing TRL (and with it torch, transformers and datasets) took 7 of the strict build's
15 seconds; reading the files takes a fraction of one. The reader follows what those names need
and nothing more: module files, `from x import y` (TRL's lazy `__init__` files list theirs under
`if TYPE_CHECKING:`), a class's bases in Python's method resolution order, and dataclass fields
whose defaults are literals. Anything else raises SourceError rather than guess; the tests check
every citation on the site against the imported object.
"""

import ast
import functools
import gc
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class SourceError(ValueError):
    """A name that does not resolve in the installed packages."""


@dataclass(frozen=True)
class Found:
    module: str  # the dotted module the definition lives in
    file: Path
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None  # None: the module

    @property
    def path(self) -> str:
        """The file as its package names it: "trl/trainer/sft_trainer.py"."""
        depth = self.module.count(".") + 1 + (self.file.name == "__init__.py")
        return "/".join(self.file.parts[-depth:])

    def lines(self) -> tuple[list[str], int]:
        """The definition's source lines (decorators included) and the first one's number."""
        text = self.file.read_text(encoding="utf-8").splitlines(keepends=True)
        if self.node is None:
            return text, 1
        first = min([self.node.lineno] + [d.lineno for d in self.node.decorator_list])
        return text[first - 1 : self.node.end_lineno], first


@functools.cache
def module_file(module: str) -> Path | None:
    """The file of a module, found as the import system would: a package before a module."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: finding it runs none of its code
    if spec is None or not (spec.origin or "").endswith(".py"):  # none, or compiled: no source
        return None
    path = Path(spec.origin)
    for part in rest:
        folder = path.parent
        if path.name != "__init__.py":
            return None
        path = next(
            (p for p in (folder / part / "__init__.py", folder / f"{part}.py") if p.is_file()), None
        )
        if path is None:
            return None
    return path


def parse(file: Path) -> ast.Module:
    """The file's syntax tree, parsed again when the file changes (`mkdocs serve` while one of
    our trainers is edited)."""
    return parse_version(file, file.stat().st_mtime_ns)


@functools.cache
def parse_version(file: Path, mtime_ns: int) -> ast.Module:
    """The tree without the bodies of its functions: the lookups need only the definitions'
    names and spans, and the whole trees (240,000 nodes for the site's 49 files) kept alive for
    the build made every later garbage collection walk them."""
    collecting = gc.isenabled()
    gc.disable()  # a parse makes thousands of objects and no garbage: collecting finds nothing
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    finally:
        if collecting:
            gc.enable()
    for stmt in statements(tree.body):
        for node in [stmt, *(stmt.body if isinstance(stmt, ast.ClassDef) else [])]:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.body = []
    return tree


def statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A body's statements, with those inside `if`/`try`/`with` blocks (TYPE_CHECKING imports,
    optional dependencies) in source order."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            yield from statements(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from statements(stmt.body + stmt.orelse + stmt.finalbody)
            for handler in stmt.handlers:
                yield from statements(handler.body)
        elif isinstance(stmt, ast.With):
            yield from statements(stmt.body)


def absolute(module: str, file: Path, target: str | None, level: int) -> str:
    """The module a `from <level dots><target> import ...` in `module` refers to."""
    if level == 0:
        return target or ""
    package = module.split(".")
    package = package if file.name == "__init__.py" else package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def locate(dotted: str) -> Found:
    """The definition `dotted` names: the longest prefix that is a module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        if file := module_file(module):
            found = Found(module, file, None)
            for j in range(i, len(parts)):
                found = member(found, parts[j], ".".join(parts[:j]))
            return found
    raise SourceError(f"no module in {dotted!r}")


def member(found: Found, name: str, where: str) -> Found:
    if found.node is None:
        return module_member(found.module, found.file, name)
    if isinstance(found.node, ast.ClassDef):
        # The class's own body first: its bases are followed only for an inherited name.
        if own := own_member(found, name):
            return own
        for cls in method_resolution_order(found)[1:]:
            if inherited := own_member(cls, name):
                return inherited
    raise SourceError(f"{where} has no def or class {name!r} (its own or inherited)")


def own_member(cls: Found, name: str) -> Found | None:
    for stmt in statements(cls.node.body):
        # The first def: a property's getter comes before its setter.
        if isinstance(stmt, DEFINITIONS) and stmt.name == name:
            return Found(cls.module, cls.file, stmt)
    return None


def module_member(module: str, file: Path, name: str) -> Found:
    """A module-level def or class, following the imports that bind `name` in the module."""
    for stmt in statements(parse(file).body):
        if isinstance(stmt, DEFINITIONS) and stmt.name == name:
            return Found(module, file, stmt)
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if (alias.asname or alias.name) == name:
                    source = absolute(module, file, stmt.module, stmt.level)
                    if source == module:  # `from . import name` in a package: its submodule
                        return module_found(f"{module}.{alias.name}")
                    return attribute_or_submodule(source, alias.name)
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname == name:  # import a.b as name
                    return module_found(alias.name)
                if not alias.asname and alias.name.split(".")[0] == name:  # import name.b
                    return module_found(name)
    raise SourceError(f"{module} has no def, class or import named {name!r}")


def attribute_or_submodule(module: str, name: str) -> Found:
    """`from module import name`: an attribute of the module, else its submodule."""
    file = module_file(module)
    if file is None:
        raise SourceError(f"no module {module!r}")
    try:
        return module_member(module, file, name)
    except SourceError:
        return module_found(f"{module}.{name}")


def module_found(module: str) -> Found:
    if file := module_file(module):
        return Found(module, file, None)
    raise SourceError(f"no module {module!r}")


def base_classes(found: Found) -> list[Found]:
    bases = []
    for expr in found.node.bases:
        if isinstance(expr, ast.Subscript):  # Generic[T], ...
            expr = expr.value
        if isinstance(expr, ast.Name) and expr.id == "object":
            continue
        dotted = ast.unparse(expr)
        head, *attributes = dotted.split(".")
        base = module_member(found.module, found.file, head)
        for attribute in attributes:
            base = member(base, attribute, dotted)
        if not isinstance(base.node, ast.ClassDef):
            raise SourceError(f"the base {dotted} of {found.node.name} is not a class")
        bases.append(base)
    return bases


@functools.cache
def method_resolution_order(found: Found) -> list[Found]:
    """Python's C3 linearisation of a class and its bases (`object` left out)."""
    orders = [method_resolution_order(base) for base in base_classes(found)]
    orders.append(base_classes(found))
    result = [found]
    while any(orders):
        for order in orders:
            head = order[0] if order else None
            if head is not None and not any(head in other[1:] for other in orders):
                break
        else:
            raise SourceError(f"no consistent method resolution order for {found.node.name}")
        result.append(head)
        orders = [order[1:] if order and order[0] == head else order for order in orders]
    return result


# --- Dataclass fields ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A dataclass field as written: read on demand, so a field no page shows may be anything."""

    value: ast.expr | None  # what follows `name: type =`
    where: str  # "GRPOConfig.beta", for errors

    def field_call(self) -> dict[str, ast.expr] | None:
        """The keywords of `field(...)`, or None where the default is written bare."""
        call = self.value
        if isinstance(call, ast.Call) and ast.unparse(call.func).split(".")[-1] == "field":
            return {k.arg: k.value for k in call.keywords}
        return None

    @property
    def default(self) -> str:
        """repr of the default value, as `dataclasses` would give it, or "required"."""
        keywords = self.field_call()
        if keywords is None:
            if self.value is None:
                return "required"
            return repr(literal(self.value, f"the default of {self.where}"))
        if "default" in keywords:
            return repr(literal(keywords["default"], f"the default of {self.where}"))
        factory = keywords.get("default_factory")
        if factory is None:
            return "required"
        if isinstance(factory, ast.Lambda) and not factory.args.args:
            return repr(literal(factory.body, f"the default_factory of {self.where}"))
        empty = {"list": [], "dict": {}, "set": set(), "tuple": ()}
        if isinstance(factory, ast.Name) and factory.id in empty:
            return repr(empty[factory.id])
        raise SourceError(f"the default_factory of {self.where} is not a literal")

    @property
    def help(self) -> str | None:
        """metadata["help"]: the rest of the metadata may be anything (`choices` built by code)."""
        metadata = (self.field_call() or {}).get("metadata")
        if not isinstance(metadata, ast.Dict):
            return None
        for key, value in zip(metadata.keys, metadata.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "help":
                return literal(value, f"the help of {self.where}")
        return None


def dataclass_fields(dotted: str, names: list[str]) -> dict[str, Field]:
    """Those of `names` that are fields of a dataclass, each from the first class in the method
    resolution order that declares it (a subclass that declares a field again sets its
    default). The bases are read only for names the class itself does not declare."""
    found = locate(dotted)
    if not isinstance(found.node, ast.ClassDef):
        raise SourceError(f"{dotted} is not a class")
    fields = declared_fields(found, names)
    if len(fields) < len(set(names)):
        for cls in method_resolution_order(found)[1:]:
            fields = declared_fields(cls, names) | fields
    return fields


def declared_fields(cls: Found, names: list[str]) -> dict[str, Field]:
    """The fields among `names` that the class's own body declares, if it is a dataclass."""
    if not any("dataclass" in ast.unparse(d) for d in cls.node.decorator_list):
        return {}
    return {
        stmt.target.id: Field(stmt.value, f"{cls.node.name}.{stmt.target.id}")
        for stmt in cls.node.body
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and stmt.target.id in names
        and "ClassVar" not in ast.unparse(stmt.annotation)
    }


def literal(node: ast.expr, what: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise SourceError(f"{what} is not a literal: {ast.unparse(node)}") from None
