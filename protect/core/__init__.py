"""The engine core, tensors in and tensors out.

Engine, optimiser and its steps, objectives, constraints, views and the robust mix, tiling, metrics.
It imports no file, hub or CLI code (tests/test_layers.py checks that).
"""
