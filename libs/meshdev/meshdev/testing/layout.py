"""The house service layout (DESIGN.md "Service layout") checked on a service's source.

LAYOUT = Layout.of(nft_service, allowed={"usecases": {"adapters", "store"}, ...},
                   shared_steps={"events"}, sdks={"solders": {"adapters/chain.py"}})
assert LAYOUT.layer_problems() == []

Every check reads the source with `ast` (nothing is imported) and returns the problems it finds,
one line each (`"domain/x.py:3 imports asyncpg"`): empty when the rule holds, so a test asserts
`== []` and a failure lists every offence. Paths are relative to the service package.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = [
    "Layout",
    "forbidden_imports",
    "imports",
    "imports_in",
    "is_within",
    "unmapped_errors",
]


def imports_in(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in `source`, nested ones included."""
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in the file at `path`."""
    return imports_in(path.read_text(), str(path))


def package_imports(path: Path, package: str) -> Iterator[tuple[int, str, str]]:
    """`imports(path)`, where `from <package> import x` and `from <package>.<layer> import x`
    count as importing `<package>.x` and `<package>.<layer>.x` (x may be a module: the rules must
    see `from svc import usecases` and `from svc.usecases import orders` for what they are).
    Yields (line, module, the module as written)."""
    source = path.read_text()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == package and len(parts) <= 2:
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}", node.module
            else:
                yield node.lineno, node.module, node.module


def is_within(module: str, names: Iterable[str]) -> bool:
    """Whether `module` is one of `names` or inside one of them (`a.b` is within `a`)."""
    return any(module == name or module.startswith(name + ".") for name in names)


def forbidden_imports(path: Path, forbidden: Iterable[str]) -> list[str]:
    """The modules the file at `path` imports from within `forbidden`, in source order."""
    names = tuple(forbidden)
    return [module for _, module in imports(path) if is_within(module, names)]


def unmapped_errors(errors: ModuleType, base: type, error_map: Mapping[type, object]) -> list[str]:
    """Names of the subclasses of `base` defined in `errors` that have no entry in `error_map`."""
    return [
        cls.__name__
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, base)
        and cls.__module__ == errors.__name__
        and cls is not base
        and cls not in error_map
    ]


@dataclass(frozen=True)
class Layout:
    """One service package and its tables: which layers each layer may import (besides itself and
    domain/), the use case modules other use cases may import, and which files alone may import
    each provider SDK (by top-level module)."""

    name: str
    root: Path
    allowed: Mapping[str, AbstractSet[str]] = field(default_factory=dict)
    shared_steps: AbstractSet[str] = frozenset()
    sdks: Mapping[str, AbstractSet[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        package: ModuleType,
        *,
        allowed: Mapping[str, AbstractSet[str]] | None = None,
        shared_steps: AbstractSet[str] = frozenset(),
        sdks: Mapping[str, AbstractSet[str]] | None = None,
    ) -> Layout:
        assert package.__file__ is not None, f"{package.__name__} is not a regular package"
        return cls(
            name=package.__name__,
            root=Path(package.__file__).parent,
            allowed=allowed or {},
            shared_steps=shared_steps,
            sdks=sdks or {},
        )

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def files(self, layer: str, *, recursive: bool = True) -> list[Path]:
        """The layer's Python files; a layer without any is an error (a renamed folder must not
        make its rules pass on nothing)."""
        folder = self.root / layer
        files = sorted(folder.rglob("*.py") if recursive else folder.glob("*.py"))
        if not files:
            raise AssertionError(f"no files in {layer}/")
        return files

    def _problem(self, path: Path, line: int, module: str) -> str:
        return f"{self.relative(path)}:{line} imports {module}"

    def domain_problems(self, forbidden: Iterable[str]) -> list[str]:
        """domain/ is pure: no import within `forbidden`, nothing of the service outside domain/."""
        names = tuple(forbidden)
        problems = []
        for path in self.files("domain"):
            for line, module in imports(path):
                outside = is_within(module, (self.name,)) and not module.startswith(
                    f"{self.name}.domain"
                )
                if is_within(module, names) or outside:
                    problems.append(self._problem(path, line, module))
        return problems

    def layer_problems(self) -> list[str]:
        """A request goes down once: each layer imports only itself, domain/ and its allowed."""
        problems = []
        for layer, allowed in self.allowed.items():
            for path in self.files(layer):
                seen: set[tuple[int, str]] = set()
                for line, module, written in package_imports(path, self.name):
                    parts = module.split(".")
                    if parts[0] != self.name or len(parts) < 2:
                        continue
                    target = parts[1]
                    if target in (layer, "domain") or target in allowed or (line, target) in seen:
                        continue
                    seen.add((line, target))  # one problem per import statement and layer
                    shown = written if written != self.name else ".".join(parts[:2])
                    problems.append(self._problem(path, line, shown))
        return problems

    def use_case_problems(self) -> list[str]:
        """Use cases do not call each other sideways: only the shared steps are imported."""
        problems = []
        for path in self.files("usecases"):
            for line, module, _ in package_imports(path, self.name):
                if not module.startswith(f"{self.name}.usecases."):
                    continue
                target = module.split(".")[2]
                if target != path.stem and target not in self.shared_steps:
                    problems.append(self._problem(path, line, module))
        return problems

    def importers(self, top: str) -> set[str]:
        """The service's files that import the top-level module `top` (or anything inside it)."""
        return {
            self.relative(path)
            for path in self.root.rglob("*.py")
            if any(module.split(".")[0] == top for _, module in imports(path))
        }

    def sdk_problems(self) -> list[str]:
        """Each provider SDK is imported by exactly the files its table names, no other."""
        problems = []
        for sdk, allowed in self.sdks.items():
            users = self.importers(sdk)
            if users != set(allowed):
                problems.append(f"{sdk} is imported by {sorted(users)}, expected {sorted(allowed)}")
        return problems

    def dev_kit_problems(self) -> list[str]:
        """Production code never imports the dev kit (service images do not install it)."""
        return [f"{path} imports meshdev" for path in sorted(self.importers("meshdev"))]

    def files_containing(self, layer: str, *needles: str, recursive: bool = True) -> list[str]:
        """`"<file> contains <needle>"` for each needle found in a file of the layer."""
        return [
            f"{self.relative(path)} contains {needle!r}"
            for path in self.files(layer, recursive=recursive)
            for needle in needles
            if needle in path.read_text()
        ]
