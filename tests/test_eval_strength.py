"""``fixative eval strength`` end to end on tiny offline models: efficacy, noise control, robustness,
decoded views, detectors, report files and the command line."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fixative.cli.main import main
from fixative.core.optimizer import OptimizerSettings
from fixative.eval.countermeasures import ImpressSettings
from fixative.eval.pairs import find_pairs
from fixative.eval.report import headline_text, write_report
from fixative.eval.strength import StrengthEvaluator, StrengthSettings
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector
from fixative.models.taesd import TAESDDecoder, TAESDEncoder

from tiny import smooth_image

pytest.importorskip("matplotlib", reason="the eval extra is not installed: pip install -e '.[eval]'")
pytest.importorskip("transformers", reason="the eval extra (transformers, for CLIP) is not installed")

BUDGET = 0.08
NAMES = ("a", "b", "c", "d")


def _save_backbone(net: str, dest: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
    save_file({f"features.{k}": v.contiguous() for k, v in model.features.state_dict().items()}, str(dest))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Tiny TAESD-format encoder+decoder ('tiny'), a second encoder without decoder ('other'),
    and random LPIPS alex / VGG16 backbones (VGG16 also serves the style distance)."""
    root = tmp_path_factory.mktemp("eval-models")
    (root / "taesd").mkdir()
    (root / "lpips").mkdir()
    torch.manual_seed(0)
    torch.save(TAESDEncoder(4, width=8).half().state_dict(), root / "taesd" / "tiny_encoder.pth")
    torch.save(TAESDDecoder(4, width=8).half().state_dict(), root / "taesd" / "tiny_decoder.pth")
    torch.manual_seed(1)
    torch.save(TAESDEncoder(4, width=8).half().state_dict(), root / "taesd" / "other_encoder.pth")
    _save_backbone("alex", root / "lpips" / "alexnet_features.safetensors")
    _save_backbone("vgg", root / "lpips" / "vgg16_features.safetensors")
    return root


def _specs(models: Path) -> list[str]:
    return [str(models / "taesd" / "tiny_encoder.pth"), str(models / "taesd" / "other_encoder.pth")]


@pytest.fixture(scope="module")
def dataset(models, tmp_path_factory) -> dict[str, Path]:
    """Four originals (48x64), one target, Fixative-protected copies (with JSON records) and an
    LPIPS-matched Gaussian-noise 'protection' of each."""
    root = tmp_path_factory.mktemp("eval-data")
    dirs = {k: root / k for k in ("orig", "prot", "noise")}
    for d in dirs.values():
        d.mkdir()
    target_path = root / "target.png"
    save_png(target_path, smooth_image(48, 64, seed=99))
    target = load_image(target_path).rgb
    spec = _specs(models)[0]
    protector = load_protector([spec], models_dir=str(models), device="cpu")
    for i, name in enumerate(NAMES):
        x = load_image(save_png(dirs["orig"] / f"{name}.png", smooth_image(48, 64, seed=i))).rgb
        result = protector.protect(x, target, budget=BUDGET, settings=OptimizerSettings(steps=12, seed=0,
                                                                                        precision="fp32"))
        save_png(dirs["prot"] / f"{name}.png", result.image)
        record = {"encoders": [spec], "target": {"path": str(target_path)}}
        (dirs["prot"] / f"{name}.json").write_text(json.dumps(record))
        g = torch.Generator().manual_seed(i)
        noise = torch.randn(x.shape, generator=g) * 0.01
        from fixative.core.constraints import LpipsBudget, quantize

        budget = LpipsBudget(protector.perceptual, x, result.metrics.lpips)
        delta, _, _ = budget.scale_back(noise, levels=255, max_scale=64.0)
        save_png(dirs["noise"] / f"{name}.png", quantize(x + delta))
    dirs["target"] = target_path
    return dirs


