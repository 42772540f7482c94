"""``fixative gui``: the desktop app, registered through the ``fixative.commands`` entry point.

``fixative gui [--host 127.0.0.1] [--port N] [--no-browser] [--models-dir DIR] [--encoder SPEC...]
[--max-file-size MB] [--max-pixels N] [--device D]`` serves the app on this computer only (unless
``--host`` says otherwise) and opens it in the browser. Gradio is the ``gui`` extra; without it the
command says how to install it. Importing this module imports neither gradio nor any model.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("fixative.gui")


def _megabytes(text: str) -> int:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return int(value * 1024 * 1024)


#: the one-line help of ``fixative gui`` in ``fixative --help``
COMMAND_HELP = "open the desktop app (drop images, protect, download)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gui`` to the ``fixative`` command line."""
    from fixative.core.devices import DEVICE_CHOICES
    from fixative.gui.uploads import DEFAULT_MAX_FILE_BYTES

    p = subparsers.add_parser(
        "gui", help=COMMAND_HELP,
        description="Serve Fixative's desktop app in the browser. It listens on 127.0.0.1 only (this computer) "
                    "unless --host says otherwise, never makes a public link, and sends no analytics.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 = every network, "
                        "with no password: only on a network you trust)")
    p.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    p.add_argument("--no-browser", action="store_true", help="do not open the browser")
    p.add_argument("--models-dir", type=Path, help="folder holding model files (see models/README.md)")
    p.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="the encoders offered by default (repeatable; default taef2)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default compute device (default auto)")
    p.add_argument("--max-file-size", type=_megabytes, default=DEFAULT_MAX_FILE_BYTES, metavar="MB",
                   help="largest upload accepted, in megabytes (default 200)")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this (default 300,000,000)")
    p.add_argument("--target-cache", type=Path, metavar="DIR",
                   help="keep made style/anchor targets in DIR between sessions (default: in the app's temporary "
                        "folder, deleted when it stops: they are re-rendered copies of your artwork)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=gui_command)


def gui_command(args: argparse.Namespace) -> int:
    """Run ``fixative gui`` until interrupted (Ctrl+C); the temporary folder is deleted on the way out."""
    from fixative.errors import ConfigError

    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ConfigError("'fixative gui' needs Gradio, which is not installed; install it with: "
                          "pip install 'fixative[gui]'") from exc
    from fixative.gui.app import AppConfig, launch
    from fixative.gui.form import DEFAULT_ENCODERS

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: ports are 0-65535")
    config = AppConfig(models_dir=args.models_dir, max_file_bytes=args.max_file_size, max_pixels=args.max_pixels,
                       encoders=tuple(args.encoders or DEFAULT_ENCODERS), device=args.device,
                       target_cache=args.target_cache)

    def stop(signum, frame):  # SIGTERM: leave like Ctrl+C, so the temporary folder is deleted
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this computer on that network can use the app", args.host)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup requests are not news
    print("Fixative desktop app: starting...", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how the app is stopped
        launch(config, host=args.host, port=args.port, open_browser=not args.no_browser)
    return 0
