"""Targets: what a protected image's encoding is moved towards.

Images, code-made patterns and made targets (generated from a style or an anchor), and the modes that pick them.
"""
