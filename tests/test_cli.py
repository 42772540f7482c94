"""The minimal ``fixative protect`` command, end to end on tiny offline models written to a temp folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixative.cli.main import main, output_names
from fixative.files.images import load_image

from tiny import smooth_image


@pytest.fixture
def models(tiny_models) -> Path:
    return tiny_models


def _png(path: Path, h: int, w: int, seed: int, alpha: bool = False) -> Path:
    arr = (smooth_image(h, w, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if alpha:
        a = np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)
        Image.fromarray(np.dstack([arr, a]), "RGBA").save(path)
    else:
        Image.fromarray(arr, "RGB").save(path)
    return path


def _run(models: Path, *args: str) -> int:
    return main(["protect", *args, "--encoder", str(models / "taesd" / "tiny_encoder.pth"),
                 "--models-dir", str(models), "--steps", "6", "--precision", "fp32", "-q"])


def test_protect_writes_png_and_record(tmp_path, models):
    art = _png(tmp_path / "art.png", 40, 56, 0, alpha=True)
    target = _png(tmp_path / "target.png", 64, 64, 1)
    before = art.read_bytes()
    out = tmp_path / "out"
    assert _run(models, str(art), "--target", str(target), "--out", str(out), "--budget", "0.05", "--seed", "3") == 0
    assert art.read_bytes() == before
    saved = load_image(out / "art.png")
    original = load_image(art)
    assert saved.size == (40, 56)
    assert np.array_equal(saved.alpha, original.alpha)
    record = json.loads((out / "art.json").read_text())
    assert record["metrics"]["lpips"] <= 0.05
    assert record["settings"]["budget"] == 0.05 and record["settings"]["seed"] == 3
    assert record["input"]["sha256"] and record["output"]["sha256"]
    assert record["metrics"]["ratio"]  # one entry per encoder


def test_bad_file_reported_and_others_done(tmp_path, models, caplog):
    good = _png(tmp_path / "good.png", 32, 32, 0)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    target = _png(tmp_path / "t.png", 32, 32, 1)
    code = _run(models, str(bad), str(good), str(empty), "--target", str(target), "--out", str(tmp_path / "o"))
    assert code == 1
    assert (tmp_path / "o" / "good.png").exists()
    text = caplog.text
    assert "broken.png" in text and "empty.jpg" in text and "empty" in text
    assert "Traceback" not in text


def test_missing_model_is_one_clear_error(tmp_path, models, caplog):
    art = _png(tmp_path / "a.png", 16, 16, 0)
    code = main(["protect", str(art), "--target", str(art), "--out", str(tmp_path / "o"),
                 "--encoder", "taesd3", "--models-dir", str(tmp_path), "-q"])
    assert code == 2
    assert "taesd3" in caplog.text and str(tmp_path) in caplog.text


def test_output_names_never_hit_inputs(tmp_path):
    a, b, c = tmp_path / "x.png", tmp_path / "x.jpg", tmp_path / "sub" / "x.webp"
    names = output_names([a, b, c], tmp_path)
    assert names[a] == tmp_path / "x_2.png"  # x.png is an input itself
    assert len(set(names.values())) == 3
    assert not {p.resolve() for p in names.values()} & {a.resolve(), b.resolve(), c.resolve()}
    assert output_names([a, b, c], tmp_path) == names  # deterministic


def test_check_encoder_and_tile_batch_flags(tmp_path, models, capsys, caplog):
    """--check-encoder measures the result on a second encoder (transfer) without crafting against it."""
    import torch

    from fixative.models.taesd import TAESDEncoder

    torch.manual_seed(5)
    other = tmp_path / "other_encoder.pth"
    torch.save(TAESDEncoder(4, width=8).half().state_dict(), other)
    art = _png(tmp_path / "art.png", 48, 300, 0)
    target = _png(tmp_path / "target.png", 48, 300, 1)
    out = tmp_path / "out"
    code = _run(models, str(art), "--out", str(out), "--target", str(target), "--check-encoder", str(other),
                "--tile-size", "160", "--tile-batch", "2", "--views", "off", "--json")
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    record = json.loads(Path(summary["images"][0]["record"]).read_text())
    metrics = record["metrics"]
    assert metrics["checked"] == [str(other)] and len(metrics["encoders"]) == 1
    assert set(metrics["ratio"]) == {metrics["encoders"][0], str(other)}
    assert summary["images"][0]["checked"] == {str(other): metrics["ratio"][str(other)]}
    assert record["settings"]["tile_batch"] == 2 and metrics["tiles"] >= 2  # tiles: with --views off
    with pytest.raises(SystemExit):
        main(["protect", str(art), "--out", str(out), "--tile-batch", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["protect", str(art), "--out", str(out), "--tile-size", "100"]) == 2
    assert "--tile-size must be at least 160" in caplog.text


@pytest.mark.parametrize("quality,limit", [("preview", 5.0), ("fast", 60.0)])
def test_quality_presets_keep_their_time_limit_on_a_large_image(tmp_path, models, quality, limit):
    # 2400 x 3200 (7.7 MP) with alpha: the default training views search at 1024 px, whatever the size
    art = _png(tmp_path / "big.png", 2400, 3200, 3, alpha=True)
    target = _png(tmp_path / "target.png", 300, 400, 4)
    out = tmp_path / "out"
    code = main(["protect", str(art), "--target", str(target), "--out", str(out), "--quality", quality,
                 "--encoder", str(models / "taesd" / "tiny_encoder.pth"), "--models-dir", str(models),
                 "--precision", "fp32", "--device", "cpu", "-q"])
    assert code == 0
    record = json.loads((out / "big.json").read_text())
    m, s = record["metrics"], record["settings"]
    assert s["seconds"] == limit and s["views"]["name"] == "train" and s["work_size"] == [1024, 1365]
    # no step starts past the limit: the search ends within one step of it (a step at 1024 px takes about a
    # second on a quiet machine, several under load)
    assert m["search_seconds"] <= limit + max(3.0, 1.5 * m["search_seconds"] / m["steps"])
    assert m["steps"] >= 1 and m["tiles"] == 1 and not m["full_size"] and m["mean_ratio"] is None
    assert set(m["view_ratio"]) == {"512 crop", "1024 px"}
    saved = load_image(out / "big.png")
    assert saved.size == (2400, 3200) and saved.alpha is not None
    np.testing.assert_array_equal(saved.alpha, load_image(art).alpha)  # alpha bit-exact
    assert record["run_settings"]["views"]["name"] == "train"
    # a preview shows the file as saved (no robust mix unless asked for); the other presets keep the default
    assert (record["run_settings"]["robust"] == "off") == (quality == "preview")
