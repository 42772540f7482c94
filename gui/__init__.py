"""Fixative desktop GUI (Gradio). Uses the library; never imported by it."""