@pytest.fixture(scope="module")
def evaluator(models, tiny_clip_dir) -> StrengthEvaluator:
    settings = StrengthSettings(
        encoders=_specs(models), models_dir=str(models), device="cpu", classifier=str(tiny_clip_dir),
        labels=["cat", "dog", "car", "tree"], jpeg_qualities=(90, 50),
        impress_settings=ImpressSettings(budget=0.05, steps=3), poison_fraction=0.25,
    )
    return StrengthEvaluator.from_settings(settings)


@pytest.fixture(scope="module")
def report(evaluator, dataset):
    pairs, notes = find_pairs(dataset["orig"], dataset["prot"])  # target from the JSON records
    return evaluator.evaluate(pairs, notes)


def _light(evaluator: StrengthEvaluator) -> StrengthEvaluator:
    """The same models without countermeasures and detectors (for checks of the plain measurement)."""
    light = copy.copy(evaluator)
    light.countermeasures = []
    light.settings = replace(evaluator.settings, detectors=False)
    return light


@pytest.fixture(scope="module")
def noise_report(evaluator, dataset):
    pairs, notes = find_pairs(dataset["orig"], dataset["noise"], dataset["target"])
    return _light(evaluator).evaluate(pairs, notes)


def test_pairs_by_name_with_target_from_record(dataset, tmp_path):
    pairs, notes = find_pairs(dataset["orig"], dataset["prot"])
    assert [p.name for p in pairs] == list(NAMES)
    assert all(p.target == dataset["target"] for p in pairs)
    assert all(len(p.protected_with) == 1 for p in pairs)
    assert notes == []
    # an unmatched file is noted and left out; a folder of targets is matched by name
    extra = tmp_path / "prot"
    extra.mkdir()
    for name in ("a", "zzz"):
        (extra / f"{name}.png").write_bytes((dataset["prot"] / "a.png").read_bytes())
    pairs, notes = find_pairs(dataset["orig"], extra, dataset["target"])
    assert [p.name for p in pairs] == ["a"]
    assert any("zzz" in n for n in notes) and any("b.png" in n for n in notes)


def test_imperceptibility_and_efficacy(report, models):
    tiny, other = _specs(models)
    assert report.aggregate["images"] == 4 and report.aggregate["mode"] == ["target"]
    for r in report.images:
        assert r.imperceptibility["lpips_alex"] <= BUDGET + 1e-4
        assert r.imperceptibility["psnr"] > 20 and 0 < r.imperceptibility["ssim"] <= 1
        assert r.imperceptibility["lpips_vgg"] > 0 and r.imperceptibility["linf"] > 0
    eff = report.aggregate["efficacy"]
    assert eff["none"][tiny]["gain"] > 0.2  # the encoder it was protected against
    # the metric tells protection from noise of the same LPIPS
    control = report.aggregate["noise_control"]
    assert abs(control["lpips_alex"] - report.aggregate["imperceptibility"]["lpips_alex"]["mean"]) < 0.01
    assert eff["none"][tiny]["gain"] > control["encoders"][tiny]["gain"] + 0.15
    roles = {e["name"]: e["role"] for e in report.encoders}
    assert roles[tiny] == "used to protect" and roles[other].startswith("transfer")


def test_every_countermeasure_is_measured(report, models):
    expected = ["none", "jpeg90", "jpeg50", "downup0.5", "noise0.03", "blur1", "noise0.05_downup0.5",
                "platform2048q85", "noisy_upscale", "impress", "training view 512 crop", "training view 1024 px"]
    assert list(report.aggregate["efficacy"]) == expected
    for r in report.images:
        assert list(r.efficacy) == expected
    for cname, per in report.aggregate["efficacy"].items():
        for entry in per.values():
            assert entry["gain"] is not None and len(entry["per_image_gain"]) == 4
            if cname != "none" and entry["retention"] is not None:
                assert -5 < entry["retention"] < 5
    noisy = next(c for c in report.countermeasures if c["name"] == "noisy_upscale")
    assert noisy["method"].startswith("classical")
    impress = next(c for c in report.countermeasures if c["name"] == "impress")
    assert impress["purifier"].endswith("tiny_encoder.pth")


