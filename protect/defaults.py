"""Choices and defaults of the options, in one place importable without torch or numpy (``--help`` reads them)."""

METHODS = ("fixative", "glaze", "pgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ROBUST_LEVELS = ("off", "web", "strong")
#: the CLI's default (chosen from measurements: see the README's "Robust protection")
DEFAULT_ROBUST = "web"
#: --format name -> file suffix
OUTPUT_FORMATS = {"png": ".png", "webp": ".webp", "tiff": ".tif", "jpeg": ".jpg"}
DEFAULT_JPEG_QUALITY = 95
#: refuse images above this many pixels (a decompression bomb or a mistake); 300 MP
MAX_PIXELS = 300_000_000
VIEW_LEVELS = ("train", "off")
#: the default of the command line and the GUI
DEFAULT_VIEWS = "train"
#: the encoder crafted against when none is named (built in, so the first run works offline)
DEFAULT_ENCODER = "taef2"
#: the LPIPS backbone of the budget and the measurements (built in)
DEFAULT_LPIPS_NET = "alex"
