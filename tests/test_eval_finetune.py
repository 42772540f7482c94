"""Fine-tuning evaluation (issue 7) on the tiny offline Stable Diffusion pipeline, on the CPU.

Captions; the training loop (LoRA weights change, a stopped run resumes from its checkpoint and ends
exactly where an uninterrupted run ends, a run folder refuses other settings); generation with the
LoRA loaded and unloaded; the whole mimicry + poisoning experiment through the command line; and a
2-process ``accelerate launch``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import launch_failure, subprocess_env, two_process_launch

pytest.importorskip("peft")
pytest.importorskip("accelerate")

def _write_images(folder: Path, names: list[str], seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """Smooth random colour images (PNG) named ``NAME.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        low = rng.random((4, 4, 3))
        img = Image.fromarray((low * 255).astype(np.uint8)).resize(size[::-1], Image.BICUBIC)
        img.save(folder / f"{name}.png")
    return folder


def _perturbed_copies(src: Path, dest: Path, seed: int, amplitude: int = 12) -> Path:
    """'Protected' copies: each image plus a fixed pattern of +-amplitude levels, saved as PNG."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for p in sorted(src.glob("*.png")):
        arr = np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
        noise = rng.integers(-amplitude, amplitude + 1, arr.shape)
        Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).save(dest / p.name)
    return dest


# --- captions ----------------------------------------------------------------------------------------


def test_captions_files_and_auto(tmp_path):
    from fixative.errors import ConfigError
    from fixative.eval.captions import caption_images, list_images, words_of

    folder = _write_images(tmp_path / "art", ["starry_night_01", "water-lilies-2", "portrait"], 0)
    (folder / "portrait.txt").write_text("a portrait in oils\n")
    images = list_images(folder)
    auto = {e.path.name: e.caption for e in caption_images(images, "auto", "{name}, by {folder}")}
    assert auto == {"starry_night_01.png": "starry night, by art", "water-lilies-2.png": "water lilies, by art",
                    "portrait.png": "a portrait in oils"}  # a sidecar NAME.txt wins over the template
    assert words_of("cat_03") == "cat"

    csv = tmp_path / "c.csv"
    csv.write_text("file_name,text\nstarry_night_01.jpg,night sky\nwater-lilies-2.png,lilies\nportrait.png,face\n"
                   "unused.png,x\n")
    by_csv = {e.path.name: e.caption for e in caption_images(images, csv)}
    assert by_csv["starry_night_01.png"] == "night sky"  # matched by name without extension
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps({"file_name": p.name, "text": f"t{i}"}) for i, p in enumerate(images)))
    assert [e.caption for e in caption_images(images, jsonl)] == ["t0", "t1", "t2"]
    one = tmp_path / "one.txt"
    one.write_text("an impressionist painting\n")
    assert {e.caption for e in caption_images(images, one)} == {"an impressionist painting"}
    tab = tmp_path / "tab.txt"
    tab.write_text("portrait.png\tp\nstarry_night_01\ts\n")
    with pytest.raises(ConfigError, match="no caption for water-lilies-2.png"):
        caption_images(images, tab)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,words\na.png,b\n")
    with pytest.raises(ConfigError, match=r"bad.csv, line 2"):
        caption_images(images, bad)


# --- the training loop -----------------------------------------------------------------------------


def test_train_resumes_from_checkpoint_and_changes_lora(tmp_path, tiny_sd_dir):
    from safetensors.torch import load_file

    from fixative.errors import ConfigError
    from fixative.eval.captions import caption_images, list_images
    from fixative.eval.finetune import FinetuneSettings, last_checkpoint, train

    data = _write_images(tmp_path / "data", [f"cat_{i}" for i in range(3)], 1)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    examples = caption_images(list_images(data), "auto")
    settings = FinetuneSettings(model=str(tiny_sd_dir), resolution=32, max_steps=6, checkpoint_every=2, lr=1e-3,
                                device="cpu")
    run = tmp_path / "run"
    first = train(settings, examples, run, stop_after=3)  # an interruption after step 3 (checkpoint at 2 and 3)
    assert first.steps == 3 and first.resumed_from is None
    assert last_checkpoint(run)[0] == 3
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    assert not (run / "lora").exists()
    second = train(settings, examples, run)
    assert second.resumed_from == 3 and second.steps == 6
    assert [r["step"] for r in second.losses] == [1, 2, 3, 4, 5, 6]  # 1-3 kept, 4-6 new: none repeated
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["started_from_step"] == 3
    assert record["images"] == 3 and "broken.png: skipped" in record["notes"][0]  # a bad file does not stop it

    straight = train(settings, examples, tmp_path / "straight")  # the same run without interruption
    resumed_w, straight_w = load_file(str(second.weights)), load_file(str(straight.weights))
    assert resumed_w.keys() == straight_w.keys() and resumed_w
    assert all(np.allclose(resumed_w[k].numpy(), straight_w[k].numpy(), atol=1e-6) for k in resumed_w)
    assert [r["loss"] for r in second.losses] == pytest.approx([r["loss"] for r in straight.losses], abs=1e-5)
    # the LoRA weights changed: the "up" matrices start at zero (peft's init) and are no longer zero
    ups = [v for k, v in resumed_w.items() if "lora.up" in k or "lora_B" in k]
    assert ups and all(float(v.abs().max()) > 0 for v in ups)
    step3 = load_file(str(last_checkpoint(run)[1] / "unet_lora.safetensors"))
    assert any(float(v.abs().max()) > 0 for v in step3.values())

    again = train(settings, examples, run)  # finished: not redone
    assert again.skipped and again.steps == 6
    with pytest.raises(ConfigError, match="other data or training settings"):
        train(FinetuneSettings(**{**settings.__dict__, "lr": 5e-4}), examples, run)


def test_generation_with_lora_and_full_finetunes(tmp_path, tiny_sd_dir):
    from fixative.eval.captions import caption_images, list_images
    from fixative.eval.finetune import FinetuneSettings, train
    from fixative.eval.generate import Sampler, SampleSettings

    examples = caption_images(list_images(_write_images(tmp_path / "d", ["dog_0", "dog_1"], 2)), "auto")
    res = train(FinetuneSettings(model=str(tiny_sd_dir), resolution=32, max_steps=3, checkpoint_every=0, lr=1e-2,
                                 device="cpu"), examples, tmp_path / "run")
    sampler = Sampler.load(str(tiny_sd_dir), device="cpu")
    s = SampleSettings(steps=2, size=32)
    base = sampler.generate(["dog", "a cat"], [0, 1], s)
    tuned = sampler.generate(["dog", "a cat"], [0, 1], s, weights=res.weights)
    after = sampler.generate(["dog", "a cat"], [0, 1], s)
    assert base.shape == (2, 2, 3, 32, 32)
    assert float((base - tuned).abs().max()) > 1e-3  # the LoRA is applied
    assert float((base - after).abs().max()) == 0  # and unloaded again
    alone = sampler.generate(["a cat"], [1], s)  # (prompt, seed) draws the same image in any batch
    assert float((alone[0, 0] - base[1, 1]).abs().max()) < 1e-5

    full = FinetuneSettings(model=str(tiny_sd_dir), method="full", resolution=32, max_steps=2, checkpoint_every=1,
                            lr=1e-3, device="cpu")
    assert train(full, examples, tmp_path / "full", stop_after=1).steps == 1
    resumed = train(full, examples, tmp_path / "full")
    assert resumed.resumed_from == 1 and resumed.weights.name == "unet" and (resumed.weights / "config.json").is_file()
    assert list(resumed.weights.glob("*.safetensors"))
    tuned_full = sampler.generate(["dog"], [0], s, weights=resumed.weights)
    assert float((tuned_full[0, 0] - base[0, 0]).abs().max()) > 1e-4
    assert float((sampler.generate(["dog"], [0], s)[0, 0] - base[0, 0]).abs().max()) < 1e-5  # UNet swapped back


# --- the experiment through the command line -----------------------------------------------------


def test_mimicry_and_poisoning_end_to_end_cli(tmp_path, tiny_sd_dir, tiny_clip_dir, capsys):
    from fixative.cli.main import main

    clean = _write_images(tmp_path / "clean", [f"painting_{i}" for i in range(4)], 3)
    protected = _perturbed_copies(clean, tmp_path / "protected", 4, amplitude=40)
    poisoned = _write_images(tmp_path / "poison", [f"dog_{i}" for i in range(2)], 5)
    other = _write_images(tmp_path / "other", ["house_0", "tree_0"], 6)
    out = tmp_path / "exp"
    args = ["eval", "mimicry", "--model", str(tiny_sd_dir), "--clean", str(clean), "--protected", str(protected),
            "--holdout", "1", "--poisoned", str(poisoned), "--concept", "dog", "--anchor", "cat", "--other", str(other),
            "--poison-counts", "0", "2", "--poison-images", "2", "--purify", "blur",
            "--style-model", str(tiny_clip_dir), "--classifier", str(tiny_clip_dir),
            "--resolution", "32", "--max-steps", "4", "--checkpoint-every", "2", "--lr", "5e-3", "--device", "cpu",
            "--seeds", "0", "1", "--sample-steps", "2", "--out", str(out), "-q"]
    assert main(args) == 0
    headline = capsys.readouterr().out
    assert "trained on protected" in headline and "attack success" in headline
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").stat().st_size > 10_000 and (out / "headline.md").is_file()
    assert set(report["runs"]) == {"clean", "protected", "purified-blur", "poison-0", "poison-2"}
    assert all(r["steps"] == 4 and len(r["loss"]) == 4 for r in report["runs"].values())
    style = report["style"]
    assert style["metric"]["kind"] == "clip" and style["prompts"] == ["painting"]
    assert set(style["models"]) == {"base", "clean", "protected", "purified-blur"}
    assert all(len(m["per_seed"]) == 2 and m["ci95"] is not None for m in style["models"].values())
    assert "protected - clean" in style["effects"]
    # same prompt, same seed: the clean- and the protected-trained models draw different images
    a = np.asarray(Image.open(style["samples"]["clean"][0][0]), dtype=np.int16)
    b = np.asarray(Image.open(style["samples"]["protected"][0][0]), dtype=np.int16)
    assert a.shape == (32, 32, 3) and np.abs(a - b).max() > 0
    poison = report["poison"]
    assert set(poison["counts"]) == {"0", "2"} and poison["anchor_labels"] == ["cat"]
    assert all(0 <= c["mean"] <= 1 and len(c["per_seed"]) == 2 for c in poison["counts"].values())
    assert report["runs"]["poison-2"]["images"] == 4 and report["runs"]["poison-0"]["images"] == 2
    assert sorted(p.name for p in (out / "data" / "purified-blur").iterdir()) == [f"painting_{i}.png" for i in range(3)]

    # rerunning the command redoes no training (every run is complete) and rewrites the report
    assert main(args) == 0
    again = json.loads((out / "report.json").read_text())
    assert all(r["skipped"] for r in again["runs"].values())
    assert again["style"]["models"]["clean"]["per_seed"] == style["models"]["clean"]["per_seed"]


def test_mimicry_refuses_bad_setups(tmp_path, tiny_sd_dir, caplog):
    from fixative.cli.main import main

    clean = _write_images(tmp_path / "clean", ["a_0", "a_1"], 0)
    protected = _write_images(tmp_path / "protected", ["a_1"], 1)
    base = ["eval", "mimicry", "--model", str(tiny_sd_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
    cases = [
        (["--clean", str(clean)], "needs both --clean and --protected"),
        (["--clean", str(clean), "--protected", str(protected), "--holdout", "1"], "no protected copy of a_0.png"),
        (["--clean", str(clean), "--protected", str(protected), "--holdout", "2"], "--holdout 2"),
        (["--poisoned", str(clean), "--concept", "dog"], "needs --concept, --anchor and --other"),
    ]
    for extra, message in cases:
        caplog.clear()
        assert main(base + extra) == 2
        assert message in caplog.text
    caplog.clear()
    assert main(["eval", "finetune", "--model", str(tmp_path), "--train", str(clean), "--out", str(tmp_path / "r"),
                 "--device", "cpu"]) == 2
    assert "--model" in caplog.text and "not a diffusers pipeline folder" in caplog.text
    assert not (tmp_path / "o" / "runs").exists()


# --- several processes --------------------------------------------------------------------------


def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_sd_dir):
    data = _write_images(tmp_path / "data", [f"cat_{i}" for i in range(4)], 7)
    out = tmp_path / "run"
    launch = two_process_launch("fixative", "eval", "finetune", "--model", str(tiny_sd_dir), "--train", str(data),
                                "--captions", "auto", "--out", str(out), "--resolution", "32",
                                "--max-steps", "3", "--checkpoint-every", "2", "--device", "cpu")
    run = subprocess.run(launch, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, launch_failure(run.stderr)
    record = json.loads((out / "run.json").read_text())
    assert record["processes"] == 2 and record["status"] == "done" and record["steps"] == 3
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-3").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # each process saved its own state
    assert [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()] == [1, 2, 3]
