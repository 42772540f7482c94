"""Models: where weights are found, how they load, and the networks.

The model store, devices, encoders and their registry, single-file and TAESD loading, the perceptual
metric, the built-in weights and downloads.
"""
