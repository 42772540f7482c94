"""The "Measure speed" button: a few search steps on a test image, timed, so the app can say how long a job takes."""

from __future__ import annotations

from fixative.errors import ConfigError, FixativeError
from fixative.gui.explain import JobProgress
from fixative.gui.form import JobSettings, control_message, model_options
from fixative.gui.workbench import Workbench
from fixative.options import Precision, coerce


def measure_speed(bench: Workbench, settings: JobSettings, *, size: int = 512, steps: int = 6,
                  progress: JobProgress | None = None) -> str:
    """Time a few search steps on a ``size`` x ``size`` test image with the chosen encoders and device.

    Loads the models if needed (as a first job would), runs ``steps`` steps and records seconds per
    step per megapixel from steps 2..``steps`` (the first includes warm-up). Returns a sentence.
    """
    progress = progress or JobProgress()
    try:
        models = model_options(settings, bench.models_dir)
        models.check()
        precision = coerce(Precision, settings.precision, "search.precision")
        with bench.lock:
            def report(text: str) -> None:
                progress.phase, progress.message = "loading", text

            protector = bench.protector_for(models, report)
            times = _time_steps(protector, precision, size, steps, progress)
    except FixativeError as exc:
        text = control_message(exc) if isinstance(exc, ConfigError) and exc.field else str(exc)
        progress.phase, progress.message = "failed", f"Could not measure: {text}"
        return progress.message
    last = max(times)
    if last < 2:
        return "Could not measure: the search stopped after one step."
    seconds = times[last] - times[1]
    device = str(protector.device)
    bench.speed.add(list(models.encoders), device, last - 1, seconds, size * size / 1e6,
                    f"measured on a {size}x{size} test image")
    progress.phase = "done"
    progress.message = (f"Measured {seconds / (last - 1):.3g} s per step on a {size}x{size} px image with "
                        f"{', '.join(models.encoders)} on {device}.")
    return progress.message


def _time_steps(protector, precision: Precision, size: int, steps: int, progress: JobProgress) -> dict[int, float]:
    """Run ``steps`` search steps on a smooth random ``size`` x ``size`` image; {step: seconds since the start}."""
    import torch
    import torch.nn.functional as F

    from fixative.core.budgets import VisibilityLimit
    from fixative.core.optimizer import OptimizerSettings

    progress.phase, progress.message = "protecting", f"Measuring speed: {steps} steps on {size}x{size} px..."
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, size // 16, size // 16, generator=g), size=(size, size),
                          mode="bicubic", align_corners=False).clamp(0, 1)
    times: dict[int, float] = {}

    def on_step(info) -> None:
        times[info.step] = info.elapsed
        progress.step, progress.steps, progress.fraction = info.step, steps, info.step / steps

    protector.protect(image, objective="away", budget=VisibilityLimit(), callback=on_step,
                      settings=OptimizerSettings(steps=steps, patience=0, precision=precision.value))
    return times
