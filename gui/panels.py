"""The app page's panels: each function adds one part of the page to the open ``gr.Blocks`` and puts its
controls on ``ui`` (a namespace the event wiring, :mod:`fixative.gui.events`, reads). Nothing here computes.

Every function takes the gradio module as ``gr`` (imported by :func:`fixative.gui.app.build_app`), so
importing this module imports no gradio.
"""

from __future__ import annotations

from types import SimpleNamespace

from fixative.core.devices import DEVICE_CHOICES
from fixative.defaults import DEFAULT_OPT_OUT
from fixative.files.images import IMAGE_SUFFIXES
from fixative.gui.credentials import OPT_OUT_LABELS, credentials_note
from fixative.gui.explain import (
    INTENSITY_LABELS,
    QUALITY_LABELS,
    JobProgress,
    intensity_table,
    posting_choices,
    progress_html,
    quality_table,
)
from fixative.gui.form import BUILTIN_STYLE
from fixative.gui.workbench import Workbench
from fixative.options import Precision

MODE_LABELS = {"cloak": "Style cloak", "poison": "Concept poison", "immunize": "Immunize"}
IMMUNIZE_LABELS = {"away": "Away from the image itself", "texture": "Towards a texture pattern",
                   "gray": "Towards flat gray"}
MODE_HELP = {
    "cloak": "A model fine-tuned on your images learns a different style. 'built-in' (the default) moves what it "
             "sees towards a texture made on this computer in a second, with no download; the named styles and "
             "'auto' re-render each image in another style with a diffusion model (a download of several GB, "
             "minutes per image on a CPU); or use your own target image.",
    "poison": "A model trained on your images with their captions learns the wrong concept: pictures of your "
              "concept teach it the anchor instead. The target is a made picture of the anchor, or your own.",
    "immunize": "Edits of your image by img2img or inpainting break down: what the model sees is pushed away from "
                "the image, or towards a pattern.",
}


def header(gr, ui: SimpleNamespace, bench: Workbench) -> None:
    """The title, one sentence on what the app does, and the models' status line (``ui.models_status``)."""
    gr.Markdown("# Fixative\nAn imperceptible protective layer for your artwork. Drop your images, choose how "
                "to protect them, and download the protected PNGs. Everything runs on this computer.")
    ui.models_status = gr.Markdown(bench.models_status, elem_id="fx-models-status")


def drop_and_run(gr, ui: SimpleNamespace) -> None:
    """The drop zone, the Protect / Cancel / Measure speed buttons right under it, and the progress bars."""
    ui.files = gr.File(label="Your images: drop one or many", file_count="multiple",
                       file_types=sorted(IMAGE_SUFFIXES), elem_id="fx-files")
    ui.upload_note = gr.Markdown(elem_id="fx-upload-note")
    # right under the drop zone: visible without scrolling on a 1366x768 screen; the defaults work
    with gr.Row():
        ui.run_btn = gr.Button("Protect", variant="primary", elem_id="fx-run")
        ui.cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="fx-cancel")
        ui.speed_btn = gr.Button("Measure speed", elem_id="fx-speed")
    ui.progress = gr.HTML(progress_html(JobProgress()), elem_id="fx-progress")


def protection(gr, ui: SimpleNamespace, styles: list[str]) -> None:
    """The mode and its target: the style (``styles``: the named ones), the poison's concept and anchor, the
    immunization's pattern, or the user's own target image."""
    ui.mode = gr.Radio([(MODE_LABELS[m], m) for m in MODE_LABELS], value="cloak", label="Protection",
                       elem_id="fx-mode")
    ui.mode_help = gr.Markdown(MODE_HELP["cloak"])
    ui.style = gr.Dropdown([(f"{BUILTIN_STYLE}: made on this computer, no download", BUILTIN_STYLE),
                            ("auto (diffusion model)", "auto"), *styles], value=BUILTIN_STYLE,
                           allow_custom_value=True, label="Style to cloak towards",
                           info="'built-in' needs nothing more; 'auto', the named styles and your own "
                           "description need a diffusion model ('auto' picks a style distant from your "
                           "images)", elem_id="fx-style")
    with gr.Row(visible=False) as ui.poison_row:
        ui.concept = gr.Textbox(label="Concept your images show", placeholder="dog", elem_id="fx-concept")
        ui.anchor = gr.Textbox(label="Anchor: what a model should learn instead", placeholder="cat",
                               elem_id="fx-anchor")
    ui.immunize = gr.Radio([(v, k) for k, v in IMMUNIZE_LABELS.items()], value="away",
                           label="Immunize", visible=False, elem_id="fx-immunize")
    ui.target_file = gr.File(label="Or your own target image (optional; replaces the made target)",
                             file_count="single", file_types=sorted(IMAGE_SUFFIXES), type="filepath",
                             elem_id="fx-target")


