"""Fixative: an imperceptible protective layer for artwork against generative-model mimicry, and concept poisoning.

One import package. Its layers, each a subpackage: ``core`` (the engine, tensors in and out), ``models``,
``targets``, ``files``, ``provenance``, ``batch`` and ``cli``; ``gui`` and ``eval`` use them and are
never imported by them. Importing this package is cheap: models load only when a job asks for them.
"""

__version__ = "0.1.0"
