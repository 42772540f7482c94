"""The desktop app's window: a Gradio ``Blocks`` page made of panels (:mod:`fixative.gui.panels`) wired to
plain handlers (:mod:`fixative.gui.events`).

Nothing here computes: each event calls a handler and turns its result into component values.
:func:`build_app` makes the page (no models are loaded: they load on the first job);
:func:`launch` serves it on 127.0.0.1 unless told otherwise, never with a public share link, with
analytics off, an upload size limit, one protection at a time, and the temporary folder deleted at exit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fixative.gui import events, panels
from fixative.gui.form import DEFAULT_ENCODERS
from fixative.gui.uploads import DEFAULT_MAX_FILE_BYTES
from fixative.gui.workbench import Workbench


@dataclass
class AppConfig:
    """How the app runs: model folder, limits, default encoders, and (for tests) a fixed temp folder."""

    models_dir: Path | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pixels: int | None = None
    encoders: tuple[str, ...] = DEFAULT_ENCODERS
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


def build_app(config: AppConfig | None = None, bench: Workbench | None = None):
    """The app's ``gr.Blocks`` (and its :class:`Workbench` as ``blocks.fixative_bench``); loads no model."""
    config = config or AppConfig()
    bench = bench or _workbench(config)
    # uploads and gradio's copies of results live in the workbench's folder, deleted at exit
    os.environ["GRADIO_TEMP_DIR"] = str(bench.root / "gradio")
    gr = _import_gradio()
    from fixative.targets.names import STYLE_NAMES

    ui = SimpleNamespace()
    with gr.Blocks(title="Fixative", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        demo.fixative_bench = bench
        ui.token, ui.results = gr.State(None), gr.State([])
        panels.header(gr, ui, bench)
        with gr.Row():
            with gr.Column(scale=1, min_width=380):
                panels.drop_and_run(gr, ui)
                panels.protection(gr, ui, list(STYLE_NAMES))
                panels.presets(gr, ui, bench, list(config.encoders), config.device)
                panels.advanced(gr, ui, list(config.encoders), config.device)
            with gr.Column(scale=1, min_width=420):
                panels.results(gr, ui)
        events.wire_inputs(gr, ui, bench)
        events.wire_job(gr, ui, bench)
        events.wire_speed(gr, ui, bench)
    return demo


def _workbench(config: AppConfig) -> Workbench:
    kw: dict[str, Any] = {"models_dir": config.models_dir, "max_bytes": config.max_file_bytes, "root": config.root,
                          "target_cache": config.target_cache}
    if config.max_pixels:
        kw["max_pixels"] = config.max_pixels
    return Workbench(**kw)


def launch(config: AppConfig, *, host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True,
           block: bool = True, quiet: bool = False):
    """Build the app and serve it on ``host:port`` (port None = the first free one from 7860).

    Never shares publicly; analytics off; uploads over ``config.max_file_bytes`` are refused by the
    server; requests addressed to another host, or sent by another site's page, are refused
    (:mod:`fixative.gui.guard`). ``block=False`` returns at once (tests); returns ``(blocks, local_url)``.
    """
    from fixative.gui.explain import PROGRESS_CSS
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
