"""The portfolio batch, end to end on tiny offline models: formats, bad files, names, resume, shards."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import corpus
import numpy as np
import pytest
from PIL import Image

from fixative.batch.inputs import InputItem, collect_inputs
from fixative.batch.outputs import plan_outputs
from fixative.batch.shards import parse_shard
from fixative.cli.main import FAULT_ENV, main
from fixative.errors import ConfigError
from fixative.files.images import load_image
from fixative.presets import effort_for, like_jpeg_for, robust_for_quality
from fixative.provenance.manifest import INDEX_NAME, recorded_path, verify
from fixative.targets.patterns import DEFAULT_RESTYLE

from tiny import launch_failure, subprocess_env, tiny_protect_args, two_process_launch


def _protect(models: Path, *args: str, steps: int = 3) -> int:
    return main(["protect", *args, *tiny_protect_args(models, steps)])


def _records(folder: Path) -> dict[str, dict]:
    found = {}
    for path in folder.rglob("*.json"):
        if path.name != INDEX_NAME:
            data = json.loads(path.read_text())
            found[str(recorded_path(data["input"]["path"], path.parent))] = data  # relative to the record
    return found


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_corpus_every_good_file_protected_every_bad_one_named(tmp_path, tiny_models, target, caplog, capsys):
    folder = tmp_path / "portfolio"
    good = corpus.write_good(folder)
    bad = corpus.write_bad(folder)
    before = corpus.snapshot(folder)
    out = tmp_path / "out"
    code = _protect(tiny_models, str(folder), "--target", str(target), "--out", str(out), "--budget", "0.05",
                    "--json", "--max-pixels", "50000000")
    assert code == 1
    assert corpus.snapshot(folder) == before  # originals byte-identical
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["done"] == len(good) and summary["counts"]["failed"] == len(bad)
    failed = {Path(f["input"]).name: f["reason"] for f in summary["failures"]}
    assert set(failed) == set(bad)
    for name, word in bad.items():
        assert word in failed[name], (name, failed[name])
        assert name in caplog.text
    assert "Traceback" not in caplog.text
    assert "failures:" in caplog.text

    records = _records(out)
    for name, path in good.items():
        original = load_image(path)
        record = records[str(path.resolve())]
        saved = load_image(out / record["output"]["name"])
        assert saved.size == original.size, name
        assert saved.bits == original.bits, name  # 16-bit PNG/TIFF stay 16-bit
        if original.alpha is not None:
            assert np.array_equal(saved.alpha, original.alpha), name
        assert record["metrics"]["lpips"] <= 0.05
        assert record["input"]["sha256"] and record["output"]["sha256"] and record["settings_hash"]
        assert record["models"]["encoders"][0]["files"][0]["sha256"]
    assert verify(out).ok


def test_rgba_png_keeps_identical_alpha_and_metadata(tmp_path, tiny_models, target):
    good = corpus.write_good(tmp_path / "in")
    out = tmp_path / "out"
    art = good["rgba8_png.png"]
    assert _protect(tiny_models, str(art), str(good["photo_rot6_jpg.jpg"]), "--target", str(target),
                    "--out", str(out)) == 0
    with Image.open(art) as a, Image.open(out / "rgba8_png.png") as b:
        assert b.mode == "RGBA" and np.array_equal(np.asarray(a)[..., 3], np.asarray(b)[..., 3])
    with Image.open(out / "photo_rot6_jpg.png") as photo:
        assert photo.size == (corpus.W, corpus.H)  # upright
        exif = photo.getexif()
        assert exif.get(0x0112, 1) == 1 and exif.get(315) == "Test Artist"
        assert photo.info.get("icc_profile")


def test_out_folder_is_the_input_folder(tmp_path, tiny_models, target):
    folder = tmp_path / "art"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"a{i}.png")
    before = corpus.snapshot(folder)
    assert _protect(tiny_models, str(folder), "--target", str(target), "--out", str(folder)) == 0
    after = corpus.snapshot(folder)
    assert {k: after[k] for k in before} == before
    assert {"a0_2.png", "a1_2.png", "a0_2.json", "a1_2.json", INDEX_NAME} <= set(after)
    # rerun: the outputs are not taken as new inputs, and nothing is redone
    assert _protect(tiny_models, str(folder), "--target", str(target), "--out", str(folder)) == 0
    assert corpus.snapshot(folder) == after


def test_rerun_skips_done_and_other_settings_redo(tmp_path, tiny_models, target, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"p{i}.png")
    out = tmp_path / "out"
    args = [str(folder), "--target", str(target), "--out", str(out), "--json"]
    assert _protect(tiny_models, *args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["counts"]["done"] == 2
    assert _protect(tiny_models, *args) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"done": 0, "skipped": 2, "failed": 0, "ignored": 0}
    assert _protect(tiny_models, *args, "--budget", "0.03") == 0
    third = json.loads(capsys.readouterr().out)
    assert third["counts"]["done"] == 2
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == [INDEX_NAME, "p0.json", "p0.png", "p1.json", "p1.png"]
    assert all(r["settings"]["budget"] == 0.03 for r in _records(out).values())


def test_names_are_deterministic_and_never_inputs_or_strangers(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(b"someone else's file")  # no record: never overwritten
    a, b, c = tmp_path / "x.png", tmp_path / "x.jpg", tmp_path / "sub" / "x.webp"
    items = [InputItem(a, Path("x.png")), InputItem(b, Path("x.jpg")), InputItem(c, Path("sub/x.webp"))]
    jobs = plan_outputs(items, out)
    assert [j.output.name for j in jobs] == ["x_2.png", "x_3.png", "x.png"]
    assert jobs[2].output == out / "sub" / "x.png"
    assert plan_outputs(items, out) == jobs
    assert plan_outputs(items, tmp_path)[0].output.name == "x_2.png"  # x.png is an input there


def test_inputs_from_folders_globs_and_recursion(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/one.png", "a/two.jpg", "a/sub/three.png", "a/.hidden.png"):
        Image.fromarray(corpus.rgb8(0, 8, 8)).save(tmp_path / name)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    items, failures, ignored = collect_inputs([str(tmp_path / "a")])
    assert [i.rel.as_posix() for i in items] == ["one.png", "two.jpg"] and not failures
    items, _, _ = collect_inputs([str(tmp_path / "a")], recursive=True)
    assert [i.rel.as_posix() for i in items] == ["one.png", "sub/three.png", "two.jpg"]
    items, failures, _ = collect_inputs([str(tmp_path / "a" / "*.png"), str(tmp_path / "missing.png"),
                                         str(tmp_path / "nothing*.png")])
    assert [i.path.name for i in items] == ["one.png"]
    assert [f.reason for f in failures] == ["no such file or folder", "the pattern matched no images"]


def test_modes_presets_and_formats(tmp_path, tiny_models, target, capsys, caplog):
    art = tmp_path / "art.png"
    Image.fromarray(corpus.rgb8(3), "RGB").save(art)
    out = tmp_path / "out"
    # immunize without a target: away from the image's own encoding
    assert _protect(tiny_models, str(art), "--mode", "immunize", "--intensity", "low", "--out", str(out)) == 0
    record = json.loads((out / "art.json").read_text())
    assert record["settings"]["objective"] == "away" and record["settings"]["like_jpeg"] == 90
    assert record["metrics"]["flip"] <= record["metrics"]["flip_limit"]
    assert record["mode"] == "immunize" and record["target"] is None
    # cloak without a target: a rendering of the image made by code, no diffusion model; recorded
    assert _protect(tiny_models, str(art), "--mode", "cloak", "--out", str(out / "cloak")) == 0
    record = json.loads((out / "cloak" / "art.json").read_text())
    assert record["target"]["kind"] == "code" and record["target"]["name"] == DEFAULT_RESTYLE
    assert record["target"]["model"] is None and record["settings"]["objective"] == "target"
    assert record["run_settings"]["target"]["kind"] == "code"
    # poison still needs a target, and says how to give one
    assert _protect(tiny_models, str(art), "--mode", "poison", "--out", str(out)) == 2
    assert "--target" in caplog.text and "--anchor" in caplog.text
    # JPEG on request: measured again after compression
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out), "--format", "jpeg",
                    "--jpeg-quality", "80", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    compressed = summary["images"][0]["compressed"]
    assert compressed["quality"] == 80 and compressed["lpips"] > 0 and compressed["mean_ratio"] > 0
    assert json.loads((out / "art.json").read_text())["compressed"]["lpips"] == compressed["lpips"]
    assert (out / "art.jpg").is_file()
    # TIFF and WebP outputs
    for fmt, suffix in (("tiff", ".tif"), ("webp", ".webp")):
        assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(tmp_path / fmt),
                        "--format", fmt) == 0
        assert load_image(tmp_path / fmt / f"art{suffix}").size == (corpus.H, corpus.W)


def test_presets_in_numbers():
    assert like_jpeg_for(None, None) == 75 and like_jpeg_for("low", None) == 90 and like_jpeg_for("high", 60) == 60
    assert effort_for(None, None, None) == (300, 200.0) and effort_for("preview", None, None) == (8, 5.0)
    assert robust_for_quality("preview", None, "web") == "off"
    assert robust_for_quality("preview", "strong", "web") == "strong"
    assert robust_for_quality(None, None, "web") == "web" and robust_for_quality("best", "off", "web") == "off"
    assert effort_for("fast", None, None) == (60, 60.0) and effort_for("best", 5, None) == (5, 900.0)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_tamper_then_verify(tmp_path, tiny_models, target, capsys):
    folder = corpus.write_numbered_pngs(tmp_path / "in")
    out = tmp_path / "out"
    assert _protect(tiny_models, str(folder), "--target", str(target), "--out", str(out)) == 0
    assert main(["verify", str(out)]) == 0
    assert "OK: 3 outputs" in capsys.readouterr().out

    data = bytearray((out / "t0.png").read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte
    (out / "t0.png").write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "TAMPERED: t0.png" in text and "t1.png" not in text

    (out / "t1.png").unlink()
    Image.fromarray(corpus.rgb8(7), "RGB").save(out / "stranger.png")
    record = json.loads((out / "t2.json").read_text())
    record["metrics"]["lpips"] = 0.0
    (out / "t2.json").write_text(json.dumps(record))
    (out / ".t2.png.x1y2.part").write_bytes(b"half")
    assert main(["verify", str(out), "--json"]) == 1
    problems = {(p["kind"], p["name"]) for p in json.loads(capsys.readouterr().out)["problems"]}
    assert {("tampered", "t0.png"), ("missing", "t1.png"), ("unrecorded", "stranger.png"),
            ("tampered", "t2.json"), ("partial", ".t2.png.x1y2.part")} <= problems


def test_two_shards_do_every_image_exactly_once(tmp_path, tiny_models, target, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"s{i}.png")
    out = tmp_path / "out"
    done = []
    for shard in ("1/2", "2/2"):
        assert _protect(tiny_models, str(folder), "--target", str(target), "--out", str(out), "--shard", shard,
                        "--json") == 0
        done += [i["input"] for i in json.loads(capsys.readouterr().out)["images"] if i["status"] == "done"]
    assert sorted(Path(d).name for d in done) == [f"s{i}.png" for i in range(5)]
    assert verify(out).ok and len(json.loads((out / INDEX_NAME).read_text())["entries"]) == 5


def test_kill_9_mid_batch_then_rerun_finishes_the_rest(tmp_path, tiny_models, target, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(corpus.rgb8(i, 48, 64), "RGB").save(folder / f"k{i}.png")
    before = corpus.snapshot(folder)
    out = tmp_path / "out"
    args = [str(folder), "--target", str(target), "--out", str(out), *tiny_protect_args(tiny_models, steps=40)]
    # the fault-injection point of ``fixative protect``: SIGKILL at the 5th search step of the 2nd image
    env = {**subprocess_env(), FAULT_ENV: "1:5:KILL"}
    proc = subprocess.run([sys.executable, "-m", "fixative", "protect", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    finished = {p.name for p in out.glob("k*.png")}
    assert 1 <= len(finished) < 5, "the kill must land mid-batch"

    assert main(["protect", *args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    redone = {Path(i["output"]).name for i in summary["images"] if i["status"] == "done"}
    skipped = {Path(i["output"]).name for i in summary["images"] if i["status"] == "skipped"}
    assert finished <= skipped and not finished & redone  # none done twice
    assert skipped | redone == {f"k{i}.png" for i in range(5)}  # all five done
    assert not list(out.rglob("*.part"))  # no partial file
    assert sorted(p.name for p in out.glob("k*.png")) == [f"k{i}.png" for i in range(5)]
    assert corpus.snapshot(folder) == before
    assert verify(out).ok


def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_models, target):
    pytest.importorskip("accelerate")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"m{i}.png")
    out = tmp_path / "out"
    launch = two_process_launch("fixative.cli.main", "protect", str(folder), "--target", str(target),
                                "--out", str(out), "--json", *(a for a in tiny_protect_args(tiny_models) if a != "-q"))
    run = subprocess.run(launch, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, launch_failure(run.stderr)
    summary = json.loads(run.stdout)
    inputs = [i["input"] for i in summary["images"] if i["status"] == "done"]
    assert sorted(Path(i).name for i in inputs) == [f"m{i}.png" for i in range(4)]  # each exactly once
    assert "shard 1/2" in run.stderr and "shard 2/2" in run.stderr
    assert verify(out).ok


def test_intensity_presets_are_visibility_budgets_and_budget_is_lpips():
    from fixative.cli.main import parse_protect_args, protect_options
    from fixative.core.budgets import LpipsLimit, VisibilityLimit
    from fixative.options import OutputOptions, ProtectOptions

    opts = protect_options(parse_protect_args(["a.png", "--out", "o", "--intensity", "high"])).search
    assert opts.budget_limit() == VisibilityLimit(like_jpeg=50) and opts.linf is None
    opts = protect_options(parse_protect_args(["a.png", "--out", "o", "--budget", "0.05", "--linf", "0.02"])).search
    assert opts.budget_limit() == LpipsLimit(0.05) and opts.linf == 0.02
    assert ProtectOptions([], OutputOptions(Path("o"))).search.budget_limit() == VisibilityLimit(like_jpeg=75)
