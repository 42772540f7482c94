"""Fixative protection-strength evaluation. Uses the library; never imported by it."""
