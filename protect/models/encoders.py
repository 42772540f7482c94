"""Image encoders of diffusion models behind one interface, :class:`Encoder`.

An :class:`Encoder` maps images (NCHW float in [0, 1], any height and width) to the latent a
diffusion model would train on (NCHW float32). It is frozen (eval mode, no parameter gradients)
but differentiable with respect to its input, which is all the protection needs.

Supported models, and what ``forward`` returns:

* diffusers ``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3, FLUX.1 VAEs) and ``AutoencoderKLFlux2``
  (FLUX.2): input mapped to [-1, 1], latent = ``encode(x).latent_dist.mean`` (the mean, not a
  sample), raw (no ``scaling_factor`` / ``shift_factor``; for FLUX.2 before the 2x2 patchify and
  BatchNorm normalisation the pipeline applies). The decoder never runs during protection.
* diffusers ``AutoencoderTiny`` (``madebyollin/taesd`` ...): its ``encode`` expects [-1, 1] (it maps
  back to [0, 1] internally); latent = ``encode(x).latents``, raw.
* TAESD-format ``.pth`` files (taesd, taesdxl, taesd3, taef1, taef2, taesana), see
  :mod:`fixative.models.taesd`: input [0, 1] as is.

Specs accepted by :func:`load_encoder`, tried in this order:

1. an existing path: a ``.pth``/``.pt``/``.ckpt``/``.bin``/``.safetensors`` file (TAESD, diffusers
   or original LDM keys, a whole SD checkpoint's ``first_stage_model.*``), a diffusers VAE folder
   (``config.json``) or a pipeline folder (``vae/config.json``). Short names are reserved words:
   write ``./taesd`` for a folder of that name in the working directory;
2. a short name from :data:`SHORT_NAMES` (``taef2``, ``sdxl``, ...): looked up in the model store's
   directories, then on the Hugging Face hub (cache only when offline);
3. a path relative to a model-store directory (``my-vae``, ``taesd/taef2_encoder.pth``);
4. a hub repo id (``org/name``): a VAE repo, or a pipeline repo whose ``vae/`` is used.

Anything else raises one :class:`ModelNotFoundError` that lists every place searched.

The parts, each in its module of :mod:`fixative.models`: ``registry`` (the short names), ``specs``
(resolving a spec), ``adapters`` (the Encoder adapters), ``checkpoints`` (single files and guessing
their config), ``pretrained`` (diffusers folders and hub repos); this module loads and re-exports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from fixative.core.devices import resolve_device
from fixative.core.encoder import Encoder, pad_to_multiple
from fixative.errors import ModelNotFoundError
from fixative.models.adapters import DiffusersKLEncoder, DiffusersTinyEncoder, TAESDFileEncoder
from fixative.models.checkpoints import load_checkpoint
from fixative.models.hub import WEIGHT_SUFFIXES
from fixative.models.pretrained import load_folder, load_hub
from fixative.models.registry import SHORT_NAMES, ShortName
from fixative.models.specs import ResolvedSpec, resolve_spec
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

__all__ = [
    "SHORT_NAMES",
    "WEIGHT_SUFFIXES",
    "DiffusersKLEncoder",
    "DiffusersTinyEncoder",
    "Encoder",
    "ResolvedSpec",
    "ShortName",
    "TAESDFileEncoder",
    "encoder_from_path",
    "load_encoder",
    "load_encoders",
    "pad_to_multiple",
    "resolve_spec",
]


def encoder_from_path(path: str | Path, name: str | None = None) -> Encoder:
    """Load an encoder from a local file or folder (see the module docs for the formats).

    ``name`` defaults to the path. Raises :class:`FixativeError` naming the path when it cannot be
    read or is not a supported model.
    """
    path = Path(path).expanduser()
    name = name or str(path)
    if path.is_dir():
        return load_folder(path, name)
    if not path.is_file():
        raise ModelNotFoundError(f"encoder file {path} does not exist")
    return load_checkpoint(path, name)


def _load_resolved(resolved: ResolvedSpec, store: ModelStore) -> Encoder:
    if resolved.kind == "path":
        return encoder_from_path(resolved.location, resolved.spec)
    return load_hub(resolved, store)


def load_encoder(
    spec: str,
    *,
    store: ModelStore | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_decoder: bool = True,
) -> Encoder:
    """Load one encoder from ``spec`` (path, short name, store-relative path or hub id).

    ``device`` ("cpu", "cuda", "auto", ...; see :func:`fixative.core.devices.resolve_device`) and
    ``dtype``: where and in what precision the weights live (outputs are float32 anyway).
    ``keep_decoder=False`` frees the decoder's memory (then ``decode`` raises).
    Raises :class:`ModelNotFoundError` (listing every place searched) or :class:`FixativeError`.
    """
    store = store or ModelStore()
    resolved = resolve_spec(spec, store)
    log.info("encoder %r -> %s %s%s", spec, resolved.kind, resolved.location,
             f"/{resolved.subfolder}" if resolved.subfolder else "")  # fmt: skip
    return _finish(_load_resolved(resolved, store), device, dtype, keep_decoder)


def _finish(encoder: Encoder, device: str | torch.device, dtype: torch.dtype, keep_decoder: bool) -> Encoder:
    """Move to device/dtype, optionally drop the decoder, freeze."""
    if not keep_decoder:
        _drop_decoder(encoder)
    vae = getattr(encoder, "vae", None)
    if dtype == torch.float16 and getattr(getattr(vae, "config", None), "force_upcast", False):
        log.warning("%s: this VAE is known to overflow in float16; prefer float32 or bfloat16", encoder.name)
    encoder = encoder.to(device=resolve_device(device), dtype=dtype)
    encoder._freeze()
    return encoder


def _drop_decoder(encoder: Encoder) -> None:
    if isinstance(encoder, TAESDFileEncoder):
        encoder.decoder = None
    elif isinstance(encoder, DiffusersKLEncoder | DiffusersTinyEncoder):
        encoder.vae.decoder = None
        if getattr(encoder.vae, "post_quant_conv", None) is not None:
            encoder.vae.post_quant_conv = None


def load_encoders(
    specs: Sequence[str],
    *,
    store: ModelStore | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_decoder: bool = True,
) -> list[Encoder]:
    """Load several encoders, in order; specs naming the same weights are loaded once.

    All specs are resolved before any model loads, so a missing model fails fast.
    """
    store = store or ModelStore()
    resolved: list[ResolvedSpec] = []
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        r = resolve_spec(spec, store)
        if r.key not in seen:
            seen.add(r.key)
            resolved.append(r)
    return [_finish(_load_resolved(r, store), device, dtype, keep_decoder) for r in resolved]
