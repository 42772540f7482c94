"""The layers of the one ``fixative`` package, read from the source's imports (every import, also those
inside functions and under ``TYPE_CHECKING``):

- the engine core (``fixative.core``) imports no file, hub, model-store, batch or CLI code: only the core,
  ``fixative.errors``, ``fixative.defaults``, ``fixative.options`` and ``fixative.vocabulary`` (torch-free);
- nothing imports the command line (``fixative.cli``) except the command line itself, ``python -m
  fixative``, and the subcommands that the GUI and the evaluation add to it (their ``cli`` modules);
- the library never imports ``fixative.gui`` or ``fixative.eval``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder of the checkout -> the import package it is (see hatch_build.py and pyproject.toml)
FOLDERS = {"protect": "fixative", "gui": "fixative.gui", "eval": "fixative.eval"}
CORE_MAY_IMPORT = ("fixative.core", "fixative.errors", "fixative.defaults", "fixative.options", "fixative.vocabulary")
CLI_USERS = {"fixative.__main__", "fixative.gui.cli", "fixative.eval.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The fixative modules that ``name`` imports (``from X import y`` counts X and X.y, as y may be a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base]) if base else ".".join(up)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "fixative" or m.startswith("fixative.")}


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


MODULES = _modules()
KNOWN = set(MODULES)


def _real(imported: set[str]) -> set[str]:
    """Only names that are modules or packages of fixative (drops ``from fixative.x import a_function``)."""
    return {m for m in imported if m in KNOWN}


def test_the_layout_is_read():
    assert {"fixative", "fixative.core.engine", "fixative.cli.main", "fixative.gui.app", "fixative.eval.strength"} \
        <= KNOWN
    assert "fixative.core.engine" in _real(_imports("fixative.models.loading", MODULES["fixative.models.loading"]))


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _within(m, ["fixative.core"])))
def test_the_core_imports_no_file_hub_or_cli_code(name):
    bad = sorted(m for m in _real(_imports(name, MODULES[name])) if not _within(m, CORE_MAY_IMPORT))
    assert not bad, f"{name} (the engine core) imports {bad}"


def test_nothing_imports_the_command_line():
    bad = {name: sorted(m for m in _real(_imports(name, path)) if _within(m, ["fixative.cli"]))
           for name, path in MODULES.items() if not _within(name, ["fixative.cli"]) and name not in CLI_USERS}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"modules that import the command line: {bad}"


def test_the_library_never_imports_the_gui_or_the_evaluation():
    library = [m for m in MODULES if not _within(m, ["fixative.gui", "fixative.eval"])]
    apps = ["fixative.gui", "fixative.eval"]
    bad = {name: sorted(m for m in _real(_imports(name, MODULES[name])) if _within(m, apps)) for name in library}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"library modules that import the GUI or the evaluation: {bad}"
