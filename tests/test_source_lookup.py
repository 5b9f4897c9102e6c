"""annotated_trl.source_lookup reads definitions from files without importing them. The site's
own citations are checked against imports in test_docs_build.py; this package exercises each
form the reader follows, and the answers are compared with what importing the package gives.
"""

import dataclasses
import importlib
import sys
import textwrap

import pytest
from support.docs import imported_source

from annotated_trl.source_lookup import SourceError, dataclass_fields, locate

PACKAGE = {
    "pkg/__init__.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from .models import Child
        from . import models
        import pkg.models as aliased
    """,
    "pkg/base.py": """
        import dataclasses
        from dataclasses import dataclass, field

        class Root:
            def shared(self):
                return "root"

        class Left(Root):
            def side(self):
                return "left"

        class Right(Root):
            def shared(self):  # Right comes before Root in Diamond's MRO
                return "right"

        class Diamond(Left, Right):
            pass

        @dataclasses.dataclass
        class BaseConfig:
            required: str = field(metadata={"help": "No default."})
            lr: float = field(default=1e-3, metadata={"help": "Step size.", "choices": sorted([1])})
            tags: list = field(default_factory=lambda: ["a", "b"])
            names: dict = field(default_factory=dict)
            seed: int = 42
    """,
    "pkg/models.py": """
        import functools
        from dataclasses import dataclass, field
        from .base import BaseConfig, Diamond

        def decorate(function):
            @functools.wraps(function)
            def wrapper(*args):
                return function(*args)
            return wrapper

        class Child(Diamond):
            @property
            def size(self):
                return 1

            @size.setter
            def size(self, value):
                pass

            @decorate
            def run(self):
                return self.shared()

        @dataclass
        class Config(BaseConfig):
            lr: float = field(default=5e-5, metadata={"help": "A smaller step."})
            seed: int = -1
    """,
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookup")
    for name, text in PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield importlib.import_module("pkg")
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "read_as, imported_as",
    [
        ("pkg.Child", "pkg.models.Child"),  # an import under TYPE_CHECKING
        ("pkg.models.Child.shared", None),  # C3: Right before Root (depth-first finds Root's)
        ("pkg.models.Child.side", None),  # inherited from the left
        ("pkg.models.Child.size", None),  # a property: its getter
        ("pkg.models.Child.run", None),  # decorators included
        ("pkg.aliased.Config", "pkg.models.Config"),  # import a.b as name
        ("pkg.models", None),  # a module: the whole file
    ],
)
def test_the_reader_finds_what_importing_finds(package, read_as, imported_as):
    found = locate(read_as)
    lines, first = found.lines()
    read = (found.file.resolve(), first, first + len(lines) - 1)
    assert read == imported_source(imported_as or read_as)


def test_dataclass_fields_read_as_dataclasses_gives_them(package):
    names = ["lr", "tags", "names", "seed", "required"]
    read = dataclass_fields("pkg.models.Config", names)
    for field in dataclasses.fields(package.models.Config):
        if field.default is not dataclasses.MISSING:
            expected = repr(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            expected = repr(field.default_factory())
        else:
            expected = "required"
        assert read[field.name].default == expected, field.name
        assert read[field.name].help == field.metadata.get("help"), field.name


def test_what_the_reader_cannot_follow_is_an_error(package):
    with pytest.raises(SourceError, match="has no def or class 'missing'"):
        locate("pkg.models.Child.missing")
    with pytest.raises(SourceError, match="no module"):
        locate("not_a_package_anywhere.thing")
