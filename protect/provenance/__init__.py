"""Provenance: what is written beside and inside each protected file.

The record, the portfolio index and verification, Content Credentials, the opt-out and the signing identity.
"""
