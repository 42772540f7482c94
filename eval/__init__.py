"""Fixative protection-strength evaluation. Uses the library; never imported by it.

- Strength from the images alone (``fixative eval strength``): :mod:`~fixative.eval.strength` (the
  evaluator) with strength_types, strength_latents, strength_views, strength_grid, strength_conditions,
  strength_aggregate; pairs (matching files), countermeasures, detectors, classifier, style, names.
- Reports: report (files), report_text, report_plots, report_html, report_page (shared by every page),
  compare (several protections side by side).
- Fine-tuning (``fixative eval finetune``): finetune (train), finetune_settings, training_data,
  unet_training, run_folder, captions; generate (sampling with a fine-tune).
- Experiments (``fixative eval mimicry``): mimicry, mimicry_data, mimicry_measure, mimicry_report.
- Command line: cli (the parsers), cli_settings (settings from the parsed options).
"""
