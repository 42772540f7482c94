"""The model store: search order, subfolders, offline mode, the missing-model message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fixative.models.store as store_mod
from fixative.errors import ModelNotFoundError
from fixative.models.builtin import BUILTIN_DIR
from fixative.models.store import ENV_MODELS_DIR, ModelStore, checkout_models_dir, hub_offline
from fixative.userdirs import ENV_DATA_DIR

from tiny import fake_hub_snapshot


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Four model dirs (explicit file's dir, --models-dir, env x2, checkout); env and checkout wired up."""
    out = {name: tmp_path / name for name in ("explicit", "flag", "env1", "env2", "checkout")}
    for path in out.values():
        path.mkdir()
    monkeypatch.setenv(ENV_MODELS_DIR, os.pathsep.join([str(out["env1"]), str(out["env2"])]))
    monkeypatch.setattr(store_mod, "checkout_models_dir", lambda: out["checkout"])
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "user"))
    out["user"] = tmp_path / "user" / "models"
    return out


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_search_dirs_order(dirs: dict[str, Path]) -> None:
    store = ModelStore(dirs["flag"])
    assert store.search_dirs() == [dirs["flag"], dirs["env1"], dirs["env2"], dirs["checkout"], dirs["user"],
                                   BUILTIN_DIR]
    assert [p.origin for p in store.places()] == [
        "--models-dir",
        f"${ENV_MODELS_DIR}",
        f"${ENV_MODELS_DIR}",
        "checkout models/",
        "per-user models folder",
        "built-in",
    ]
    assert ModelStore().search_dirs() == [dirs["env1"], dirs["env2"], dirs["checkout"], dirs["user"], BUILTIN_DIR]
    assert ModelStore(builtin=False).search_dirs()[-1] == dirs["user"]


def test_search_dirs_dedupes_and_skips_absent_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MODELS_DIR, str(tmp_path))
    monkeypatch.setattr(store_mod, "checkout_models_dir", lambda: None)
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "user"))
    user = tmp_path / "user" / "models"
    assert ModelStore(tmp_path, builtin=False).search_dirs() == [tmp_path, user]
    monkeypatch.delenv(ENV_MODELS_DIR)
    assert ModelStore(builtin=False).search_dirs() == [user]


def test_checkout_models_dir_is_beside_the_package() -> None:
    found = checkout_models_dir()
    expected = Path(store_mod.__file__).resolve().parents[2] / "models"  # the checkout root, beside protect/
    assert found == (expected if expected.is_dir() else None)


def test_find_resolution_order(dirs: dict[str, Path]) -> None:
    name = "taef2_encoder.pth"
    explicit = _touch(dirs["explicit"] / name)
    files = {key: _touch(dirs[key] / name) for key in ("flag", "env1", "env2", "checkout", "user")}
    store = ModelStore(dirs["flag"])
    assert store.find(explicit) == explicit  # explicit path wins, no search
    assert store.find(str(explicit)) == explicit
    order = ["flag", "env1", "env2", "checkout", "user"]
    for key in order:
        assert store.find(name) == files[key]
        files[key].unlink()
    # then the package's own copy, after every user folder; without built-ins, nothing
    assert store.find(name) == BUILTIN_DIR / "taesd" / name
    assert ModelStore(dirs["flag"], builtin=False).find(name) is None
    assert store.find(dirs["explicit"] / "absent.pth") is None


