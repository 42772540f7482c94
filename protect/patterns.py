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

from protect.errors import ConfigError

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
