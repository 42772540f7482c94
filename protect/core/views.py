"""Training views: what a model is trained on, as opposed to the file an artist posts.

No model learns from an artwork at its posted size. A fine-tune resizes every image first
(diffusers' ``train_text_to_image*.py``: shorter side to 512 or 1024, then a crop; kohya-style
trainers: aspect-ratio buckets of about 1 MP; SDXL and FLUX at about 1 MP) and often flips it.
With training views on, the search moves what the encoders see of such *views* of the saved
image, while the perturbation stays a full-resolution change in the saved file:

- :func:`view_sizes`: the resolutions a trainer makes of an H x W image: the shorter side at each
  of ``shorter_sides`` (512, 768, 1024 px) and the aspect-preserving bucket of each area in
  ``bucket_areas`` (0.25, 0.5 and 1 MP, sides rounded to ``bucket_step`` = 64 px, as kohya's
  buckets are). A view larger than the image is never drawn (trainers' upscales of small images
  are left out): the image's own size stands in for it.
- :class:`View`: one drawn view, a resize to one of those sizes (antialiased bicubic,
  differentiable), a patch of at most ``patch`` x ``patch`` px of it (the trainer's random crop;
  it also bounds what one step costs) and, a quarter of the time, a horizontal flip. The target (or, for
  "away", the original) is viewed the same way, so the objective compares like with like.
- :class:`ViewSampler`: draws views reproducibly from a seed.
- :func:`work_size`: the resolution the search runs at, the largest view (at most the image's own
  size): above it the encoders never look, so a perturbation searched there and upsampled
  bicubically to full size in the saved file costs the same for a 1 MP and an 18 MP artwork.
- :func:`evaluation_views`: two fixed views to report figures at, the shorter side 512 px with a
  centre crop (SD 1.5-style training) and the longer side 1024 px (a platform's or an SDXL
  bucket's size).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from fixative.core.transforms import resize
from fixative.defaults import DEFAULT_VIEWS  # noqa: F401 (re-exported)
from fixative.errors import ConfigError
from fixative.vocabulary import Views

#: the view levels by name (the vocabulary :class:`~fixative.vocabulary.Views`)
VIEW_LEVELS = tuple(v.value for v in Views)

#: the encoders' downsampling factor (px): the smallest sizes are multiples of it
GRID = 8


@dataclass(frozen=True)
class TrainingViews:
    """Which training views the search averages over.

    - ``shorter_sides``: px, the shorter side a trainer resizes to (diffusers' ``--resolution``);
    - ``bucket_areas``: megapixels of aspect-ratio buckets (kohya, SDXL, FLUX), sides rounded to
      ``bucket_step`` px;
    - ``patch``: px, the largest side of the part of a view the encoders see in one step (a random
      crop, as trainers take); 0 = the whole view;
    - ``flip_prob``: probability of a horizontal flip, in [0, 1] (0.25 by default: flips are off by default in
      diffusers' and kohya's trainers, so most steps protect the unflipped views);
    - ``name``: labels the mix in records.
    """

    name: str = "train"
    shorter_sides: tuple[int, ...] = (512, 768, 1024)
    bucket_areas: tuple[float, ...] = (0.25, 0.5, 1.0)
    bucket_step: int = 64
    patch: int = 512
    flip_prob: float = 0.25

    def __post_init__(self) -> None:
        if not self.shorter_sides and not self.bucket_areas:
            raise ConfigError("training views need at least one shorter side or bucket area")
        if any(s < GRID * 4 for s in self.shorter_sides):
            raise ConfigError(f"training-view shorter sides must be at least {GRID * 4} px, got {self.shorter_sides}")
        if any(not 0.01 <= a <= 16 for a in self.bucket_areas):
            raise ConfigError(f"training-view bucket areas must be 0.01-16 MP, got {self.bucket_areas}")
        if self.bucket_step < 1:
            raise ConfigError(f"the bucket step must be at least 1 px, got {self.bucket_step}")
        if self.patch != 0 and self.patch < GRID * 8:
            raise ConfigError(f"the training-view patch must be 0 (whole view) or at least {GRID * 8} px, "
                              f"got {self.patch}")
        if not 0 <= self.flip_prob <= 1:
            raise ConfigError(f"the flip probability must be in [0, 1], got {self.flip_prob}")

    def describe(self) -> dict:
        """JSON-ready fields (for records and the settings hash)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: the presets, as data
PRESETS: dict[str, TrainingViews] = {"train": TrainingViews()}


def views_for(level: str | TrainingViews | None) -> TrainingViews | None:
    """``"off"``/None -> None; ``"train"`` -> the preset; a :class:`TrainingViews` as is."""
    if level is None or isinstance(level, TrainingViews):
        return level
    if level == "off":
        return None
    if level not in PRESETS:
        raise ConfigError(f"unknown training views {level!r}; choose one of {', '.join(VIEW_LEVELS)}")
    return PRESETS[level]


def _scaled(height: int, width: int, factor: float, step: int = 1) -> tuple[int, int]:
    return (max(step, round(height * factor / step) * step), max(step, round(width * factor / step) * step))


def view_sizes(height: int, width: int, views: TrainingViews) -> list[tuple[int, int]]:
    """The (H, W) sizes a trainer makes of an image of ``height`` x ``width`` px, smallest first.

    Never larger than the image: a size that would upscale it is replaced by the image's own size.
    """
    sizes: set[tuple[int, int]] = set()
    short = min(height, width)
    for side in views.shorter_sides:
        sizes.add((height, width) if side >= short else _scaled(height, width, side / short))
    for area in views.bucket_areas:
        factor = math.sqrt(area * 1e6 / (height * width))
        size = _scaled(height, width, factor, views.bucket_step)
        sizes.add((height, width) if factor >= 1 or size[0] > height or size[1] > width else size)
    return sorted(sizes, key=lambda s: (s[0] * s[1], s))


def work_size(height: int, width: int, views: TrainingViews) -> tuple[int, int]:
    """The resolution the search runs at: the largest training view (at most the image's own size)."""
    return view_sizes(height, width, views)[-1]


@dataclass(frozen=True)
class View:
    """A trainer's view: resize to ``size`` (H, W), take the patch ``[top:top+height, left:left+width]``
    of it, flip it horizontally if ``flip``."""

    size: tuple[int, int]
    top: int
    left: int
    height: int
    width: int
    flip: bool = False

    def crop(self, resized: Tensor) -> Tensor:
        """This view of an image already resized to :attr:`size`."""
        if tuple(resized.shape[-2:]) != tuple(self.size):
            raise ValueError(f"expected an image of {self.size}, got {tuple(resized.shape[-2:])}")
        patch = resized[..., self.top : self.top + self.height, self.left : self.left + self.width]
        return patch.flip(-1) if self.flip else patch

    def __call__(self, images: Tensor) -> Tensor:
        """This view of NCHW images of any size (resized to :attr:`size` first); differentiable."""
        same = tuple(images.shape[-2:]) == tuple(self.size)
        return self.crop(images if same else resize(images, self.size))

    def describe(self) -> str:
        h, w = self.size
        flip = ", flipped" if self.flip else ""
        return f"{w}x{h}, patch {self.width}x{self.height} at ({self.left}, {self.top}){flip}"


def whole(size: tuple[int, int]) -> View:
    """The whole image at ``size``, unflipped."""
    return View(tuple(size), 0, 0, size[0], size[1])


def evaluation_views(height: int, width: int) -> dict[str, View]:
    """Fixed views to report protection at, named for what a trainer does (no upscaling):

    - ``"512 crop"``: shorter side 512 px, centre crop 512 x 512 (diffusers' default at 512);
    - ``"1024 px"``: longer side 1024 px, the whole image (a platform's size, an SDXL-sized bucket).
    """
    short, long = min(height, width), max(height, width)
    size = (height, width) if short <= 512 else _scaled(height, width, 512 / short)
    side = min(512, short)
    crop = View(size, (size[0] - side) // 2, (size[1] - side) // 2, side, side)
    big = (height, width) if long <= 1024 else _scaled(height, width, 1024 / long)
    return {"512 crop": crop, "1024 px": whole(big)}


class ViewSampler:
    """Draws :class:`View` s of an image of ``height`` x ``width`` px from :class:`TrainingViews`.

    The same settings, size and seed give the same sequence (reproducible searches). Each draw picks
    one of :func:`view_sizes` uniformly, a patch position uniformly (at any pixel, as a trainer's random
    crop: the encoders' 8-px grid falls anywhere on the artwork) and a flip.
    """

    def __init__(self, views: TrainingViews, height: int, width: int, seed: int = 0):
        self.views = views
        self.sizes = view_sizes(height, width, views)
        self.generator = torch.Generator().manual_seed(int(seed) * 104729 + 31)

    def _pick(self, count: int) -> int:
        return int(torch.randint(0, count, (), generator=self.generator))

    def draw(self) -> View:
        size = self.sizes[self._pick(len(self.sizes))]
        limit = self.views.patch or max(size)
        ph, pw = min(limit, size[0]), min(limit, size[1])
        top, left = self._pick(size[0] - ph + 1), self._pick(size[1] - pw + 1)
        flip = float(torch.rand((), generator=self.generator)) < self.views.flip_prob
        return View(size, top, left, ph, pw, flip)
