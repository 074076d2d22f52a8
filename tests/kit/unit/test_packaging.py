"""Production code never depends on dev code.

The kit (libs/meshkit) and the services are what a service image installs; the dev kit
(libs/meshdev), the test tools and the tests are not there. Every module of the kit and of each
service is parsed (not imported) and may import none of them, directly or through
`importlib.import_module` / `__import__` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEV_ONLY = frozenset({"meshdev", "pytest", "hypothesis", "tests"})


def production_packages() -> list[Path]:
    services = sorted(p / f"{p.name}_service" for p in (REPO / "services").iterdir() if p.is_dir())
    return [REPO / "libs" / "meshkit" / "meshkit", *services]


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree; relative imports stay inside
    their own package and are skipped."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def test_production_code_imports_no_dev_code() -> None:
    packages = production_packages()
    for package in packages:
        assert (package / "__init__.py").is_file(), f"not a package: {package.relative_to(REPO)}"
    files = [f for package in packages for f in sorted(package.rglob("*.py"))]
    assert len(files) > len(packages)
    offences = [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(ast.parse(path.read_bytes(), filename=str(path)))
        if module.split(".", 1)[0] in DEV_ONLY
    ]
    assert not offences, "production code imports dev/test code:\n" + "\n".join(offences)


def test_the_service_image_copies_only_contracts_kit_and_services() -> None:
    instructions = [
        line.split()
        for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources = {
        src.rstrip("/")
        for words in instructions
        if words[0] == "COPY" and not any(w.startswith("--from") for w in words)
        for src in words[1:-1]
    }
    # + the hashed lock of the third-party packages (deploy/requirements.lock)
    assert sources == {"deploy/requirements.lock", "libs/contracts", "libs/meshkit", "services"}
    assert not [w for words in instructions for w in words if "meshdev" in w]
