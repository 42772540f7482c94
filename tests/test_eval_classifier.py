"""Classifiers (ImageNet network interface, CLIP zero-shot on a tiny random CLIP) and the VGG16
Gram style distance, on tiny offline models."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from fixative.errors import ModelNotFoundError
from fixative.eval.classifier import ClipZeroShot, ImageNetClassifier, imagenet_labels, load_classifier
from fixative.eval.names import display_names, short_name
from fixative.eval.style import StyleDistance, gram
from fixative.models.store import ModelStore

from tiny import smooth_image


class _TinyNet(nn.Module):
    """timm-like: forward_features / forward_head(pre_logits=True)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=4)
        self.fc = nn.Linear(6, classes)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, x, pre_logits=False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_imagenet_classifier_interface():
    clf = ImageNetClassifier(_TinyNet(), "tiny", labels=list("abcde"), input_size=32)
    x = torch.cat([smooth_image(40, 60, seed=0), smooth_image(40, 60, seed=1)])
    p = clf.probs(x)
    assert p.shape == (2, 5) and torch.allclose(p.sum(dim=1), torch.ones(2))
    assert clf.features(x).shape == (2, 6)
    assert not any(q.requires_grad for q in clf.parameters())
    assert clf.label_index("c") == 2


def test_imagenet_labels_offline():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[301] == "ladybug"


@pytest.fixture
def clip_dir(request):
    """The session's tiny CLIP folder; skips where transformers (the eval extra) is missing."""
    pytest.importorskip("transformers", reason="the eval extra (transformers, for CLIP) is not installed")
    return request.getfixturevalue("tiny_clip_dir")


def test_clip_zero_shot(clip_dir):
    clf = load_classifier(str(clip_dir), labels=["cat", "dog", "tree"])
    assert isinstance(clf, ClipZeroShot) and clf.kind == "clip-zero-shot"
    x = torch.cat([smooth_image(48, 48, seed=0), smooth_image(48, 48, seed=1)])
    p = clf.probs(x)
    assert p.shape == (2, 3) and torch.allclose(p.sum(dim=1), torch.ones(2), atol=1e-5)
    f = clf.features(x)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)


def test_auto_prefers_a_local_clip(clip_dir, tmp_path):
    shutil.copytree(clip_dir, tmp_path / "clip")
    clf = load_classifier("auto", store=ModelStore(tmp_path), labels=["a", "b"])
    assert isinstance(clf, ClipZeroShot)
    assert load_classifier("none") is None
    with pytest.raises(ModelNotFoundError):
        load_classifier("no-such-classifier", store=ModelStore(tmp_path))


def test_gram_and_style_distance():
    import torchvision

    torch.manual_seed(0)
    style = StyleDistance(torchvision.models.vgg16(weights=None).features, size=32)
    f = torch.randn(2, 4, 5, 6)
    g = gram(f)
    assert g.shape == (2, 4, 4) and torch.allclose(g, g.transpose(1, 2))
    a, b = smooth_image(48, 64, seed=0), smooth_image(48, 64, seed=1)
    assert float(style.distance(a, a)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(style.distance(a, b)[0]) > 0
    grey = torch.full_like(a, 0.5)
    assert float(style.distance(a, grey)[0]) > float(style.distance(a, (a + 0.01).clamp(0, 1))[0])


def test_style_needs_vgg_weights(tmp_path):
    with pytest.raises(ModelNotFoundError, match="vgg16_features"):
        StyleDistance.load(ModelStore(tmp_path / "empty"))


def test_display_names():
    assert short_name("taef2") == "taef2"
    assert short_name("/m/taesd/tiny_encoder.pth") == "tiny"
    assert short_name("org/vae") == "org/vae"
    names = display_names(["/a/x_encoder.pth", "/b/x_encoder.pth", "taef2"])
    assert names == {"/a/x_encoder.pth": "/a/x_encoder.pth", "/b/x_encoder.pth": "/b/x_encoder.pth",
                     "taef2": "taef2"}
