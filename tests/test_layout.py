"""The rooms of ``loyalty/`` import only rooms below them (README, "Layout"), and the top-level
packages only those to their left: a newcomer can trust the picture, and a cycle cannot creep in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom to top. A room may import itself, any room earlier in this list, and the shared modules.
ROOMS = ("storage", "programs", "ledger", "admin", "members", "points", "value", "events", "privacy", "ops")
#: Beside the rooms: importable from every room, importing nothing of the rooms themselves.
SHARED = {"errors": set(), "calendar": set(), "cards": {"errors"}}
#: Which top-level packages of ours each one may import.
PACKAGES = {"rules": set(), "loyalty": {"rules"}, "api": {"rules", "loyalty"}, "cli": {"rules", "loyalty"}}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file, including those inside functions and
    ``TYPE_CHECKING`` blocks: a lazy import is still a dependency."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from loyalty import ops`` names the room in the imported name.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _room(parts: tuple[str, ...]) -> str:
    name = parts[1] if len(parts) > 1 else ""
    return name.removesuffix(".py")


def _allowed(source: str, target: str) -> bool:
    if target == source:
        return True
    if source in SHARED:
        return target in SHARED[source]
    if target in SHARED:
        return True
    if source in ROOMS and target in ROOMS:
        return ROOMS.index(target) < ROOMS.index(source)
    return False


def test_the_rooms_import_only_rooms_below_them() -> None:
    wrong = []
    for path in sorted((ROOT / "loyalty").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "migrations" in relative.parts or relative.parts == ("loyalty", "__init__.py"):
            continue
        source = _room(relative.parts)
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "loyalty" or len(parts) < 2:
                continue
            target = parts[1]
            if target not in ROOMS and target not in SHARED:
                continue  # an imported name (``from loyalty.x import Thing``), not a room
            if not _allowed(source, target):
                wrong.append(f"{relative}:{line}: {source} imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_packages_import_only_those_beneath_them(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in PACKAGES[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_room_says_what_it_owns_and_imports() -> None:
    for room in (*ROOMS, "cards", "ledger"):
        doc = ast.get_docstring(ast.parse((ROOT / "loyalty" / room / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"loyalty/{room}/__init__.py says nothing of its imports"