def presets(gr, ui: SimpleNamespace, bench: Workbench, encoders: list[str], device: str) -> None:
    """Intensity and render quality with their tables (expected times for ``encoders`` on ``device``), where
    the image will be posted, and Content Credentials with the opt-out."""
    ui.intensity = gr.Radio([(INTENSITY_LABELS[k], k) for k in INTENSITY_LABELS], value="medium",
                            label="Intensity: how much the picture may change", elem_id="fx-intensity")
    ui.intensity_md = gr.Markdown(intensity_table("medium"))
    ui.quality = gr.Radio([(QUALITY_LABELS[k], k) for k in QUALITY_LABELS], value="standard",
                          label="Render quality: how long to search", elem_id="fx-quality")
    ui.quality_md = gr.Markdown(quality_table(bench.speed, encoders, bench.device_name(device), None, "standard"))
    ui.posting = gr.Dropdown(posting_choices(), value="generic", elem_id="fx-posting",
                             label="Where will you post it? Sites shrink and re-compress uploads; the "
                                   "protection is made to survive what that site does")
    with gr.Row():
        ui.credentials = gr.Checkbox(True, label="Add my Content Credentials",
                                     info=credentials_note(), elem_id="fx-credentials")
        ui.opt_out = gr.Dropdown([(v, k) for k, v in OPT_OUT_LABELS.items()], value=DEFAULT_OPT_OUT,
                                 label="Tell AI crawlers and trainers", elem_id="fx-opt-out")


def advanced(gr, ui: SimpleNamespace, encoders: list[str], device: str) -> None:
    """The "Advanced options" accordion: encoders, seed, device, precision, step and time limits, made-target
    models."""
    with gr.Accordion("Advanced options", open=False):
        ui.encoders_box = gr.Textbox(", ".join(encoders), label="Encoders",
                                     info="short names (taef2, taesd, sd15, sdxl, flux1...), files or "
                                          "folders, separated by commas", elem_id="fx-encoders")
        with gr.Row():
            ui.seed = gr.Number(0, label="Seed", precision=0, minimum=0)
            ui.device = gr.Dropdown(list(DEVICE_CHOICES), value=device, label="Device")
            ui.precision = gr.Dropdown([p.value for p in Precision], value=Precision.AUTO.value, label="Precision")
        with gr.Row():
            ui.steps = gr.Number(None, label="Steps (0 = the quality's)", precision=0, minimum=0,
                                 elem_id="fx-steps")
            ui.seconds = gr.Number(None, label="Time limit per image, s (0 = the quality's)", minimum=0)
        gr.Markdown("With a step limit and no time limit, the same seed gives the same file again "
                    "(on the CPU); a time limit makes each run a little different.")
        with gr.Row():
            ui.target_model = gr.Textbox(label="Target model (made targets)", placeholder="sd15")
            ui.clip_model = gr.Textbox(label="CLIP model (style auto, anchors)", placeholder="default")


def results(gr, ui: SimpleNamespace) -> None:
    """The right column: the message, the image picker, before/after, the difference map, what the model sees,
    the metrics, the downloads and the equivalent command."""
    ui.message = gr.Markdown(elem_id="fx-message")
    ui.picker = gr.Dropdown([], label="Image", visible=False, elem_id="fx-picker")
    # a fixed height: without one the slider collapses and its (lazy) images never load
    ui.comparison = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", format="png",
                                   height=480, max_height=720, elem_id="fx-comparison")
    ui.metrics = gr.Markdown(elem_id="fx-metrics")
    with gr.Row():
        ui.difference = gr.Image(label="Where it changed (amplified)", type="filepath", format="png",
                                 elem_id="fx-difference")
        ui.model = gr.ImageSlider(label="What the model sees: original / protected", type="filepath",
                                  format="png", elem_id="fx-model-view")
    with gr.Row():
        ui.difference_caption = gr.Markdown()
        ui.model_note = gr.Markdown()
    ui.downloads = gr.File(label="Protected PNGs (lossless, exactly as saved)", file_count="multiple",
                           interactive=False, elem_id="fx-downloads")
    ui.zip_file = gr.File(label="All of them, with their provenance records (zip)", interactive=False,
                          elem_id="fx-zip")
    ui.command = gr.Markdown(elem_id="fx-command")
