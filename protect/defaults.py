"""Every default of the options, in one place importable without torch or numpy (``--help`` reads them).

The closed vocabularies (the choices) are the ``StrEnum``s of :mod:`fixative.vocabulary`; each default here
is one of their values (a plain string, so this module imports nothing). ``METHODS``, ``PRECISIONS``,
``ROBUST_LEVELS``, ``VIEW_LEVELS`` and ``MODES`` are still importable from here for older callers: they
are the enums' values, made on first use (PEP 562), so the vocabulary is written once.
"""

#: the protection mode (``fixative.options.Mode``)
DEFAULT_MODE = "cloak"
#: the search method (``fixative.options.Method``)
DEFAULT_METHOD = "fixative"
#: compute precision (``fixative.options.Precision``)
DEFAULT_PRECISION = "auto"
#: the compute device ("auto", "cpu", "cuda", "cuda:1", "mps")
DEFAULT_DEVICE = "auto"
#: random seed of the search
DEFAULT_SEED = 0
#: the CLI's default (chosen from measurements: see the README's "Robust protection")
DEFAULT_ROBUST = "web"
#: --format name -> file suffix (the keys are ``fixative.options.OutputFormat``)
OUTPUT_FORMATS = {"png": ".png", "webp": ".webp", "tiff": ".tif", "jpeg": ".jpg"}
DEFAULT_FORMAT = "png"
DEFAULT_JPEG_QUALITY = 95
#: refuse images above this many pixels (a decompression bomb or a mistake); 300 MP
MAX_PIXELS = 300_000_000
#: the default of the command line and the GUI (``fixative.options.Views``)
DEFAULT_VIEWS = "train"
#: the encoder crafted against when none is named (built in, so the first run works offline)
DEFAULT_ENCODER = "taef2"
#: the LPIPS backbone of the budget and the measurements (built in; ``fixative.options.LpipsNet``)
DEFAULT_LPIPS_NET = "alex"
#: images larger than this (pixels, either side) are protected in tiles
DEFAULT_TILE_SIZE = 1024
#: smallest tile size: more than twice the engine's 64-px tile overlap
MIN_TILE_SIZE = 160
#: the LPIPS budget of the former ``medium`` preset (comparisons, benchmarks)
DEFAULT_LPIPS_BUDGET = 0.07
#: the "do not train" statement written into every output (``fixative.options.OptOutLevel``)
DEFAULT_OPT_OUT = "ai-training"
#: the visibility preset (``fixative.options.Intensity``) and the effort preset (``fixative.options.Quality``)
DEFAULT_INTENSITY = "medium"
DEFAULT_QUALITY = "standard"
#: what the default presets give (see :mod:`fixative.presets`): no more visible than a JPEG at quality 75,
#: at most 300 steps and 200 s of search per image
DEFAULT_LIKE_JPEG = 75
DEFAULT_STEPS = 300
DEFAULT_SECONDS = 200.0
