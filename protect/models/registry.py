"""The encoders' short names (``taef2``, ``sdxl``, ...): where each one's weights are found and how to get them."""

from __future__ import annotations

from dataclasses import dataclass

_TAESD_GITHUB = "https://github.com/madebyollin/taesd"


@dataclass(frozen=True)
class ShortName:
    """A short encoder name and where its weights are found.

    ``local``: file/folder names tried in each model-store directory (and its ``taesd/``,
    ``vae/`` ... subfolders); ``hub_repo``/``hub_subfolder``: the Hugging Face fallback (None when
    the hub has no loadable copy); ``latent_channels``/``downsample``: what the latent looks like;
    ``get``: how a user obtains the weights (for error messages).
    """

    name: str
    description: str
    local: tuple[str, ...]
    hub_repo: str | None
    hub_subfolder: str
    latent_channels: int
    downsample: int
    get: str


def _vae(name: str, description: str, repo: str, channels: int, note: str = "") -> ShortName:
    local = (name, f"{name}_vae", f"{name}_vae.safetensors", f"{name}.safetensors")
    get = (
        f"`fixative models fetch {name}`{note}; or `hf download {repo} --include 'vae/*'` (fills the Hugging Face "
        "cache, used automatically); "
        f"or copy its diffusers 'vae' folder (config.json + diffusion_pytorch_model.safetensors) to "
        f"<models dir>/{name}/, or a single-file VAE to <models dir>/{name}_vae.safetensors"
    )
    return ShortName(name, description, local, repo, "vae", channels, 8, get)


def _taesd(name: str, description: str, channels: int, repo: str | None, downsample: int = 8) -> ShortName:
    local = (f"{name}_encoder.pth", f"{name}_encoder.safetensors")
    get = f"`fixative models fetch {name}`; or download {name}_encoder.pth (and {name}_decoder.pth, for previews) "
    get += f"from {_TAESD_GITHUB} into "
    get += "<models dir>/taesd/"
    if repo:
        get += f"; or `hf download {repo}` (diffusers AutoencoderTiny; fills the Hugging Face cache)"
    return ShortName(name, description, local, repo, "", channels, downsample, get)


_GATED = " (gated: accept the licence on huggingface.co and `hf auth login` first)"

SHORT_NAMES: dict[str, ShortName] = {
    s.name: s
    for s in (
        _vae("sd15", "Stable Diffusion 1.x VAE (kl-f8)", "stable-diffusion-v1-5/stable-diffusion-v1-5", 4),
        _vae("sd21", "Stable Diffusion 2.x VAE (kl-f8)", "stabilityai/stable-diffusion-2-1", 4),
        _vae("sdxl", "SDXL VAE", "stabilityai/stable-diffusion-xl-base-1.0", 4),
        _vae(
            "sd3",
            "Stable Diffusion 3 / 3.5 VAE",
            "stabilityai/stable-diffusion-3-medium-diffusers",
            16,
            _GATED,
        ),
        _vae("flux1", "FLUX.1 VAE", "black-forest-labs/FLUX.1-schnell", 16),
        _vae("flux2", "FLUX.2 VAE (AutoencoderKLFlux2)", "black-forest-labs/FLUX.2-dev", 32, _GATED),
        _taesd("taesd", "Tiny AutoEncoder for SD 1.x/2.x", 4, "madebyollin/taesd"),
        _taesd("taesdxl", "Tiny AutoEncoder for SDXL", 4, "madebyollin/taesdxl"),
        _taesd("taesd3", "Tiny AutoEncoder for SD3", 16, "madebyollin/taesd3"),
        _taesd("taef1", "Tiny AutoEncoder for FLUX.1", 16, "madebyollin/taef1"),
        _taesd("taef2", "Tiny AutoEncoder for FLUX.2 (mid-block GroupNorm; .pth only)", 32, None),
        _taesd("taesana", "Tiny encoder for Sana's DC-AE f32c32 (32x; no decoder)", 32, None, 32),
    )
}
"""Short encoder names. Big VAEs come from pipeline repos' ``vae/`` subfolder; the taesd family
from ``<name>_encoder.pth`` files in the model store first, then (where one exists) the hub's
diffusers ``AutoencoderTiny`` repo. taef2 and taesana have no hub fallback (diffusers'
AutoencoderTiny lacks taef2's mid-block GroupNorm; taesana exists only as a .pth)."""
