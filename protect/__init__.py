"""Fixative's core: LPIPS-bounded protective perturbations against diffusion-model encoders.

Importing this package is cheap: models load only when a job asks for them.
"""

__version__ = "0.1.0"
