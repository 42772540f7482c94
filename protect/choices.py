"""Choices of the search options, importable without torch (the command line's ``--help`` reads them)."""

METHODS = ("fixative", "glaze", "pgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ROBUST_LEVELS = ("off", "web", "strong")
#: the CLI's default (chosen from measurements: see the README's "Robust protection")
DEFAULT_ROBUST = "web"
