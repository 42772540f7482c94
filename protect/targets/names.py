"""Names of made targets, importable without torch (for ``--help``): the built-in styles and the default generators."""

from __future__ import annotations

from dataclasses import dataclass

#: the generator used when ``--target-model`` is not given. SD 1.5 for both modes: what Glaze and
#: Nightshade's first experiments used, the model most mimicry fine-tunes start from, openly
#: licensed, and small enough (about 2 GB in fp16) for a laptop.
DEFAULT_TARGET_MODELS: dict[str, str] = {"cloak": "sd15", "poison": "sd15"}


@dataclass(frozen=True)
class Style:
    """A built-in target style: a prompt, and a rough description of what its images look like.

    ``profile`` = (saturation, brightness, contrast, detail), each 0-1, set by hand; it is
    compared with :func:`image_profile` to find styles distant from an image when no CLIP model
    is available.
    """

    name: str
    prompt: str
    profile: tuple[float, float, float, float]


#: a small list of mutually distant styles (art movements and public-domain masters)
STYLES: tuple[Style, ...] = (
    Style("cubism", "a cubist painting, fragmented geometric planes, muted earthy colours, "
          "in the style of Pablo Picasso and Georges Braque", (0.30, 0.45, 0.55, 0.55)),
    Style("impressionism", "an impressionist oil painting, loose visible brushstrokes, soft natural light, "
          "in the style of Claude Monet", (0.45, 0.60, 0.35, 0.60)),
    Style("van-gogh", "a post-impressionist oil painting, thick swirling impasto brushstrokes, vivid colours, "
          "in the style of Vincent van Gogh", (0.70, 0.50, 0.60, 0.90)),
    Style("ukiyo-e", "a ukiyo-e woodblock print, flat colours, bold black outlines, "
          "in the style of Katsushika Hokusai", (0.40, 0.70, 0.50, 0.30)),
    Style("pointillism", "a pointillist painting made of small dots of pure colour, "
          "in the style of Georges Seurat", (0.55, 0.65, 0.30, 1.00)),
    Style("charcoal", "a rough charcoal sketch on paper, black and white, heavy smudged shading",
          (0.00, 0.60, 0.70, 0.60)),
    Style("pop-art", "a pop art screen print, bold flat saturated colours, halftone dots, thick outlines",
          (0.95, 0.60, 0.80, 0.40)),
    Style("abstract-expressionism", "an abstract expressionist painting, drips and splatters of paint, "
          "energetic gestural strokes", (0.60, 0.50, 0.65, 1.00)),
    Style("baroque", "a baroque oil painting, dramatic chiaroscuro lighting, dark background, "
          "in the style of Rembrandt", (0.35, 0.25, 0.70, 0.35)),
    Style("watercolour", "a soft watercolour painting, pale washes of colour bleeding on white paper",
          (0.25, 0.85, 0.25, 0.20)),
)
STYLE_NAMES = tuple(s.name for s in STYLES)
