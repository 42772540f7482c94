"""Fixative desktop GUI (Gradio). Uses ``protect``; never imported by it."""
