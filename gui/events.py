"""The app page's events: what each control and button calls (the plain handlers of :mod:`fixative.gui.job`,
:mod:`fixative.gui.speed`, :mod:`fixative.gui.uploads`) and how their results become component values.

Every ``wire_*`` function takes the gradio module as ``gr`` and the controls ``ui`` that
:mod:`fixative.gui.panels` made, inside the open ``gr.Blocks``.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from fixative.defaults import DEFAULT_OPT_OUT
from fixative.gui.explain import JobProgress, intensity_table, progress_html, quality_table
from fixative.gui.form import JobSettings, parse_encoders
from fixative.gui.job import run_job
from fixative.gui.panels import MODE_HELP
from fixative.gui.results import JobResult
from fixative.gui.speed import measure_speed
from fixative.gui.uploads import average_megapixels, check_uploads
from fixative.gui.workbench import Workbench

#: the protection events' shared queue: at most one runs at a time, across all browser tabs
CONCURRENCY_ID = "protection"


def form_settings(mode, target_file, style, concept, anchor, immunize, intensity, quality, posting, encoders_text,
                  seed, device, precision, steps, seconds, target_model, clip_model, credentials=True,
                  opt_out=DEFAULT_OPT_OUT) -> JobSettings:
    """The :class:`JobSettings` of the form's values (in the order of :func:`setting_inputs`); blanks are None."""
    return JobSettings(
        mode=mode, target_image=target_file or None, style=style or "", concept=concept or "", anchor=anchor or "",
        immunize=immunize, intensity=intensity, quality=quality, posting=posting,
        encoders=parse_encoders(encoders_text),
        seed=int(seed or 0), device=device, precision=precision, steps=int(steps) if steps else None,
        seconds=float(seconds) if seconds else None, target_model=(target_model or "").strip() or None,
        clip_model=(clip_model or "").strip() or None, credentials=bool(credentials), opt_out=opt_out,
    )


def setting_inputs(ui: SimpleNamespace) -> list:
    """The form's controls in the order :func:`form_settings` takes their values (the /protect API's order)."""
    return [ui.mode, ui.target_file, ui.style, ui.concept, ui.anchor, ui.immunize, ui.intensity, ui.quality,
            ui.posting, ui.encoders_box, ui.seed, ui.device, ui.precision, ui.steps, ui.seconds, ui.target_model,
            ui.clip_model, ui.credentials, ui.opt_out]


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


def presets_md(bench: Workbench, intensity, quality, encoders_text, device, steps, files) -> tuple[str, str]:
    """The intensity table and the quality table (expected times for these encoders, device and images)."""
    encoders = parse_encoders(encoders_text)
    return (intensity_table(intensity),
            quality_table(bench.speed, encoders, bench.device_name(device), average_megapixels(files), quality,
                          int(steps) if steps else None))


