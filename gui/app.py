"""The desktop app's window: a Gradio ``Blocks`` page wired to the plain handlers in :mod:`fixative.gui.handlers`.

Nothing here computes: each event calls a handler and turns its result into component values.
:func:`build_app` makes the page (no models are loaded: they load on the first job);
:func:`launch` serves it on 127.0.0.1 unless told otherwise, never with a public share link, with
analytics off, an upload size limit, one protection at a time, and the temporary folder deleted at exit.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixative.core.devices import DEVICE_CHOICES
from fixative.defaults import PRECISIONS
from fixative.files.images import IMAGE_SUFFIXES
from fixative.gui.explain import (
    INTENSITY_LABELS,
    PROGRESS_CSS,
    QUALITY_LABELS,
    JobProgress,
    intensity_table,
    posting_choices,
    progress_html,
    quality_table,
)
from fixative.gui.handlers import (
    BUILTIN_STYLE,
    DEFAULT_MAX_FILE_BYTES,
    OPT_OUT_LABELS,
    JobResult,
    JobSettings,
    Workbench,
    average_megapixels,
    check_uploads,
    credentials_note,
    measure_speed,
    parse_encoders,
    run_job,
)
from fixative.provenance.optout import DEFAULT_OPT_OUT

#: the protection events' shared queue: at most one runs at a time, across all browser tabs
CONCURRENCY_ID = "protection"
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


@dataclass
class AppConfig:
    """How the app runs: model folder, limits, default encoders, and (for tests) a fixed temp folder."""

    models_dir: Path | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pixels: int | None = None
    encoders: tuple[str, ...] = ("taef2",)
    device: str = "auto"
    root: Path | None = None
    target_cache: Path | None = None  # None: made targets live in the temporary folder, deleted at exit


def _import_gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check
    try:
        import gradio as gr
    except ImportError as exc:
        from fixative.errors import ConfigError

        raise ConfigError("the desktop app needs Gradio, which is not installed; install it with: "
                          "pip install 'fixative[gui]'") from exc
    return gr


def _settings(mode, target_file, style, concept, anchor, immunize, intensity, quality, posting, encoders_text, seed,
              device, precision, steps, seconds, target_model, clip_model, credentials=True,
              opt_out=DEFAULT_OPT_OUT) -> JobSettings:
    return JobSettings(
        mode=mode, target_image=target_file or None, style=style or "", concept=concept or "", anchor=anchor or "",
        immunize=immunize, intensity=intensity, quality=quality, posting=posting,
        encoders=parse_encoders(encoders_text),
        seed=int(seed or 0), device=device, precision=precision, steps=int(steps) if steps else None,
        seconds=float(seconds) if seconds else None, target_model=(target_model or "").strip() or None,
        clip_model=(clip_model or "").strip() or None, credentials=bool(credentials), opt_out=opt_out,
    )


def image_views(result_images: list[dict], name: str | None) -> tuple:
    """(comparison, difference, caption, model view, model note, metrics) for the image called ``name``."""
    chosen = next((r for r in result_images if r["name"] == name), result_images[0] if result_images else None)
    if chosen is None:
        return None, None, "", None, "", ""
    model = (chosen["model_original"], chosen["model_protected"]) if chosen["model_protected"] else None
    return ((chosen["before"], chosen["output"]), chosen["difference"], chosen["difference_caption"], model,
            chosen["model_note"], chosen["metrics"])


def _as_state(result: JobResult) -> list[dict]:
    return [{"name": f"{i + 1}. {im.name}", "before": str(im.before), "output": str(im.output),
             "difference": str(im.difference), "difference_caption": im.difference_caption,
             "model_original": str(im.model_original) if im.model_original else None,
             "model_protected": str(im.model_protected) if im.model_protected else None,
             "model_note": im.model_note, "metrics": im.metrics} for i, im in enumerate(result.images)]


def build_app(config: AppConfig | None = None, bench: Workbench | None = None):
    """The app's ``gr.Blocks`` (and its :class:`Workbench` as ``blocks.fixative_bench``); loads no model."""
    config = config or AppConfig()
    if bench is None:
        kw: dict[str, Any] = {"models_dir": config.models_dir, "max_bytes": config.max_file_bytes, "root": config.root,
                              "target_cache": config.target_cache}
        if config.max_pixels:
            kw["max_pixels"] = config.max_pixels
        bench = Workbench(**kw)
    # uploads and gradio's copies of results live in the workbench's folder, deleted at exit
    os.environ["GRADIO_TEMP_DIR"] = str(bench.root / "gradio")
    gr = _import_gradio()
    from fixative.targets.names import STYLE_NAMES

    def presets_md(intensity, quality, encoders_text, device, steps, files):
        encoders = parse_encoders(encoders_text)
        return (intensity_table(intensity),
                quality_table(bench.speed, encoders, bench.device_name(device), average_megapixels(files), quality,
                              int(steps) if steps else None))

    with gr.Blocks(title="Fixative", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        demo.fixative_bench = bench
        token = gr.State(None)
        results = gr.State([])
        gr.Markdown("# Fixative\nAn imperceptible protective layer for your artwork. Drop your images, choose how "
                    "to protect them, and download the protected PNGs. Everything runs on this computer.")
        models_status = gr.Markdown(bench.models_status, elem_id="fx-models-status")
        with gr.Row():
            with gr.Column(scale=1, min_width=380):
                files = gr.File(label="Your images: drop one or many", file_count="multiple",
                                file_types=sorted(IMAGE_SUFFIXES), elem_id="fx-files")
                upload_note = gr.Markdown(elem_id="fx-upload-note")
                # right under the drop zone: visible without scrolling on a 1366x768 screen; the defaults work
                with gr.Row():
                    run_btn = gr.Button("Protect", variant="primary", elem_id="fx-run")
                    cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="fx-cancel")
                    speed_btn = gr.Button("Measure speed", elem_id="fx-speed")
                progress = gr.HTML(progress_html(JobProgress()), elem_id="fx-progress")
                mode = gr.Radio([(MODE_LABELS[m], m) for m in MODE_LABELS], value="cloak", label="Protection",
                                elem_id="fx-mode")
                mode_help = gr.Markdown(MODE_HELP["cloak"])
                style = gr.Dropdown([(f"{BUILTIN_STYLE}: made on this computer, no download", BUILTIN_STYLE),
                                     ("auto (diffusion model)", "auto"), *STYLE_NAMES], value=BUILTIN_STYLE,
                                    allow_custom_value=True, label="Style to cloak towards",
                                    info="'built-in' needs nothing more; 'auto', the named styles and your own "
                                    "description need a diffusion model ('auto' picks a style distant from your "
                                    "images)", elem_id="fx-style")
                with gr.Row(visible=False) as poison_row:
                    concept = gr.Textbox(label="Concept your images show", placeholder="dog", elem_id="fx-concept")
                    anchor = gr.Textbox(label="Anchor: what a model should learn instead", placeholder="cat",
                                        elem_id="fx-anchor")
                immunize = gr.Radio([(v, k) for k, v in IMMUNIZE_LABELS.items()], value="away",
                                    label="Immunize", visible=False, elem_id="fx-immunize")
                target_file = gr.File(label="Or your own target image (optional; replaces the made target)",
                                      file_count="single", file_types=sorted(IMAGE_SUFFIXES), type="filepath",
                                      elem_id="fx-target")
                intensity = gr.Radio([(INTENSITY_LABELS[k], k) for k in INTENSITY_LABELS], value="medium",
                                     label="Intensity: how much the picture may change", elem_id="fx-intensity")
                intensity_md = gr.Markdown(intensity_table("medium"))
                quality = gr.Radio([(QUALITY_LABELS[k], k) for k in QUALITY_LABELS], value="standard",
                                   label="Render quality: how long to search", elem_id="fx-quality")
                quality_md = gr.Markdown(quality_table(bench.speed, list(config.encoders),
                                                       bench.device_name(config.device), None, "standard"))
                posting = gr.Dropdown(posting_choices(), value="generic", elem_id="fx-posting",
                                      label="Where will you post it? Sites shrink and re-compress uploads; the "
                                            "protection is made to survive what that site does")
                with gr.Row():
                    credentials = gr.Checkbox(True, label="Add my Content Credentials",
                                              info=credentials_note(), elem_id="fx-credentials")
                    opt_out = gr.Dropdown([(v, k) for k, v in OPT_OUT_LABELS.items()], value=DEFAULT_OPT_OUT,
                                          label="Tell AI crawlers and trainers", elem_id="fx-opt-out")
                with gr.Accordion("Advanced options", open=False):
                    encoders_box = gr.Textbox(", ".join(config.encoders), label="Encoders",
                                              info="short names (taef2, taesd, sd15, sdxl, flux1...), files or "
                                                   "folders, separated by commas", elem_id="fx-encoders")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        device = gr.Dropdown(list(DEVICE_CHOICES), value=config.device, label="Device")
                        precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision")
                    with gr.Row():
                        steps = gr.Number(None, label="Steps (0 = the quality's)", precision=0, minimum=0,
                                          elem_id="fx-steps")
                        seconds = gr.Number(None, label="Time limit per image, s (0 = the quality's)",
                                            minimum=0)
                    gr.Markdown("With a step limit and no time limit, the same seed gives the same file again "
                                "(on the CPU); a time limit makes each run a little different.")
                    with gr.Row():
                        target_model = gr.Textbox(label="Target model (made targets)", placeholder="sd15")
                        clip_model = gr.Textbox(label="CLIP model (style auto, anchors)", placeholder="default")
            with gr.Column(scale=1, min_width=420):
                message = gr.Markdown(elem_id="fx-message")
                picker = gr.Dropdown([], label="Image", visible=False, elem_id="fx-picker")
                # a fixed height: without one the slider collapses and its (lazy) images never load
                comparison = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", format="png",
                                            height=480, max_height=720, elem_id="fx-comparison")
                metrics = gr.Markdown(elem_id="fx-metrics")
                with gr.Row():
                    difference = gr.Image(label="Where it changed (amplified)", type="filepath", format="png",
                                          elem_id="fx-difference")
                    model = gr.ImageSlider(label="What the model sees: original / protected", type="filepath",
                                           format="png", elem_id="fx-model-view")
                with gr.Row():
                    difference_caption = gr.Markdown()
                    model_note = gr.Markdown()
                downloads = gr.File(label="Protected PNGs (lossless, exactly as saved)", file_count="multiple",
                                    interactive=False, elem_id="fx-downloads")
                zip_file = gr.File(label="All of them, with their provenance records (zip)", interactive=False,
                                   elem_id="fx-zip")
                command = gr.Markdown(elem_id="fx-command")

        # --- inputs --------------------------------------------------------------------------------
        def on_mode(m):
            return (MODE_HELP[m], gr.update(visible=m == "cloak"), gr.update(visible=m == "poison"),
                    gr.update(visible=m == "immunize"))

        mode.change(on_mode, mode, [mode_help, style, poison_row, immunize], queue=False, api_visibility="private")

        def on_files(f, intensity_v, quality_v, encoders_v, device_v, steps_v):
            check = check_uploads(f, max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
            return (check.message() if f else "", *presets_md(intensity_v, quality_v, encoders_v, device_v,
                                                               steps_v, f))

        preset_inputs = [intensity, quality, encoders_box, device, steps]
        files.change(on_files, [files, *preset_inputs], [upload_note, intensity_md, quality_md],
                     concurrency_limit=None, api_visibility="private")
        for box in preset_inputs:
            box.change(lambda *v: presets_md(*v), [*preset_inputs, files], [intensity_md, quality_md],
                       concurrency_limit=None, api_visibility="private")

        # --- the protection job --------------------------------------------------------------------
        setting_inputs = [mode, target_file, style, concept, anchor, immunize, intensity, quality, posting,
                          encoders_box, seed, device, precision, steps, seconds, target_model, clip_model,
                          credentials, opt_out]
        job_outputs = [progress, models_status, message, results, picker, comparison, difference,
                       difference_caption, model, model_note, metrics, downloads, zip_file, command, run_btn,
                       cancel_btn, quality_md]

        def start():
            return bench.new_token(), gr.update(interactive=False), gr.update(interactive=True)

        def protect(f, *values):
            *setting_values, tok = values
            settings = _settings(*setting_values)
            state = JobProgress(message="Queued: waiting for the engine...", count=len(f or []))
            cancel = bench.cancel_event(tok)
            box: dict[str, JobResult] = {}

            def work():
                box["result"] = run_job(bench, f, settings, progress=state, cancel=cancel)

            thread = threading.Thread(target=work, name="fixative-job", daemon=True)
            thread.start()
            skip = gr.skip()
            try:
                while thread.is_alive():
                    yield (progress_html(state), bench.models_status, *([skip] * 15))
                    thread.join(0.3)
            finally:
                if thread.is_alive():  # the page went away: stop the job at its next step
                    cancel.set()
                bench.forget(tok)
            result = box.get("result") or JobResult(message="The job stopped unexpectedly.")
            images = _as_state(result)
            names = [im["name"] for im in images]
            views = image_views(images, names[0] if names else None)
            yield (progress_html(state), bench.models_status, result.message, images,
                   gr.update(choices=names, value=names[0] if names else None, visible=len(names) > 1),
                   *views[:1], views[1], views[2], views[3], views[4], views[5],
                   [str(p) for p in result.outputs] or None, str(result.zip) if result.zip else None,
                   f"The same on the command line (full paths; the app's copies last while it runs):\n"
                   f"```\n{result.command}\n```" if result.command else "",
                   gr.update(interactive=True), gr.update(interactive=False),
                   presets_md(settings.intensity, settings.quality, ", ".join(settings.encoders), settings.device,
                              settings.steps, f)[1])

        run_btn.click(start, None, [token, run_btn, cancel_btn], queue=False, api_visibility="private").then(
            protect, [files, *setting_inputs, token], job_outputs, concurrency_limit=1,
            concurrency_id=CONCURRENCY_ID, api_name="protect")

        def cancel(tok):
            known = bench.cancel(tok)
            return gr.update(interactive=False), ("Cancelling: the image in progress stops at its next step."
                                                  if known else "Nothing to cancel.")

        cancel_btn.click(cancel, token, [cancel_btn, message], queue=False, api_visibility="private")

        picker.change(lambda r, n: image_views(r, n), [results, picker],
                      [comparison, difference, difference_caption, model, model_note, metrics], queue=False,
                      api_visibility="private")

        # --- speed ---------------------------------------------------------------------------------
        def speed(encoders_v, device_v, precision_v, intensity_v, quality_v, steps_v, f):
            state = JobProgress()
            settings = JobSettings(encoders=parse_encoders(encoders_v), device=device_v, precision=precision_v)
            if not settings.encoders:
                return "Choose at least one encoder first.", bench.models_status, *presets_md(
                    intensity_v, quality_v, encoders_v, device_v, steps_v, f)
            text = measure_speed(bench, settings, progress=state)
            return text, bench.models_status, *presets_md(intensity_v, quality_v, encoders_v, device_v, steps_v, f)

        speed_btn.click(speed, [encoders_box, device, precision, intensity, quality, steps, files],
                        [message, models_status, intensity_md, quality_md], concurrency_limit=1,
                        concurrency_id=CONCURRENCY_ID, api_name="measure_speed")
    return demo


def launch(config: AppConfig, *, host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True,
           block: bool = True, quiet: bool = False):
    """Build the app and serve it on ``host:port`` (port None = the first free one from 7860).

    Never shares publicly; analytics off; uploads over ``config.max_file_bytes`` are refused by the
    server; requests addressed to another host, or sent by another site's page, are refused
    (:mod:`fixative.gui.guard`). ``block=False`` returns at once (tests); returns ``(blocks, local_url)``.
    """
    from fixative.gui.guard import LOOPBACK_NAMES, HostGuard, middleware

    demo = build_app(config)
    demo.queue(default_concurrency_limit=1)
    # the Host and Origin gate (fixative.gui.guard): no DNS rebinding, no uploads from other sites' pages
    guard = HostGuard(loopback=host in LOOPBACK_NAMES)
    demo.fixative_guard = guard
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=open_browser, max_file_size=config.max_file_bytes,
        prevent_thread_lock=True, quiet=True, show_error=True, ssr_mode=False, mcp_server=False, pwa=False,
        enable_monitoring=False, css=PROGRESS_CSS, footer_links=["gradio"],
        app_kwargs={"middleware": [middleware(guard)]},
    )
    guard.port = demo.server_port
    if not quiet:
        where = "this computer only" if host in ("127.0.0.1", "localhost", "::1") else f"every address of {host}"
        print(f"Fixative is running at {url} ({where}). Press Ctrl+C to stop.", flush=True)
    if block:
        demo.block_thread()  # until Ctrl+C (or SIGTERM, see fixative.gui.cli), then the server closes
    return demo, url
