"""A first run as a new user has it: Fixative installed non-editable (`pip install` of its wheel) into a
fresh virtual environment, run from an empty folder with no models folder, no ../shared, no per-user
models and HF_HUB_OFFLINE=1, protects an image with the built-in default models and default target.

To keep this to about a minute, the new environment does not download torch & co. again: a ``.pth`` file
makes this test environment's installed packages visible to it (they satisfy the wheel's dependencies as
any installed copy would); Fixative itself comes only from the wheel built here. Building the wheel needs
``hatchling`` from the package index (pip's build isolation), as any ``pip install .`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import corpus
import pytest
from PIL import Image

from fixative.models.builtin import BUILTIN_FILES

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _check(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _fresh_venv(venv: Path) -> Path:
    """A new virtual environment that sees this one's installed dependencies (not its Fixative): its python."""
    _check([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_check([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *(p for p in sys.path if p.endswith("site-packages"))}  # also those a .pth file of ours adds
    (site / "_fixative_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return py


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FIXATIVE_MODELS_DIR", "VIRTUAL_ENV") and not k.startswith(("HF_", "XDG_"))}
    env.update(extra)
    return env


#: one import package: the three folders of the checkout are fixative, fixative.gui and fixative.eval
IMPORTS = ("import fixative, fixative.core.engine, fixative.gui, fixative.gui.app, fixative.eval, "
           "fixative.eval.strength; "
           "print(fixative.__file__, fixative.gui.__file__, fixative.eval.__file__, fixative.__version__)")


def test_fresh_venv_editable_install_imports_the_checkout(tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    _check([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)])
    work = tmp_path / "work"
    (work / "gui").mkdir(parents=True)  # a user's own gui/ and eval/ folders shadow nothing
    (work / "eval").mkdir()
    (work / "gui" / "__init__.py").write_text("raise SystemExit('the user folder was imported')\n")
    done = _check([str(py), "-c", IMPORTS], cwd=work, env=_clean_env())
    package, gui, evaluation, version = done.stdout.split()
    assert Path(package) == REPO / "protect" / "__init__.py"
    assert Path(gui) == REPO / "gui" / "__init__.py" and Path(evaluation) == REPO / "eval" / "__init__.py"
    # the folders are not importable under their own names: no top-level protect, gui, eval, tests
    done = _check([str(py), "-c", "import importlib.util as u; print([u.find_spec(n) is None for n in "
                   "('protect', 'tests', 'benchmarks')])"], cwd=tmp_path, env=_clean_env())
    assert done.stdout.strip() == "[True, True, True]"
    import fixative

    assert version == fixative.__version__
    help_ = _check([str(py), "-m", "fixative", "--help"], cwd=work, env=_clean_env())
    assert "eval" in help_.stdout and "gui" in help_.stdout  # the subcommands that fixative.gui/eval add


def test_fresh_venv_non_editable_install_protects_offline_with_no_models_folder(tmp_path):
    venv = tmp_path / "venv"
    py = _fresh_venv(venv)

    # the wheel: the package folders and the built-in weights, licences and NOTICE; no models/, tests/, ../shared
    dist = tmp_path / "dist"
    _check([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)])
    wheel = next(dist.glob("fixative-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in BUILTIN_FILES:
        assert f"fixative/models/weights/{rel}" in names
    weights = "fixative/models/weights"
    assert {f"{weights}/NOTICE", f"{weights}/taesd/LICENSE", f"{weights}/lpips/LICENSE"} <= names
    assert not [n for n in names if n.startswith(("models/", "tests/", "shared/"))]
    _check([str(py), "-m", "pip", "install", "-q", str(wheel)])

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    Image.fromarray(corpus.rgb8(4, 48, 64)).save(work / "art.png")
    Image.fromarray(corpus.rgb8(7, 40, 40)).convert("RGB").save(work / "other.jpg", quality=90)
    env = _clean_env(HF_HUB_OFFLINE="1", HOME=str(home), FIXATIVE_DATA_DIR=str(home / "data"),
                     TORCH_HOME=str(home / "t"), OMP_NUM_THREADS="1",
                     PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    for where in _check([str(py), "-c", IMPORTS], cwd=work, env=env).stdout.split()[:3]:
        assert Path(where).is_relative_to(venv), where  # the installed copy, not this checkout

    fixative = shutil.which("fixative", path=str(venv / "bin"))
    assert fixative is not None
    for extra, out, kind in (([], "out", "code"), (["--target", "other.jpg"], "out2", "image")):
        _check([fixative, "protect", "art.png", "--out", f"{out}/", "--steps", "4", *extra], cwd=work, env=env)
        record = json.loads((work / out / "art.json").read_text())
        assert (work / out / "art.png").is_file() and record["target"]["kind"] == kind
        encoder = record["models"]["encoders"][0]["files"][0]
        lpips = record["models"]["lpips"]["files"][0]
        for entry, rel in ((encoder, "taesd/taef2_encoder.pth"), (lpips, "lpips/alexnet_features.safetensors")):
            assert entry["builtin"]["name"] == rel and entry["sha256"] == BUILTIN_FILES[rel].sha256
            # records hold paths relative to their folder (no user's folders in them): it is the installed file
            assert (work / out / entry["path"]).resolve().is_relative_to(venv.resolve())
    assert not (work / "models").exists() and not (home / "data").exists()  # nothing needed, nothing downloaded
    _check([fixative, "verify", "out"], cwd=work, env=env)
