"""The desktop app's handlers (fixative.gui.job, speed, uploads, form), called directly (no browser, no web
server) on tiny offline models."""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from corpus import alpha8, bomb_png, rgb8, rgb16
from PIL import Image

from fixative.cli.main import main
from fixative.errors import ConfigError
from fixative.gui.explain import JobProgress, SpeedTable, intensity_table, progress_html, quality_table
from fixative.gui.form import JobSettings, command_line, control_message, job_options, parse_encoders
from fixative.gui.job import run_job
from fixative.gui.speed import measure_speed
from fixative.gui.uploads import check_uploads
from fixative.gui.workbench import Workbench
from fixative.provenance.manifest import verify

CPU = {"device": "cpu", "precision": "fp32"}


@pytest.fixture
def bench(tmp_path, tiny_taef2_models) -> Workbench:
    return Workbench(models_dir=tiny_taef2_models, root=tmp_path / "app", target_cache=tmp_path / "cache")


def _rgba(path: Path, seed: int = 0) -> Path:
    Image.fromarray(np.dstack([rgb8(seed), alpha8(seed)]), "RGBA").save(path)
    return path


def _rgb16(path: Path, seed: int = 2) -> Path:
    path.write_bytes(imagecodecs.png_encode(rgb16(seed)))
    return path


def test_job_gives_the_same_bytes_as_the_command_line(tmp_path, bench, tiny_taef2_models):
    """Same settings and seed: the app's PNGs (and the zip's) are byte-identical to `fixative protect`'s."""
    src = tmp_path / "src"
    src.mkdir()
    art, deep = _rgba(src / "art.png"), _rgb16(src / "deep.png")
    target = src / "target.png"
    Image.fromarray(rgb8(9)).save(target)
    originals = {p: p.read_bytes() for p in (art, deep, target)}
    settings = JobSettings(mode="poison", target_image=str(target), intensity="low", steps=3, seed=5, **CPU)
    progress = JobProgress()
    result = run_job(bench, [art, deep], settings, progress=progress)
    assert [im.name for im in result.images] == ["art.png", "deep.png"], result.message
    assert progress.phase == "done" and "Protected 2 images" in result.message

    cli_out = tmp_path / "cli"
    code = main(["protect", str(art), str(deep), "--out", str(cli_out), "--mode", "poison", "--target", str(target),
                 "--intensity", "low", "--steps", "3", "--seed", "5", "--encoder", "taef2", "--models-dir",
                 str(tiny_taef2_models), "--device", "cpu", "--precision", "fp32", "-q"])
    assert code == 0
    for image in result.images:
        expected = (cli_out / image.output.name).read_bytes()
        assert image.output.read_bytes() == expected
        record = json.loads((cli_out / image.output.name).with_suffix(".json").read_text())
        assert image.record["settings_hash"] == record["settings_hash"]
        assert image.record["metrics"]["lpips"] <= 0.03
    assert imagecodecs.png_decode(result.images[1].output.read_bytes()).dtype == np.uint16  # 16 bits kept
    with zipfile.ZipFile(result.zip) as zf:
        names = set(zf.namelist())
        assert {"art.png", "art.json", "deep.png", "deep.json", "fixative-index.json"} <= names
        assert zf.read("art.png") == (cli_out / "art.png").read_bytes()
        zf.extractall(tmp_path / "unzipped")
    report = verify(tmp_path / "unzipped")  # the zip is a folder `fixative verify` accepts
    assert report.ok and report.checked == 2, [p.line() for p in report.problems]
    assert all(p.read_bytes() == b for p, b in originals.items())  # uploads untouched
    # the shown command is the one that gives these files, with full paths (it runs as shown)
    import shlex

    words = shlex.split(result.command)
    assert words[:2] == ["fixative", "protect"] and "--mode=poison" in words
    assert [Path(w).name for w in words[2:4]] == ["art.png", "deep.png"] and all(Path(w).is_absolute()
                                                                                 for w in words[2:4])
    out_word = next(w for w in words if w.startswith("--out="))
    assert Path(out_word[6:]).is_absolute() and Path(out_word[6:]).is_dir()
    assert f"--target={target}" in words and "--quiet" not in words
    assert "--steps=3" in result.command and "--seed=5" in result.command


