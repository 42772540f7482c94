"""Protecting a portfolio: inputs, output names and resume, shards, settings, made targets, one image, the
runner, the summary; platforms and time up front."""
