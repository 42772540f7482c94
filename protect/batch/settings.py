"""The settings of a run as recorded and hashed (what decides an output's pixels and file), and the
robust mix and training views they resolve to."""

from __future__ import annotations

from fixative.options import ProtectOptions, SearchOptions, Views
from fixative.targets.modes import TargetRequest


def run_settings(opts: ProtectOptions, request: TargetRequest, models: list[dict], lpips: dict) -> dict:
    """The settings that decide an output's pixels and file (hashed to recognise finished work)."""
    search, output = opts.search, opts.output
    return {
        "target": request.describe(),
        **search.budget_limit().describe(),
        "method": search.method,
        "steps": search.steps,
        "seconds": search.seconds,
        "seed": search.seed,
        "linf": search.linf,
        "precision": search.precision,
        "lpips_net": opts.models.lpips_net,
        "tile_size": search.tile_size,
        "robust": robust_entry(search),
        "views": views_entry(search),
        "encoders": [{"spec": m["spec"], "sha256": [f["sha256"] for f in m["files"]]} for m in models],
        "lpips": [f["sha256"] for f in lpips["files"]],
        "format": output.format,
        "jpeg_quality": output.jpeg_quality if output.format == "jpeg" else None,
        "bits": "as input where the format allows",
        "opt_out": output.opt_out,
        "credentials": output.identity.fingerprint if output.identity is not None else None,
    }


def platform_for(search: SearchOptions) -> str | None:
    """The platform protected for: ``search.platform``, else the generic one for robust "web", else None."""
    from fixative.batch.platforms import DEFAULT_PLATFORM

    return search.platform or (DEFAULT_PLATFORM if search.robust == "web" else None)


def robust_entry(search: SearchOptions) -> dict | str:
    """The robust mix as recorded and hashed: "off", or the preset's data (and the platform's)."""
    from fixative.core.robust import settings_for

    base = settings_for(search.robust)
    platform = platform_for(search)
    if platform is None:
        return "off" if base is None else base.describe()
    from fixative.batch.platforms import get_platform

    return {"level": search.robust, "platform": get_platform(platform).describe(),
            "base": base.describe() if base is not None else None}


def views_entry(search: SearchOptions) -> dict | str:
    """The training views as recorded and hashed: "off", or the preset's data."""
    from fixative.core.views import views_for

    views = views_for(search.views)
    return "off" if views is None else views.describe()


def robust_settings(search: SearchOptions, size: tuple[int, int]):
    """The :class:`~fixative.core.robust.RobustSettings` for one image of ``size`` (H, W), or None (off).

    With training views the encoders already see the image shrunk to a trainer's size, smaller than any
    platform's limit, so the platform's own downscale is not drawn again on top of it."""
    from fixative.core.robust import settings_for

    platform = platform_for(search)
    if platform is None:
        return settings_for(search.robust)
    from fixative.batch.platforms import get_platform, robust_for

    return robust_for(get_platform(platform), None if search.views != Views.OFF else size, search.robust)


def optimizer_settings(search: SearchOptions, size: tuple[int, int]):
    """The :class:`~fixative.core.optimizer.OptimizerSettings` of one image of ``size`` (H, W)."""
    from fixative.core.optimizer import OptimizerSettings

    return OptimizerSettings(method=search.method.value, steps=search.steps, seconds=search.seconds,
                             seed=search.seed, linf=search.linf, precision=search.precision.value,
                             robust=robust_settings(search, size), views=search.views.value)