def wire_inputs(gr, ui: SimpleNamespace, bench: Workbench) -> None:
    """The mode shows its own target controls; uploads are checked; the tables follow the presets."""
    def on_mode(m):
        return (MODE_HELP[m], gr.update(visible=m == "cloak"), gr.update(visible=m == "poison"),
                gr.update(visible=m == "immunize"))

    ui.mode.change(on_mode, ui.mode, [ui.mode_help, ui.style, ui.poison_row, ui.immunize], queue=False,
                   api_visibility="private")

    def on_files(f, intensity_v, quality_v, encoders_v, device_v, steps_v):
        check = check_uploads(f, max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
        return (check.message() if f else "", *presets_md(bench, intensity_v, quality_v, encoders_v, device_v,
                                                           steps_v, f))

    preset_inputs = [ui.intensity, ui.quality, ui.encoders_box, ui.device, ui.steps]
    ui.files.change(on_files, [ui.files, *preset_inputs], [ui.upload_note, ui.intensity_md, ui.quality_md],
                    concurrency_limit=None, api_visibility="private")
    for box in preset_inputs:
        box.change(lambda *v: presets_md(bench, *v), [*preset_inputs, ui.files], [ui.intensity_md, ui.quality_md],
                   concurrency_limit=None, api_visibility="private")


def wire_job(gr, ui: SimpleNamespace, bench: Workbench) -> None:
    """Protect (queued, one at a time, the ``/protect`` API), Cancel, and the image picker."""
    job_outputs = [ui.progress, ui.models_status, ui.message, ui.results, ui.picker, ui.comparison, ui.difference,
                   ui.difference_caption, ui.model, ui.model_note, ui.metrics, ui.downloads, ui.zip_file, ui.command,
                   ui.run_btn, ui.cancel_btn, ui.quality_md]

    def start():
        return bench.new_token(), gr.update(interactive=False), gr.update(interactive=True)

    def protect(f, *values):
        *setting_values, tok = values
        settings = form_settings(*setting_values)
        state = JobProgress(message="Queued: waiting for the engine...", count=len(f or []))
        result = yield from _follow(gr, bench, tok, state, lambda cancel: run_job(bench, f, settings, progress=state,
                                                                                cancel=cancel))
        yield _shown(gr, bench, state, result, settings, f)

    ui.run_btn.click(start, None, [ui.token, ui.run_btn, ui.cancel_btn], queue=False,
                     api_visibility="private").then(
        protect, [ui.files, *setting_inputs(ui), ui.token], job_outputs, concurrency_limit=1,
        concurrency_id=CONCURRENCY_ID, api_name="protect")

    def cancel(tok):
        known = bench.cancel(tok)
        return gr.update(interactive=False), ("Cancelling: the image in progress stops at its next step."
                                              if known else "Nothing to cancel.")

    ui.cancel_btn.click(cancel, ui.token, [ui.cancel_btn, ui.message], queue=False, api_visibility="private")
    ui.picker.change(lambda r, n: image_views(r, n), [ui.results, ui.picker],
                     [ui.comparison, ui.difference, ui.difference_caption, ui.model, ui.model_note, ui.metrics],
                     queue=False, api_visibility="private")


def _follow(gr, bench: Workbench, tok, state: JobProgress, work):
    """Run ``work(cancel)`` in a thread, yielding the progress bars (and the models' status) every 0.3 s until it
    ends; returns its :class:`JobResult`. If the page goes away (the generator is closed) the job is cancelled."""
    cancel = bench.cancel_event(tok)
    box: dict[str, JobResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", work(cancel)), name="fixative-job",
                              daemon=True)
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
    return box.get("result") or JobResult(message="The job stopped unexpectedly.")


def _shown(gr, bench: Workbench, state: JobProgress, result: JobResult, settings: JobSettings, files) -> tuple:
    """The job outputs' values once a job ended: message, pictures of the first image, downloads, command."""
    images = _as_state(result)
    names = [im["name"] for im in images]
    views = image_views(images, names[0] if names else None)
    return (progress_html(state), bench.models_status, result.message, images,
            gr.update(choices=names, value=names[0] if names else None, visible=len(names) > 1),
            *views, [str(p) for p in result.outputs] or None, str(result.zip) if result.zip else None,
            f"The same on the command line (full paths; the app's copies last while it runs):\n"
            f"```\n{result.command}\n```" if result.command else "",
            gr.update(interactive=True), gr.update(interactive=False),
            presets_md(bench, settings.intensity, settings.quality, ", ".join(settings.encoders), settings.device,
                       settings.steps, files)[1])


def wire_speed(gr, ui: SimpleNamespace, bench: Workbench) -> None:
    """Measure speed (in the protection queue, the ``/measure_speed`` API): then the tables show expected times."""
    def speed(encoders_v, device_v, precision_v, intensity_v, quality_v, steps_v, f):
        state = JobProgress()
        settings = JobSettings(encoders=parse_encoders(encoders_v), device=device_v, precision=precision_v)
        if not settings.encoders:
            return "Choose at least one encoder first.", bench.models_status, *presets_md(
                bench, intensity_v, quality_v, encoders_v, device_v, steps_v, f)
        text = measure_speed(bench, settings, progress=state)
        return text, bench.models_status, *presets_md(bench, intensity_v, quality_v, encoders_v, device_v, steps_v,
                                                      f)

    ui.speed_btn.click(speed, [ui.encoders_box, ui.device, ui.precision, ui.intensity, ui.quality, ui.steps,
                               ui.files], [ui.message, ui.models_status, ui.intensity_md, ui.quality_md],
                       concurrency_limit=1, concurrency_id=CONCURRENCY_ID, api_name="measure_speed")
