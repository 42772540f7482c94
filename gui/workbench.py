"""The app's one piece of shared state, :class:`Workbench`: the loaded models (loaded lazily, on the first job,
and kept while the settings that chose them stay the same), a lock that lets one protection run at a time,
the cancel flags of running jobs, the measured speed, and the temporary folder every upload and result
lives in (deleted at exit).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fixative.errors import FixativeError
from fixative.files.images import MAX_PIXELS
from fixative.gui.explain import SpeedTable
from fixative.gui.uploads import DEFAULT_MAX_FILE_BYTES


class Workbench:
    """The app's shared state; one per app (see the module docs).

    - ``models_dir``: the model store's folder (as ``--models-dir``); ``max_pixels``, ``max_bytes``:
      the limits uploads are checked against.
    - ``root``: the temporary folder for uploads and results (made here unless given; deleted at exit
      when made here, or by :meth:`cleanup`).
    """

    def __init__(self, *, models_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES, root: Path | None = None,
                 target_cache: Path | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser().resolve() if models_dir else None
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        self.own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fixative-gui-"))
        self.root.mkdir(parents=True, exist_ok=True)
        if self.own_root:
            atexit.register(self.cleanup)
        # made targets are re-rendered copies of the artwork: kept in the temporary folder (deleted at exit)
        # unless the user chose a cache
        self.target_cache = Path(target_cache).expanduser() if target_cache else self.root / "targets"
        self.speed = SpeedTable()
        self.lock = threading.Lock()  # one protection (one GPU job) at a time, whoever asks
        self._protector = None
        self._protector_key: tuple | None = None
        self._maker = None
        self._maker_key: tuple | None = None
        self._cancels: dict[str, threading.Event] = {}
        self._cancel_guard = threading.Lock()
        self._jobs = 0
        self.models_status = "Models: not loaded yet (they load when the first job starts)."

    # --- temporary files ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete the temporary folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)

    def new_job_folder(self) -> Path:
        self._jobs += 1
        folder = self.root / "jobs" / f"{self._jobs:04d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    # --- cancelling -------------------------------------------------------------------------------

    def new_token(self) -> str:
        """A fresh job token (the app makes one per click, before the job is queued)."""
        token = uuid.uuid4().hex
        with self._cancel_guard:
            self._cancels[token] = threading.Event()
        return token

    def cancel(self, token: str | None) -> bool:
        """Ask the job with ``token`` to stop (a queued job stops before it starts). True if it was known."""
        with self._cancel_guard:
            event = self._cancels.get(token or "")
        if event is None:
            return False
        event.set()
        return True

    def cancel_event(self, token: str | None) -> threading.Event:
        """The cancel flag of the job with ``token`` (a fresh, unregistered one without a token)."""
        if not token:
            return threading.Event()
        with self._cancel_guard:
            return self._cancels.setdefault(token, threading.Event())

    def forget(self, token: str | None) -> None:
        with self._cancel_guard:
            self._cancels.pop(token or "", None)

    # --- models -------------------------------------------------------------------------------------

    def protector_for(self, opts, report: Callable[[str], None] | None = None):
        """The loaded :class:`~fixative.core.engine.Protector` for these batch options (loaded now if needed)."""
        key = (tuple(opts.encoders), opts.lpips_net, str(opts.models_dir), opts.device)
        if self._protector is not None and self._protector_key == key:
            return self._protector
        from fixative.models.loading import load_protector

        self._protector = None  # free the previous models first
        what = f"{', '.join(opts.encoders)} and LPIPS ({opts.lpips_net}) on {opts.device}"
        self.models_status = f"Models: loading {what}..."
        if report:
            report(self.models_status)
        started = time.perf_counter()
        try:
            protector = load_protector(opts.encoders, lpips_net=opts.lpips_net, models_dir=opts.models_dir,
                                             device=opts.device)
        except Exception:
            self.models_status = "Models: not loaded (the last attempt failed; see the message)."
            raise
        self._protector, self._protector_key = protector, key
        self.models_status = (f"Models: {', '.join(opts.encoders)} and LPIPS loaded on {protector.device} "
                              f"in {time.perf_counter() - started:.1f} s.")
        if report:
            report(self.models_status)
        return protector

    def maker_for(self, args):
        """The :class:`~fixative.targets.made.TargetMaker` for a parsed command line with a made target (kept)."""
        from fixative.targets.made import GenerationSettings, TargetMaker

        key = (args.target_model, args.device, args.precision, str(args.models_dir), str(args.target_cache),
               args.clip_model)
        if self._maker is None or self._maker_key != key:
            self._maker = TargetMaker(args.target_model, device=args.device, precision=args.precision,
                                      models_dir=args.models_dir, cache_dir=args.target_cache,
                                      clip_model=args.clip_model, settings=GenerationSettings(),
                                      progress=False)
            self._maker_key = key
        return self._maker

    def device_name(self, device: str) -> str:
        """The device ``device`` ("auto", "cpu"...) resolves to here ("cpu", "cuda"...)."""
        from fixative.core.devices import resolve_device

        try:
            return str(resolve_device(device))
        except FixativeError:
            return device