def test_decoded_views_concept_and_style(report, models):
    tiny, other = _specs(models)
    r = report.images[0]
    concept = r.efficacy["none"][tiny].concept
    assert concept["anchor"] in ("cat", "dog", "car", "tree")
    assert set(concept) >= {"success", "success_top5", "p_anchor_protected_view", "p_anchor_clean_view"}
    assert r.efficacy["none"][tiny].style["ratio"] > 0
    assert r.efficacy["none"][other].concept is None  # no decoder: no decoded view
    assert "concept_success" in report.aggregate["efficacy"]["jpeg50"][tiny]
    assert r.labels["target"] == concept["anchor"]


def test_detectors_report_auc(report):
    st = report.stealth
    assert st["trials"] == 4 and st["poisoned_images_per_trial"] == 1 and st["samples_per_image"] == 5
    assert set(st["spaces"]) == {f"latent:{n}" for n in (e["name"] for e in report.encoders)} | {
        "classifier:clip-zero-shot"}
    for per in st["spaces"].values():
        for det in ("knn", "spectral", "activation_clustering"):
            assert 0 <= per[det]["roc_auc"] <= 1
            assert 0 <= per[det]["detection_rate_at_fpr"] <= 1
            counts = per[det]["own_threshold"]
            assert sum(counts.values()) == 4 * (4 * 5 + 5)  # trials x (clean + poison samples)


def test_noise_protection_shows_near_zero_efficacy(report, noise_report, models):
    tiny = _specs(models)[0]
    assert noise_report.aggregate["imperceptibility"]["lpips_alex"]["mean"] == pytest.approx(
        report.aggregate["imperceptibility"]["lpips_alex"]["mean"], abs=0.01)
    assert abs(noise_report.aggregate["efficacy"]["none"][tiny]["gain"]) < 0.1
    assert report.aggregate["efficacy"]["none"][tiny]["gain"] > 0.2


def test_report_files_are_self_contained(report, tmp_path):
    paths = write_report(report, tmp_path / "report")
    data = json.loads(paths["json"].read_text())  # strict JSON: no NaN
    assert data["aggregate"]["images"] == 4 and len(data["images"]) == 4
    page = paths["html"].read_text()
    assert page.count("<table") >= 5
    assert page.count("data:image/png;base64,") >= 4 + 3  # one grid per image, plots
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from the network
    for name in NAMES:
        assert f"<b>{name}</b>" in page
    text = headline_text(report)
    assert "noise control" in text and "knn AUC" in text
    assert paths["headline"].read_text().strip() == text.strip()


def test_away_mode_without_target(evaluator, dataset, tmp_path):
    prot = tmp_path / "prot"
    prot.mkdir()
    for name in NAMES[:2]:  # no JSON records: no target known
        (prot / f"{name}.png").write_bytes((dataset["prot"] / f"{name}.png").read_bytes())
    pairs, _ = find_pairs(dataset["orig"], prot)
    rep = _light(evaluator).evaluate(pairs)
    assert rep.aggregate["mode"] == ["away"]
    for entry in rep.aggregate["efficacy"]["none"].values():
        assert entry["gain"] > 0 and entry["ratio"] is None
    assert rep.stealth == {"skipped": "detectors off"}