def test_builtin_weights_match_their_pins_and_a_damaged_copy_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import fixative.models.builtin as builtin_mod
    from fixative.provenance.manifest import sha256_file

    for rel, entry in builtin_mod.BUILTIN_FILES.items():
        assert sha256_file(BUILTIN_DIR / rel) == entry.sha256, rel
        assert (BUILTIN_DIR / entry.licence_file).is_file()
    assert "MIT" in (BUILTIN_DIR / "taesd" / "LICENSE").read_text()
    assert "BSD" in (BUILTIN_DIR / "lpips" / "LICENSE").read_text()
    notice = (BUILTIN_DIR / "NOTICE").read_text()
    assert all(e.sha256 in notice for e in builtin_mod.BUILTIN_FILES.values())
    # a damaged install: same names, other bytes
    fake = tmp_path / "weights"
    _touch(fake / "taesd" / "taef2_encoder.pth")
    monkeypatch.setattr(builtin_mod, "BUILTIN_DIR", fake)
    monkeypatch.setattr(store_mod, "BUILTIN_DIR", fake)
    monkeypatch.setattr(store_mod, "checkout_models_dir", lambda: None)
    monkeypatch.delenv(ENV_MODELS_DIR, raising=False)
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "user"))
    with caplog.at_level("WARNING"):
        assert ModelStore().find("taef2_encoder.pth") is None
    assert "does not match its pinned SHA-256" in caplog.text


def test_find_subfolders(dirs: dict[str, Path]) -> None:
    store = ModelStore(dirs["flag"])
    in_taesd = _touch(dirs["env1"] / "taesd" / "taesana_encoder.pth")
    assert store.find("taesana_encoder.pth") == in_taesd
    # a relative path is accepted as given, or by its name directly in a dir / a known subfolder
    assert store.find("taesd/taesana_encoder.pth") == in_taesd
    flat = _touch(dirs["flag"] / "alexnet_features.safetensors")
    assert store.find("lpips/alexnet_features.safetensors") == flat
    nested = _touch(dirs["flag"] / "lpips" / "alexnet_features.safetensors")
    assert store.find("lpips/alexnet_features.safetensors") == nested
    assert store.find("nowhere/else.pth") is None


def test_find_any_directory_order_beats_name_order(dirs: dict[str, Path]) -> None:
    later_dir = _touch(dirs["checkout"] / "a.pth")
    earlier_dir = _touch(dirs["env1"] / "b.pth")
    store = ModelStore(dirs["flag"])
    assert store.find_any(["a.pth", "b.pth"]) == earlier_dir
    earlier_dir.unlink()
    assert store.find_any(["a.pth", "b.pth"]) == later_dir


def test_missing_models_dir_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MODELS_DIR, raising=False)
    monkeypatch.setattr(store_mod, "checkout_models_dir", lambda: None)
    store = ModelStore(tmp_path / "typo")
    assert store.find("x.pth") is None
    assert "does not exist" in store.describe_places()[0]


def test_offline_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub_offline() and not ModelStore().offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline() and ModelStore().offline


def test_hub_file_offline_uses_cache_only(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snap = fake_hub_snapshot(cache, "someone/pipeline")
    _touch(snap / "vae" / "config.json")
    store = ModelStore(hub_cache=cache)
    assert store.offline  # conftest sets HF_HUB_OFFLINE=1
    got = store.hub_file("someone/pipeline", "config.json", subfolder="vae")
    assert got is not None and got.is_file() and got.parent.name == "vae"
    assert store.hub_model_folder("someone/pipeline") == ("vae", got)
    assert store.hub_file("someone/pipeline", "config.json") is None
    assert store.last_hub_error
    assert store.hub_model_folder("someone/absent") is None


def test_not_found_message_lists_every_place(dirs: dict[str, Path]) -> None:
    store = ModelStore(dirs["flag"], hub_cache=dirs["explicit"] / "cache")
    err = store.not_found(
        "taef2",
        looked_for=("taef2_encoder.pth",),
        hub_repo="madebyollin/taesd",
        how="download it",
        detail="LocalEntryNotFoundError: not cached",
    )
    assert isinstance(err, ModelNotFoundError)
    msg = str(err)
    for key in ("flag", "env1", "env2", "checkout", "user"):
        assert str(dirs[key]) in msg
    assert "fixative models fetch" in msg
    assert "--models-dir" in msg and ENV_MODELS_DIR in msg and "checkout models/" in msg
    assert "madebyollin/taesd" in msg and "offline" in msg and str(dirs["explicit"] / "cache") in msg
    assert "taef2_encoder.pth" in msg and "To get it: download it" in msg and "not cached" in msg
    assert store.suggested_dir() == dirs["flag"]
