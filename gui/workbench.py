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
from typing import TYPE_CHECKING

from fixative.errors import FixativeError
from fixative.files.images import MAX_PIXELS
from fixative.gui.explain import SpeedTable
from fixative.gui.uploads import DEFAULT_MAX_FILE_BYTES
from fixative.models.loading import ProtectorCache

if TYPE_CHECKING:
    from fixative.options import ModelOptions, ProtectOptions


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
        self.models = ProtectorCache()  # the loaded models: one protector, shared by jobs, the batch and the speed test
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

    def protector_for(self, models: ModelOptions, report: Callable[[str], None] | None = None):
        """The loaded :class:`~fixative.core.engine.Protector` for these models, from :attr:`models` (the app's one
        :class:`~fixative.models.loading.ProtectorCache`, which the batch shares): loaded now if needed, after
        the previous models are let go. ``report`` hears the models' status as it changes."""
        spec = models.spec()
        if spec in self.models:
            return self.models.get(spec)
        self.models.clear()  # free the previous models first
        what = f"{', '.join(spec.encoders)} and LPIPS ({spec.lpips_net}) on {spec.device}"
        self.models_status = f"Models: loading {what}..."
        if report:
            report(self.models_status)
        started = time.perf_counter()
        try:
            protector = self.models.get(spec)
        except Exception:
            self.models_status = "Models: not loaded (the last attempt failed; see the message)."
            raise
        self.models_status = (f"Models: {', '.join(spec.encoders)} and LPIPS loaded on {protector.device} "
                              f"in {time.perf_counter() - started:.1f} s.")
        if report:
            report(self.models_status)
        return protector

    def maker_for(self, options: ProtectOptions):
        """The :class:`~fixative.targets.made.TargetMaker` for options with a made target (kept while the target
        model, device, precision, models folder, cache and CLIP model stay the same)."""
        from fixative.targets.made import GenerationSettings, TargetMaker

        t, m = options.target, options.models
        key = (t.model, m.device, options.search.precision, str(m.models_dir), str(t.cache), t.clip_model)
        if self._maker is None or self._maker_key != key:
            self._maker = TargetMaker(t.model, device=m.device, precision=options.search.precision.value,
                                      models_dir=m.models_dir, cache_dir=t.cache, clip_model=t.clip_model,
                                      settings=GenerationSettings(), progress=False)
            self._maker_key = key
        return self._maker

    def device_name(self, device: str) -> str:
        """The device ``device`` ("auto", "cpu"...) resolves to here ("cpu", "cuda"...)."""
        from fixative.core.devices import resolve_device

        try:
            return str(resolve_device(device))
        except FixativeError:
            return device
