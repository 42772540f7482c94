"""Built-in immunization targets, made by code (no files, no models).

Immunizing (PhotoGuard's encoder attack, Mist's textural loss) pushes what an image encoder sees
towards the latent of a fixed target. Two targets are built in:

- ``"texture"`` (the default): a dense, high-contrast, colourful texture of rings over oriented
  gratings, tiled at a fixed period in pixels. An img2img or inpainting edit of an image whose
  latent looks like this texture comes out covered in it (the effect Mist gets from its
  ``MIST.png`` target). The period is fixed in pixels, not stretched to the image, so every image
  gets the same texture scale in the encoder's latent (whose cells are 8 or 16 pixels).
- ``"gray"``: flat mid-gray, the target of PhotoGuard's simplest encoder attack; edits come out
  washed out.

Patterns depend only on the name, the size and the period: the same call gives the same pixels
on every machine.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fixative.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

PATTERNS = ("texture", "gray")
DEFAULT_PATTERN = "texture"
#: the texture's tile size in pixels: four latent cells of an 8x-downsampling encoder
DEFAULT_PERIOD = 32


def immunize_pattern(height: int, width: int, name: str = DEFAULT_PATTERN, *, period: int = DEFAULT_PERIOD) -> Tensor:
    """The pattern ``name`` at (``height``, ``width``): a float32 tensor (1, 3, H, W) in [0, 1]."""
    import torch

    if name not in PATTERNS:
        raise ConfigError(f"unknown immunize pattern {name!r}; choose one of {', '.join(PATTERNS)}")
    if height < 1 or width < 1:
        raise ConfigError(f"a pattern needs a positive size, not {height}x{width}")
    if name == "gray":
        return torch.full((1, 3, height, width), 0.5)
    if period < 4:
        raise ConfigError(f"the pattern period must be at least 4 pixels, not {period}")
    y = torch.arange(height, dtype=torch.float64)[:, None]
    x = torch.arange(width, dtype=torch.float64)[None, :]
    # concentric rings around each tile's centre: a radial frequency of 3 rings per tile
    cy = (y % period) - period / 2 + 0.5
    cx = (x % period) - period / 2 + 0.5
    rings = torch.cos(2 * math.pi * torch.sqrt(cx**2 + cy**2) * 3 / period)
    channels = []
    for k in range(3):
        theta = math.pi * (k / 3 + 1 / 12)  # a different grating orientation per channel: colour
        grating = torch.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) * 2 / period + k)
        mix = rings * (1 if k != 1 else -1) + grating
        channels.append(0.5 + 0.5 * torch.tanh(2.5 * mix))  # pushed towards black and white: high contrast
    return torch.stack(channels)[None].float().clamp(0, 1)


# --- targets made from the image by code (the default style cloak's target) ---------------------------

#: code-made cloak targets: the image re-rendered in a far-off style, or the built-in texture; made in about a second
RESTYLES = ("posterize", "texture-blend", "texture")
#: the one used when a style cloak is given no target: of the three, the one that changed what taef2 sees of the
#: protected image most at the 1024-px training view (benchmarks/default_target.py; figures in the README)
DEFAULT_RESTYLE = "texture"


def restyle(rgb: Tensor, name: str = DEFAULT_RESTYLE, *, period: int = DEFAULT_PERIOD) -> Tensor:
    """A code-made cloak target for the image ``rgb`` (1x3xHxW in [0,1]), at its own size.

    - ``"posterize"``: a woodcut / pop-art rendering: colours reduced to three levels per channel and
      swapped for their complements, with thick dark outlines along the image's edges. The
      composition stays where it is (so the target is reachable within a small budget) while palette,
      shading and texture are all changed.
    - ``"texture-blend"``: the image half-covered by the built-in ``"texture"`` pattern.
    - ``"texture"``: the pattern alone (no trace of the image).

    Deterministic: the same pixels give the same target on every machine. Returns float32 in [0,1].
    """
    import torch
    import torch.nn.functional as F

    if name not in RESTYLES:
        raise ConfigError(f"unknown code-made target {name!r}; choose one of {', '.join(RESTYLES)}")
    rgb = rgb.detach().float().cpu()
    _, _, height, width = rgb.shape
    if name == "texture":
        return immunize_pattern(height, width, "texture", period=period)
    if name == "texture-blend":
        return (0.5 * rgb + 0.5 * immunize_pattern(height, width, "texture", period=period)).clamp(0, 1)
    # posterize: smooth first so that the three levels form flat areas, not speckle
    k = max(3, (min(height, width) // 256) | 1)
    smooth = F.avg_pool2d(F.pad(rgb, (k // 2,) * 4, mode="replicate"), k, stride=1)
    levels = torch.round(smooth * 2) / 2
    complement = 1 - levels
    gray = smooth.mean(dim=1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), sobel[None, None])
    gy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), sobel.t()[None, None])
    edges = (gx.square() + gy.square()).sqrt()
    width_px = max(1, min(height, width) // 400)
    edges = F.max_pool2d(edges, 2 * width_px + 1, stride=1, padding=width_px)
    ink = (edges > 0.25).float()
    return (complement * (1 - ink)).clamp(0, 1)
