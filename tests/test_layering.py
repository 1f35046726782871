"""The package map (README "Architecture"): models -> bundles -> training / service, no import upward.

Read from the source with `ast`, so a forbidden import fails here even where it sits in a function body
that no other test runs. Imports under `if TYPE_CHECKING:` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import of the project's packages (the rest of the world is not checked here).
ALLOWED = {
    "models": {"models"},
    "bundles": {"models", "bundles"},
    "training": {"models", "bundles", "training"},
    "service": {"models", "bundles", "service", "migrations"},
}
# The one reader of training/ the service keeps: the bulk job and CLI stream corpora with it.
SERVICE_FROM_TRAINING = {"training.corpus"}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> list[str]:
    """The absolute module names imported anywhere in `tree`, outside `if TYPE_CHECKING:` blocks."""
    found: list[str] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if _type_checking_block(node):
            assert isinstance(node, ast.If)
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        todo += ast.iter_child_nodes(node)
    return found


def _project_imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import of a project package by a file of `package`."""
    pairs = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in _imports(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] in ALLOWED or module.split(".")[0] == "migrations":
                pairs.append((str(path.relative_to(ROOT)), module))
    return pairs


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_upward(package: str) -> None:
    allowed = ALLOWED[package]
    wrong = [
        (path, module)
        for path, module in _project_imports(package)
        if module.split(".")[0] not in allowed
        and not (package == "service" and module in SERVICE_FROM_TRAINING)
    ]
    assert not wrong, wrong


def test_bundles_and_models_serving_modules_need_no_torch() -> None:
    """bundles/ runs in the serving image, which has no torch (tests/test_docker_images.py runs it)."""
    wrong = [
        (str(path.relative_to(ROOT)), module)
        for path in sorted((ROOT / "bundles").rglob("*.py"))
        for module in _imports(ast.parse(path.read_text()))
        if module.split(".")[0] in {"torch", "matplotlib"}
    ]
    assert not wrong, wrong
