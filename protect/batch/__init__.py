"""Protecting a portfolio: inputs, output names, resume, shards, platforms, time up front and the summary."""