def test_views_and_metrics_in_words(tmp_path, bench):
    art = _rgba(tmp_path / "art.png")
    result = run_job(bench, [art], JobSettings(mode="immunize", steps=3, **CPU))
    image = result.images[0]
    before = Image.open(image.before)
    assert before.size == Image.open(image.output).size and before.mode == "RGBA"
    diff = np.asarray(Image.open(image.difference))
    assert diff.max() == 255 and "amplified" in image.difference_caption  # the largest change is white
    assert image.model_original and image.model_protected and "taef2" in image.model_note
    assert Image.open(image.model_protected).size == before.size
    for words in ("Visible change", "FLIP", "as JPEG at quality 75", "about as visible as saving it as JPEG",
                  "LPIPS", "Largest change of any pixel", "PSNR", "Effect on the model (taef2)", "3 steps",
                  "step limit"):
        assert words in image.metrics
    lpips = image.record["metrics"]["lpips"]
    assert f"{lpips:.4f}" in image.metrics


def test_no_decoder_says_so(tmp_path, tiny_models):
    bench = Workbench(models_dir=tiny_models, root=tmp_path / "app")
    art = _rgba(tmp_path / "a.png")
    settings = JobSettings(mode="immunize", steps=2, encoders=[str(tiny_models / "taesd" / "tiny_encoder.pth")],
                           **CPU)
    image = run_job(bench, [art], settings).images[0]
    assert image.model_protected is None and "cannot be shown" in image.model_note


def test_bad_uploads_are_named_and_the_app_keeps_working(tmp_path, bench):
    good = _rgba(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png())
    big = tmp_path / "big.png"
    Image.fromarray(rgb8(1, 256, 256)).save(big)
    bench.max_bytes = 50_000
    check = check_uploads([good, corrupt, empty, text, huge, big], max_bytes=bench.max_bytes, max_pixels=10**6)
    assert check.accepted == [good]
    problems = dict(check.problems)
    assert set(problems) == {"corrupt.png", "empty.jpg", "notes.txt", "huge.png", "big.png"}
    assert "empty" in problems["empty.jpg"] and "'.txt'" in problems["notes.txt"]
    assert "MB" in problems["big.png"] and "pixels" in problems["huge.png"]
    assert "corrupt.png" in check.message() and "1 image ready" in check.message()

    only_bad = run_job(bench, [corrupt, text], JobSettings(steps=2, **CPU))
    assert not only_bad.images and "corrupt.png" in only_bad.message and "Traceback" not in only_bad.message
    mixed = run_job(bench, [corrupt, good], JobSettings(mode="immunize", steps=2, **CPU))
    assert [im.name for im in mixed.images] == ["good.png"]
    assert "corrupt.png" in mixed.message  # named, and the good one done
    bad_target = run_job(bench, [good], JobSettings(target_image=str(text), steps=2, **CPU))
    assert "target image notes.txt" in bad_target.message and not bad_target.images


def test_settings_problems_and_missing_model_are_messages(tmp_path, bench):
    art = _rgba(tmp_path / "a.png")
    result = run_job(bench, [art], JobSettings(mode="poison", anchor=" ", steps=2, **CPU))
    assert "needs an anchor" in result.message
    missing = run_job(bench, [art], JobSettings(mode="immunize", encoders=["taesd3"], steps=2, **CPU))
    assert "taesd3" in missing.message and not missing.images
    assert run_job(bench, [art], JobSettings(mode="immunize", steps=2, **CPU)).images  # still works


def test_cancel_stops_cleanly(tmp_path, bench):
    images = [_rgba(tmp_path / f"a{i}.png", i) for i in range(2)]
    cancel, stepped = threading.Event(), threading.Event()

    class Stepping(JobProgress):  # the job's progress callback tells the test when step 2 is shown (no polling)
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "message" and self.phase == "protecting" and self.step >= 2:
                stepped.set()

    progress = Stepping()
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", run_job(
        bench, images, JobSettings(mode="immunize", steps=5000, **CPU), progress=progress, cancel=cancel)))
    worker.start()
    assert stepped.wait(120), progress.message
    assert progress.phase == "protecting" and progress.steps == 5000
    html = progress_html(progress)
    assert "step " in html and "of 5000" in html and "0 of 2 done" in html
    cancel.set()
    worker.join(60)
    result = box["r"]
    assert result.cancelled == 2 and not result.images and progress.phase == "cancelled"
    assert "nothing half-done was saved" in result.message
    out = result.folder / "out"
    assert not list(out.glob("*.png")) and not list(out.glob("*.json.*"))
    # a job cancelled while queued never starts
    token = bench.new_token()
    assert bench.cancel(token)
    queued = run_job(bench, images, JobSettings(mode="immunize", steps=2, **CPU), cancel=bench.cancel_event(token))
    assert "before it started" in queued.message and not queued.images


