"""Fixative protection-strength evaluation. Uses ``protect``; never imported by it."""