def _png(path: Path, seed: int) -> None:
    arr = (smooth_image(32, 32, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path)


def test_cli_writes_report(models, dataset, tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["eval", "strength", "--original", str(dataset["orig"]), "--protected", str(dataset["prot"]),
            "--target", str(dataset["target"]), "--out", str(out), "--models-dir", str(models),
            "--classifier", "none", "--no-impress", "--no-style", "--jpeg", "75", "--device", "cpu"]
    for spec in _specs(models):
        args += ["--encoder", spec]
    assert main(args) == 0
    assert (out / "report.json").is_file() and (out / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "JPEG quality 75" in printed and "noise control" in printed
    data = json.loads((out / "report.json").read_text())
    assert list(data["aggregate"]["efficacy"]) == ["none", "jpeg75", "downup0.5", "noise0.03", "blur1",
                                                   "noise0.05_downup0.5", "platform2048q85", "noisy_upscale",
                                                   "training view 512 crop", "training view 1024 px"]


def test_cli_side_by_side(models, dataset, tmp_path, capsys):
    """Two labelled protected sets: a report each and one table with both sets' retention."""
    out = tmp_path / "cmp"
    args = ["eval", "strength", "--original", str(dataset["orig"]), "--protected", f"fixative={dataset['prot']}",
            "--protected", f"noise={dataset['noise']}", "--target", str(dataset["target"]), "--out", str(out),
            "--models-dir", str(models), "--encoder", _specs(models)[0], "--classifier", "none", "--no-impress",
            "--no-style", "--no-detectors", "--no-noise-control", "--jpeg", "75", "--platform", "32:80",
            "--upscaler", "classical", "--device", "cpu"]
    assert main(args) == 0
    for label in ("fixative", "noise"):
        assert (out / label / "report.json").is_file()
    table = (out / "comparison.md").read_text()
    assert "fixative gain" in table and "noise retained" in table
    assert "platform: longer side to 32 px, JPEG quality 80" in table
    data = json.loads((out / "comparison.json").read_text())
    enc = _specs(models)[0]
    fx, nz = data["fixative"]["efficacy"], data["noise"]["efficacy"]
    assert set(fx) == set(nz) and "platform32q80" in fx and "noise0.05_downup0.5" in fx
    assert fx["none"][enc]["gain"] > nz["none"][enc]["gain"]
    assert "side by side" in capsys.readouterr().out
    # the same label twice, or a label with a path in it, is refused in one line
    assert main(args[:4] + ["--protected", f"a={dataset['prot']}", "--protected", f"a={dataset['noise']}",
                            "--out", str(out)]) == 2
    assert main(args[:4] + ["--protected", f"../x={dataset['prot']}", "--out", str(out)]) == 2


def test_cli_reports_bad_input_in_one_line(models, tmp_path, caplog):
    (tmp_path / "o").mkdir()
    (tmp_path / "p").mkdir()
    _png(tmp_path / "o" / "x.png", 0)
    _png(tmp_path / "p" / "y.png", 1)
    code = main(["eval", "strength", "--original", str(tmp_path / "o"), "--protected", str(tmp_path / "p"),
                 "--out", str(tmp_path / "r"), "--models-dir", str(models)])
    assert code == 2
    assert "paired by name" in caplog.text
    assert main(["eval", "strength", "--original", str(tmp_path / "nope"), "--protected", str(tmp_path / "p"),
                 "--out", str(tmp_path / "r")]) == 2



def test_large_images_go_through_the_models_in_cells(models, dataset):
    from fixative.eval.strength import decode_tiled, encode_tiled
    from fixative.models.encoders import load_encoders
    from fixative.models.store import ModelStore

    (enc,) = load_encoders([_specs(models)[0]], store=ModelStore(models))
    x = load_image(dataset["orig"] / "a.png").rgb  # 48x64
    whole = enc(x)
    cells = encode_tiled(enc, x, tile=20)  # rounded down to 16 px cells (the encoder's 8x grid)
    assert cells.shape == whole.shape
    assert torch.equal(encode_tiled(enc, x, tile=64), whole)
    assert decode_tiled(enc, cells, (48, 64), tile=16).shape == (1, 3, 48, 64)

    settings = StrengthSettings(encoders=_specs(models)[:1], models_dir=str(models), device="cpu",
                                classifier="none", style=False, jpeg_qualities=(75,), detectors=False,
                                impress_settings=ImpressSettings(steps=1), tile_size=32)
    rep = StrengthEvaluator.from_settings(settings).evaluate(find_pairs(dataset["orig"], dataset["prot"])[0][:1])
    assert rep.aggregate["efficacy"]["none"][_specs(models)[0]]["gain"] > 0.1
    assert "impress" in rep.aggregate["efficacy"]
