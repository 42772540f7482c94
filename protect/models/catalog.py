"""Every model Fixative knows by name: what it is, its licence, where it is found and how to fetch it.

``fixative models list`` shows each entry, found or not (:func:`locate`); ``fixative models fetch NAME``
downloads it into the per-user models folder (:func:`fixative.userdirs.user_models_dir`), which the
model store searches:

- files outside the Hugging Face hub (the TAESD-format ``.pth`` files on GitHub, torchvision's
  VGG16) by HTTPS, each checked against a pinned SHA-256 (:mod:`fixative.models.download`);
- hub models through ``huggingface_hub`` (progress bars, resume), into ``<models folder>/<name>/``,
  the folder name the store looks for.

Nothing here downloads or loads anything by itself; :func:`locate` never contacts the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fixative.models.builtin import BUILTIN_FILES

_TAESD_COMMIT = "5cccb12dc72074a4be35680c3b108548a7c69978"
_TAESD_RAW = f"https://raw.githubusercontent.com/madebyollin/taesd/{_TAESD_COMMIT}"
_VAE_FILES = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")
_PIPELINE_FILES = (
    "model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", "feature_extractor/*", "*/config.json",
    "text_encoder/model.safetensors", "text_encoder_2/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
)


@dataclass(frozen=True)
class RemoteFile:
    """A file fetched by HTTPS: saved as ``relpath`` in the models folder, checked against ``sha256``.

    ``sha256``: the full hex digest, or (for torchvision's files, which publish only that) its first
    8+ hex digits. ``convert``: a post-processing step by name (``"vgg16-features"``: keep the
    ``features.*`` tensors of a torchvision checkpoint as ``convert_to``, safetensors).
    """

    relpath: str
    url: str
    sha256: str
    size: int | None = None
    convert: str | None = None
    convert_to: str | None = None


@dataclass(frozen=True)
class KnownModel:
    """A model by name. ``local``: the paths the store looks for (relative to a models folder; the first
    is the main file); ``files``: HTTPS downloads; ``hub_repo``/``hub_files``: a hub download (glob
    patterns) into ``<models folder>/<folder>/``, or into the Hugging Face cache when ``folder`` is None
    (the store looks there for that repo)."""

    name: str
    kind: str  # "encoder", "lpips", "generator", "clip"
    description: str
    licence: str
    local: tuple[str, ...]
    files: tuple[RemoteFile, ...] = ()
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ()
    folder: str | None = None
    gated: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def builtin(self) -> bool:
        """True when the package ships this model's main file."""
        return any(rel in BUILTIN_FILES for rel in self.local[:1])

    @property
    def how(self) -> str:
        """How ``fixative models fetch`` gets it, in words."""
        if self.files:
            hosts = sorted({f.url.split("/")[2] for f in self.files})
            return f"HTTPS from {', '.join(hosts)}, SHA-256 pinned"
        if self.hub_repo:
            return f"Hugging Face hub {self.hub_repo}" + (" (gated: accept its licence and `hf auth login` first)"
                                                         if self.gated else "")
        return "built in"


def _taesd(name: str, description: str, *, decoder: bool, sha: dict[str, str] | None = None,
           hub_repo: str | None = None) -> KnownModel:
    parts = ("encoder", "decoder") if decoder else ("encoder",)
    local = tuple(f"taesd/{name}_{p}.pth" for p in parts)
    files = tuple(RemoteFile(rel, f"{_TAESD_RAW}/{Path(rel).name}", sha[rel]) for rel in local) if sha else ()
    return KnownModel(name, "encoder", description, "MIT (madebyollin/taesd)", local, files,
                      hub_repo=None if files else hub_repo, hub_files=("config.json", "*.safetensors"))


def _vae(name: str, description: str, repo: str, licence: str, gated: bool = False) -> KnownModel:
    return KnownModel(name, "encoder", description, licence, (f"{name}/vae/config.json", f"{name}/config.json"),
                      hub_repo=repo, hub_files=_VAE_FILES, folder=name, gated=gated)


def _pipeline(name: str, repo: str, licence: str) -> KnownModel:
    return KnownModel(f"{name}-pipeline", "generator", f"the {name} diffusion pipeline that makes --style/--anchor "
                      "targets (several GB)", licence, (f"{name}/model_index.json",), hub_repo=repo,
                      hub_files=_PIPELINE_FILES, folder=name)


MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        _taesd("taef2", "Tiny AutoEncoder for FLUX.2, the default encoder (+ decoder for previews)", decoder=True,
               sha={rel: f.sha256 for rel, f in BUILTIN_FILES.items() if rel.startswith("taesd/")}),
        _taesd("taesana", "Tiny encoder for Sana's DC-AE f32c32 latent space (no decoder)", decoder=False,
               sha={"taesd/taesana_encoder.pth": "858f4e4cc293f88efaf58107f4154b960b9ced0cb5d9c050dad11f926b618c1f"}),
        _taesd("taesd", "Tiny AutoEncoder for SD 1.x/2.x", decoder=True, hub_repo="madebyollin/taesd"),
        _taesd("taesdxl", "Tiny AutoEncoder for SDXL", decoder=True, hub_repo="madebyollin/taesdxl"),
        _taesd("taesd3", "Tiny AutoEncoder for SD3", decoder=True, hub_repo="madebyollin/taesd3"),
        _taesd("taef1", "Tiny AutoEncoder for FLUX.1", decoder=True, hub_repo="madebyollin/taef1"),
        _vae("sd15", "Stable Diffusion 1.x VAE", "stable-diffusion-v1-5/stable-diffusion-v1-5",
             "CreativeML OpenRAIL-M"),
        _vae("sd21", "Stable Diffusion 2.x VAE", "stabilityai/stable-diffusion-2-1", "CreativeML OpenRAIL++-M"),
        _vae("sdxl", "SDXL VAE", "stabilityai/stable-diffusion-xl-base-1.0", "CreativeML OpenRAIL++-M"),
        _vae("sd3", "Stable Diffusion 3 VAE", "stabilityai/stable-diffusion-3-medium-diffusers",
             "Stability AI Community Licence", gated=True),
        _vae("flux1", "FLUX.1 VAE", "black-forest-labs/FLUX.1-schnell", "Apache-2.0"),
        _vae("flux2", "FLUX.2 VAE", "black-forest-labs/FLUX.2-dev", "FLUX.2 [dev] Non-Commercial Licence",
             gated=True),
        KnownModel("lpips-alex", "lpips", "ImageNet AlexNet backbone of LPIPS 'alex', the default perceptual metric",
                   "BSD", ("lpips/alexnet_features.safetensors",)),
        KnownModel("lpips-vgg", "lpips", "ImageNet VGG16 backbone of LPIPS 'vgg' (--lpips-net vgg)",
                   "BSD-3-Clause (torchvision weights)", ("lpips/vgg16_features.safetensors",),
                   (RemoteFile("lpips/vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                               "397923af", 553433881, convert="vgg16-features",
                               convert_to="lpips/vgg16_features.safetensors"),)),
        _pipeline("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "CreativeML OpenRAIL-M"),
        _pipeline("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "CreativeML OpenRAIL++-M"),
        KnownModel("clip", "clip", "CLIP ViT-B/32: ranks anchor candidates and picks --style auto (optional)", "MIT",
                   ("clip/config.json",), hub_repo="openai/clip-vit-base-patch32",
                   hub_files=("config.json", "*.json", "*.txt", "model.safetensors"), folder="clip"),
    )
}
"""The known models by name (``fixative models list`` order)."""


@dataclass
class Location:
    """Where a model was found: ``path`` (its main file or folder), ``origin`` (the search place), and
    the files with their sizes in bytes and SHA-256 (None where not computed)."""

    path: Path
    origin: str
    files: list[tuple[Path, int, str | None]]

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def _hub_cached(repo: str, patterns: tuple[str, ...], cache_dir: Path | None) -> Location | None:
    """The repo's snapshot in the Hugging Face cache when its first config is there (no network)."""
    from fnmatch import fnmatch

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency
        return None
    first = next((p for p in patterns if "*" not in p), "config.json")
    hit = try_to_load_from_cache(repo, first, cache_dir=str(cache_dir) if cache_dir else None)
    if not isinstance(hit, str):
        return None
    snapshot = Path(hit).parents[len(Path(first).parts) - 1]
    files = []
    for f in sorted(snapshot.rglob("*")):
        rel = f.relative_to(snapshot).as_posix()
        if f.is_file() and any(fnmatch(rel, p) for p in patterns):
            blob = f.resolve()
            # the cache names LFS blobs by their SHA-256
            digest = blob.name if len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name) else None
            files.append((f, blob.stat().st_size, digest))
    return Location(snapshot, f"Hugging Face cache ({repo})", files)


def locate(model: KnownModel, store, *, digests: bool = True) -> Location | None:
    """Where ``model`` is found by ``store`` (a :class:`~fixative.models.store.ModelStore`), or None; never downloads.

    ``digests``: compute the SHA-256 of local files (the built-in ones are pinned and verified).
    """
    from fixative.files.hashing import cached_sha256

    for place in store.places():
        main = place.path / model.local[0]
        hit = next((place.path / rel for rel in model.local if store._usable(place, place.path / rel)), None)
        if hit is None:
            continue
        names = [place.path / rel for rel in model.local if (place.path / rel).is_file()] if model.files or \
            model.kind == "lpips" or model.builtin else []
        if not names:  # a folder model: every weight file under its folder
            root = place.path / (model.folder or model.local[0].split("/")[0])
            names = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
        files = [(p, p.stat().st_size, cached_sha256(p) if digests else None) for p in names]
        return Location(main if main.exists() else hit, place.origin, files)
    if model.hub_repo:
        return _hub_cached(model.hub_repo, model.hub_files, store.hub_cache)
    return None
