"""Build hook: the editable install of the one ``fixative`` import package.

The repository keeps the owner's folders ``protect/`` (the package root, ``fixative``), ``gui/``
(``fixative.gui``) and ``eval/`` (``fixative.eval``). A regular wheel copies them to those places
(``force-include`` in ``pyproject.toml``). An editable install cannot copy, so it ships a small import
finder, loaded by a ``.pth`` file, that maps the three package names to the checkout's folders; nothing
else of the checkout (tests, benchmarks, the folders under their own names) lands on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: import package -> folder of the checkout (keep in step with force-include in pyproject.toml)
PACKAGES = {"fixative": "protect", "fixative.gui": "gui", "fixative.eval": "eval"}

FINDER = '''\
"""Editable install of fixative: maps the package names to the checkout at {root!r}."""

import importlib.abc
import importlib.util
import os
import sys

FOLDERS = {folders!r}


class FixativeEditableFinder(importlib.abc.MetaPathFinder):
    """Finds ``fixative``, ``fixative.gui`` and ``fixative.eval`` in the checkout; submodules follow ``__path__``."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        folder = FOLDERS.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])


if FixativeEditableFinder not in sys.meta_path:
    sys.meta_path.insert(0, FixativeEditableFinder)
'''


class EditableFinderHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version != "editable":
            return
        folders = {name: os.path.join(self.root, folder) for name, folder in PACKAGES.items()}
        out = self._made = tempfile.mkdtemp(prefix="fixative-editable-")
        finder = os.path.join(out, "_fixative_editable.py")
        pth = os.path.join(out, "_fixative_editable.pth")
        with open(finder, "w", encoding="utf-8") as f:
            f.write(FINDER.format(root=self.root, folders=folders))
        with open(pth, "w", encoding="utf-8") as f:
            f.write("import _fixative_editable\n")
        build_data["force_include_editable"] = {finder: "_fixative_editable.py", pth: "_fixative_editable.pth"}

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        """The finder and .pth are in the wheel now: remove the temporary folder they were written to."""
        made = getattr(self, "_made", None)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