def test_options_for_each_mode_are_built_from_the_form(tmp_path):
    ins, out = [tmp_path / "a.png"], tmp_path / "o"
    cloak = job_options(JobSettings(style="auto", target_model="sd15"), ins, out).target
    assert cloak.mode == "cloak" and cloak.style == "auto" and cloak.model == "sd15"
    poison_options = job_options(JobSettings(mode="poison", concept="-dog", anchor="cat"), ins, out)
    poison = poison_options.target
    assert poison.anchor == "cat" and poison.concept == "-dog"
    assert "--concept=-dog" in command_line(poison_options)  # text starting with '-' is a value
    pattern = job_options(JobSettings(mode="immunize", immunize="gray"), ins, out).target
    assert pattern.pattern == "gray" and pattern.style is None
    away = job_options(JobSettings(mode="immunize", quality="fast"), ins, out)
    assert away.target.made is None and (away.search.steps, away.search.seconds) == (60, 60.0)
    assert away.search.budget is None and away.search.like_jpeg == 75 and away.search.linf is None
    # where the image will be posted: robust for that platform (the CLI's default: any site), or no robust layer
    assert (away.search.robust, away.search.platform) == ("web", "generic")
    insta = job_options(JobSettings(posting="instagram"), ins, out).search
    assert (insta.robust, insta.platform) == ("web", "instagram")
    offline = job_options(JobSettings(posting="off"), ins, out).search
    assert offline.robust == "off" and offline.platform is None
    assert JobSettings(posting="myspace").problems() == ["unknown platform 'myspace'"]
    with pytest.raises(ConfigError, match="target.mode") as bad:
        job_options(JobSettings(mode="nonsense"), ins, out)
    assert bad.value.field == "target.mode" and "unknown 'Protection' 'nonsense'" in control_message(bad.value)
    with pytest.raises(ConfigError) as zero:
        job_options(JobSettings(steps=0), ins, out)
    assert zero.value.field == "search.steps" and "'Steps (Advanced options)'" in control_message(zero.value)
    assert parse_encoders("taef2, sd15\n/x/y.pth,") == ["taef2", "sd15", "/x/y.pth"]


def test_style_cloak_with_a_made_target(tmp_path, bench, tiny_sd_dir, monkeypatch):
    import fixative.targets.made as targets

    original = targets.GenerationSettings
    monkeypatch.setattr(targets, "GenerationSettings", lambda: original(steps=4, strength=0.5, candidates=2))
    art = _rgba(tmp_path / "a.png")
    settings = JobSettings(mode="cloak", style="cubism", target_model=str(tiny_sd_dir), clip_model="none", steps=2,
                           **CPU)
    result = run_job(bench, [art], settings)
    assert result.images, result.message
    target = result.images[0].record["target"]
    assert target["kind"] == "style" and target["style"] == "cubism"
    assert "style 'cubism'" in result.images[0].metrics
    again = run_job(bench, [art], settings)  # the maker is kept, and the target comes from its cache
    assert again.images[0].record["target"]["cache"]["hit"] is True

    # cancel while a new target is being generated: it stops there, mid-generation
    cancel = threading.Event()

    class Watched(JobProgress):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "message" and "making its target: step 1 of" in value:
                self.__dict__.setdefault("seen", []).append(value)
                cancel.set()

    watched = Watched()
    stopped = run_job(bench, [art], replace(settings, style="ukiyo-e"), progress=watched, cancel=cancel)
    assert watched.seen == ["Image 1 of 1: a.png (making its target: step 1 of 2)..."]
    assert stopped.cancelled == 1 and not stopped.images and watched.phase == "cancelled"


def test_presets_and_expected_time(bench):
    table = intensity_table("medium")
    for text in ("quality 90", "quality 75", "quality 50", "FLIP", "**Medium (balanced)**"):
        assert text in table
    speed = SpeedTable()
    assert "not measured yet" in quality_table(speed, ["taef2"], "cpu", None, "fast")
    speed.add(["taef2"], "cpu", 10, 5.0, 0.5, "test")  # 1 s per step per megapixel
    text = quality_table(speed, ["taef2"], "cpu", 1.5, "standard")
    assert "| **Standard** | 300 | 3 min | about 3 min |" in text  # 300 steps x 1 s x 1.5 MP, capped at 200 s
    assert "| Preview | 8 | 5 s | about 5 s |" in text
    assert "| Best | 1000 | 15 min | about 15 min |" in text
    assert "| Fast | 60 | 60 s | about 60 s |" in text  # capped by the preset's time limit
    assert "1 s per step per megapixel" in text
    message = measure_speed(bench, JobSettings(**CPU), size=64, steps=3)
    assert message.startswith("Measured") and bench.speed.per_step_mp(["taef2"], "cpu") is not None
    assert "about" in quality_table(bench.speed, ["taef2"], "cpu", None, "standard")



def test_gui_command_without_gradio_says_how_to_install(monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the gui extra were not installed
    assert main(["gui", "--no-browser"]) == 2
    assert "pip install 'fixative[gui]'" in caplog.text and "Traceback" not in caplog.text
