"""`fixative protect` with made targets, end to end: a tiny save_pretrained pipeline folder, no network."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fixative.targets.made as targets
from fixative.cli.main import main

from tiny import smooth_image, tiny_protect_args


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    arr = (smooth_image(h, w, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path)
    return path


def _protect(models: Path, *args: str) -> int:
    return main(["protect", *args, *tiny_protect_args(models, steps=3)])


@pytest.fixture
def fast_generation(monkeypatch):
    """Two scheduler steps and two anchor candidates instead of 50 and 4: the same code paths, quicker."""
    original = targets.GenerationSettings
    monkeypatch.setattr(targets, "GenerationSettings", lambda: original(steps=2, strength=0.5, candidates=2))


def test_cloak_with_style_end_to_end_and_cache_reuse(tmp_path, tiny_models, tiny_sd_dir, fast_generation,
                                                     monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    art = _png(tmp_path / "art.png", 40, 48, 0)
    common = ["--mode", "cloak", "--style", "a ukiyo-e woodblock print", "--target-model", str(tiny_sd_dir),
              "--target-cache", str(tmp_path / "cache")]
    assert _protect(tiny_models, str(art), *common, "--out", str(tmp_path / "a"), "--budget", "0.05") == 0
    record = json.loads((tmp_path / "a" / "art.json").read_text())
    recipe = record["target"]
    assert recipe["kind"] == "style" and recipe["prompt"] == "a ukiyo-e woodblock print"
    assert recipe["model"] == str(tiny_sd_dir) and recipe["seed"] == 0 and recipe["strength"] == 0.5
    assert recipe["pipeline"] == "StableDiffusionImg2ImgPipeline" and recipe["cache"]["hit"] is False
    assert record["metrics"]["lpips"] <= 0.05
    assert record["run_settings"]["target"]["options"]["style"] == "a ukiyo-e woodblock print"

    # another budget: the target comes from the cache, no generator is loaded
    def refuse(*a, **k):
        raise AssertionError("the generator was loaded again")

    monkeypatch.setattr(targets, "load_pipeline", refuse)
    assert _protect(tiny_models, str(art), *common, "--out", str(tmp_path / "b"), "--budget", "0.03") == 0
    second = json.loads((tmp_path / "b" / "art.json").read_text())
    assert second["target"]["cache"] == {**recipe["cache"], "hit": True}
    assert second["target"]["prompt"] == recipe["prompt"] and second["metrics"]["lpips"] <= 0.03
    assert "reused from the cache" in caplog.text


def test_poison_with_anchor_end_to_end(tmp_path, tiny_models, tiny_sd_dir, fast_generation):
    art = _png(tmp_path / "dog.png", 32, 56, 1)
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--mode", "poison", "--concept", "dog", "--anchor", "cat",
                    "--target-model", str(tiny_sd_dir), "--target-cache", str(tmp_path / "cache"),
                    "--clip-model", "none", "--out", str(out)) == 0
    recipe = json.loads((out / "dog.json").read_text())["target"]
    assert recipe["kind"] == "anchor" and recipe["concept"] == "dog" and recipe["anchor"] == "cat"
    assert recipe["prompt"] == "a photo of a cat" and recipe["model"] == str(tiny_sd_dir)
    assert recipe["seed"] in (0, 1) and len(recipe["candidates"]) == 2
    assert recipe["selection"]["chosen_seed"] == recipe["seed"]


def test_style_auto_is_one_choice_for_the_portfolio(tmp_path, tiny_models, tiny_sd_dir, fast_generation, caplog):
    caplog.set_level(logging.INFO)
    folder = tmp_path / "portfolio"
    folder.mkdir()
    for i in range(2):
        _png(folder / f"p{i}.png", 40, 40, i)
    out = tmp_path / "out"
    assert _protect(tiny_models, str(folder), "--style", "auto", "--target-model", str(tiny_sd_dir),
                    "--target-cache", str(tmp_path / "cache"), "--clip-model", "none", "--out", str(out)) == 0
    styles = {json.loads((out / f"p{i}.json").read_text())["target"]["style"] for i in range(2)}
    assert len(styles) == 1 and styles <= set(targets.STYLE_NAMES)
    assert f"chose '{styles.pop()}'" in caplog.text and "for all 2 image(s)" in caplog.text


def test_immunize_with_pattern(tmp_path, tiny_models):
    art = _png(tmp_path / "a.png", 40, 48, 0)
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--mode", "immunize", "--pattern", "texture", "--out", str(out)) == 0
    record = json.loads((out / "a.json").read_text())
    assert record["target"]["kind"] == "pattern" and record["run_settings"]["target"]["objective"] == "target"


@pytest.mark.parametrize(("flags", "message"), [
    (["--mode", "poison", "--style", "cubism"], "--style makes a target for --mode cloak"),
    (["--anchor", "cat"], "--anchor makes a target for --mode poison"),
    (["--mode", "poison", "--concept", "dog"], "--concept needs --anchor"),
    (["--style", "cubism", "--target", "x.png"], "either --target or --style"),
    (["--target-model", "sd15", "--target", "x.png"], "--target-model is for made targets"),
    (["--mode", "immunize", "--pattern", "gray", "--target-model", "sd15"], "made by code"),
])
def test_bad_combinations_are_one_clear_error(tmp_path, tiny_models, caplog, flags, message):
    art = _png(tmp_path / "a.png", 32, 32, 0)
    assert _protect(tiny_models, str(art), *flags, "--out", str(tmp_path / "o")) == 2
    assert message in caplog.text


def test_missing_generator_is_one_clear_error(tmp_path, tiny_models, caplog):
    art = _png(tmp_path / "a.png", 32, 32, 0)
    code = _protect(tiny_models, str(art), "--style", "cubism", "--target-model", "nobody/nothing",
                    "--target-cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"))
    assert code in (1, 2)
    assert "nobody/nothing" in caplog.text and "hf download" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("mode", ["cloak", "poison"])
def test_cancel_stops_target_generation_mid_way(tmp_path, tiny_models, tiny_sd_dir, monkeypatch, mode):
    """An app's cancel acts inside the generator's denoising loop: no further step, no search, nothing written."""
    from fixative.batch.runner import BatchHooks, run_batch
    from fixative.cli.main import parse_protect_args, protect_options

    original = targets.GenerationSettings
    monkeypatch.setattr(targets, "GenerationSettings", lambda: original(steps=8, strength=0.5, candidates=2))
    art = _png(tmp_path / "art.png", 32, 32, 0)
    made = ["--style", "cubism"] if mode == "cloak" else ["--mode", "poison", "--anchor", "cat", "--clip-model", "none"]
    out = tmp_path / "out"
    args = parse_protect_args([str(art), *made, "--target-model", str(tiny_sd_dir), "--target-cache",
                               str(tmp_path / "cache"), "--out", str(out), *tiny_protect_args(tiny_models, steps=3)])
    seen: list[tuple[int, int]] = []
    searched: list[object] = []

    def on_target_step(job, done, total):
        seen.append((done, total))
        return done < 2  # cancel after the second denoising step

    summary = run_batch(protect_options(args), BatchHooks(on_target_step=on_target_step,
                                                          on_step=lambda job, info: searched.append(info)))
    total = 4 if mode == "cloak" else 16  # img2img runs steps x strength; txt2img steps x candidates
    assert seen == [(1, total), (2, total)]
    assert [o.status for o in summary.outcomes] == ["cancelled"] and not searched
    assert not (out / "art.png").exists() and not (out / "art.json").exists()
    assert not list((tmp_path / "cache").rglob("*.png"))  # a cancelled generation is not cached

    # the same run without cancelling reports every step and finishes
    seen.clear()
    summary = run_batch(protect_options(args), BatchHooks(on_target_step=lambda job, d, t: seen.append((d, t))))
    assert [o.status for o in summary.outcomes] == ["done"] and seen[-1] == (total, total)
    assert [d for d, _ in seen] == list(range(1, total + 1))
