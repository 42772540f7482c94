"""How visible a change is to a person: a differentiable human-vision model and a budget on it.

:class:`VisibilityModel` follows the LDR colour and feature pipelines of FLIP (Andersson et al.,
"FLIP: A Difference Evaluator for Alternating Images", HPG 2020), written here in torch with
separable filters so that it is cheap enough to run at every optimisation step:

- viewing distance: the contrast sensitivity functions of the achromatic, red-green and
  blue-yellow channels are spatial filters whose width is set by ``ppd``, the pixels per degree of
  visual angle (67 = a 0.7 m wide 4K monitor seen from 0.7 m, FLIP's default). Fine detail a
  viewer cannot resolve at that distance is filtered away before colours are compared;
- luminance adaptation: colours are compared in Hunt-adjusted CIELAB (lightness is a cube root of
  luminance, and chroma counts less in dark areas), with the HyAB distance, then FLIP's
  compressive remapping to [0, 1];
- edges and points: a change that creates, removes or moves an edge or a point (Gaussian
  derivative detectors 0.082 degrees wide) raises the error, as in FLIP;
- contrast masking (``masking`` > 0, beyond FLIP): a change is harder to see on a busy
  background, and so, for a budget taken from a JPEG (whose errors sit in texture), a change on a
  flat area or a gradient counts fully while one in texture counts less. The colour difference is
  divided by a threshold elevation ``(1 + (C / C0)^2) ** 0.35`` where ``C`` is the local contrast
  of the *original* (the standard deviation of its CSF-filtered lightness in a window of 0.33
  degrees, CIELAB L* units), ``C0 = 1 / masking`` (Legge-Foley style masking with exponent 0.7, as in JND models).
  ``masking = 0`` is exactly FLIP.

Per pixel the model gives an error in [0, 1]; the score of an image is its mean (FLIP's mean).
With ``masking = 0`` this agrees with NVIDIA's ``flip-evaluator`` package (see
``tests/test_visibility.py`` and ``benchmarks/visibility.py`` for the measured agreement).

At a reduced resolution, scale ``ppd`` with the image (:meth:`VisibilityModel.at_scale`): a copy at
half the size seen at 67/2 pixels per degree covers the same visual angle, so its score is a proxy
for the full-size score.

:class:`VisibilityBudget` is the constraint ``score(x + d, x) <= budget`` with the interface of
:class:`fixative.core.constraints.LpipsBudget` (``value``, ``measure``, ``scale_back``).
:func:`jpeg_reference` makes the JPEG of an image that an intensity preset measures the budget
against ("no more visible than saving it as JPEG at quality 75").
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fixative.core.constraints import MeasuredBudget, quantize

#: FLIP's default observer: a 0.7 m wide 4K monitor seen from 0.7 m
DEFAULT_PPD = 0.7 * 3840 / 0.7 * math.pi / 180
#: FLIP's constants (colour exponent, feature exponent, colour remapping knee and its target value)
QC, QF, PC, PT = 0.7, 0.5, 0.4, 0.95
#: width of FLIP's edge/point detectors, degrees (peak to trough)
FEATURE_WIDTH = 0.082
#: window of the local contrast that masks a change, degrees (standard deviation of the Gaussian)
MASK_WINDOW = 0.33
#: exponent of the masking threshold elevation (Legge & Foley 1980: about 0.6-0.7)
MASK_EXPONENT = 0.7
#: the CSFs of FLIP: (a1, b1, a2, b2) of a1*sqrt(pi/b1)*exp(-pi^2 r^2/b1) + a2*sqrt(pi/b2)*exp(-pi^2 r^2/b2)
_CSF = {"A": (1.0, 0.0047, 0.0, 1e-5), "RG": (1.0, 0.0053, 0.0, 1e-5), "BY": (34.1, 0.04, 13.5, 0.025)}
_EPS = 1e-12

# sRGB (D65) <-> XYZ, and the D65 white
_RGB2XYZ = torch.tensor([[10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794],
                         [2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897],
                         [1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382]], dtype=torch.float64)
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_WHITE = torch.tensor([0.950428545, 1.0, 1.088900371], dtype=torch.float64)


def _mix(image: Tensor, matrix: Tensor) -> Tensor:
    """Per-pixel 3x3 colour matrix on an Nx3xHxW image."""
    return torch.einsum("ij,njhw->nihw", matrix.to(image), image)


def _linear(srgb: Tensor) -> Tensor:
    return torch.where(srgb > 0.04045, ((srgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, srgb / 12.92)


def _ycxcz(srgb: Tensor) -> Tensor:
    """sRGB in [0,1] -> YCxCz (the linear opponent space FLIP filters in)."""
    xyz = _mix(_linear(srgb), _RGB2XYZ) / _WHITE.to(srgb).view(1, 3, 1, 1)
    x, y, z = xyz.unbind(1)
    return torch.stack((116 * y - 16, 500 * (x - y), 200 * (y - z)), 1)


def _ycxcz_to_linear(ycc: Tensor) -> Tensor:
    y = (ycc[:, 0] + 16) / 116
    xyz = torch.stack((y + ycc[:, 1] / 500, y, y - ycc[:, 2] / 200), 1) * _WHITE.to(ycc).view(1, 3, 1, 1)
    return _mix(xyz, _XYZ2RGB)


def _hunt_lab(linear: Tensor) -> Tensor:
    """Linear RGB -> Hunt-adjusted CIELAB (a*, b* scaled by L*/100)."""
    xyz = _mix(linear, _RGB2XYZ) / _WHITE.to(linear).view(1, 3, 1, 1)
    d = 6 / 29
    f = torch.where(xyz > d**3, xyz.clamp(min=d**3) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    lum = 116 * f[:, 1] - 16
    a, b = 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])
    return torch.stack((lum, 0.01 * lum * a, 0.01 * lum * b), 1)


def _hyab(a: Tensor, b: Tensor) -> Tensor:
    """HyAB distance, Nx1xHxW (smoothed at zero so that its gradient is finite)."""
    d = a - b
    return torch.sqrt(d[:, :1] ** 2 + _EPS) + torch.sqrt((d[:, 1:] ** 2).sum(1, keepdim=True) + _EPS)


def _cmax() -> float:
    green = _hunt_lab(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1))
    blue = _hunt_lab(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1))
    d = green - blue
    return float((d[:, 0].abs() + d[:, 1:].norm(dim=1)) ** QC)


_CMAX = _cmax()


def _redistribute(power_hyab: Tensor) -> Tensor:
    knee = PC * _CMAX
    return torch.where(power_hyab < knee, (PT / knee) * power_hyab,
                       PT + (power_hyab - knee) / (_CMAX - knee) * (1 - PT))


def _sep_conv(image: Tensor, kx: Tensor, ky: Tensor) -> Tensor:
    """Separable 2D filtering of every channel (kx along the width, ky along the height), replicate
    padding as FLIP does."""
    c = image.shape[1]
    rx, ry = kx.numel() // 2, ky.numel() // 2
    out = F.pad(image, (rx, rx, ry, ry), mode="replicate")
    out = F.conv2d(out, kx.to(image).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, ky.to(image).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class _Filters:
    """1D factors of FLIP's 2D kernels at one ppd (float64 on the CPU; moved and cast when used)."""

    csf: dict[str, list[tuple[Tensor, float]]]  # channel -> [(1D gaussian, weight)], summed
    edge: tuple[Tensor, Tensor]  # (derivative factor, smoothing factor)
    point: tuple[Tensor, Tensor]
    mask: Tensor  # 1D gaussian of the masking window (normalised)


def _filters(ppd: float) -> _Filters:
    biggest = max(max(b1, b2) for _, b1, _, b2 in _CSF.values())
    r = int(math.ceil(3 * math.sqrt(biggest / (2 * math.pi**2)) * ppd))
    x = torch.arange(-r, r + 1, dtype=torch.float64) / ppd
    csf = {}
    for name, (a1, b1, a2, b2) in _CSF.items():
        terms = []
        for a, b in ((a1, b1), (a2, b2)):
            if a == 0:
                continue
            g = torch.exp(-math.pi**2 * x**2 / b)  # the 2D gaussian is g(x) g(y), times a*sqrt(pi/b)
            terms.append((g, a * math.sqrt(math.pi / b)))
        total = sum(w * float(g.sum()) ** 2 for g, w in terms)  # the 2D kernel sums to 1
        csf[name] = [(g, w / total) for g, w in terms]
    sd = 0.5 * FEATURE_WIDTH * ppd
    rf = int(math.ceil(3 * sd))
    t = torch.arange(-rf, rf + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sd * sd))

    def normalised(factor: Tensor) -> tuple[Tensor, Tensor]:
        # FLIP normalises the 2D kernel's positive weights to sum 1 and its negative ones to -1; the sign
        # depends on x only, so the 2D kernel stays separable: f~(x) * g(y)
        gy = float(g.sum())
        pos, neg = float(factor[factor > 0].sum()) * gy, -float(factor[factor < 0].sum()) * gy
        return torch.where(factor > 0, factor / pos, factor / neg), g.clone()

    edge = normalised(-t * g)
    point = normalised((t**2 / (sd * sd) - 1) * g)
    sm = max(MASK_WINDOW * ppd, 0.5)
    rm = int(math.ceil(3 * sm))
    tm = torch.arange(-rm, rm + 1, dtype=torch.float64)
    m = torch.exp(-(tm**2) / (2 * sm * sm))
    return _Filters(csf, edge, point, m / m.sum())


@dataclass
class VisibilityReference:
    """What the model needs of the unchanging original, computed once (Nx?xHxW float32 tensors)."""

    lab: Tensor  # CSF-filtered Hunt-adjusted CIELAB
    edges: Tensor  # |edge response| of its normalised lightness
    points: Tensor  # |point response|
    elevations: list[Tensor]  # masking threshold elevation per masking strength (>= 1; ones without masking)
    shape: torch.Size


class VisibilityModel(nn.Module):
    """Per-pixel visibility of the difference between two sRGB images in [0,1] (FLIP plus masking).

    - ``ppd``: pixels per degree of visual angle of the viewer (> 0; 67 = FLIP's default desk viewing
      of a 4K monitor; smaller = seen from closer or enlarged).
    - ``masking``: strength of contrast masking, 1/C0 with C0 in CIELAB L* units (>= 0; 0 = exactly
      FLIP, 0.1 = a change on a background of local contrast 10 L* counts ~1.6x less); a tuple gives
      several strengths scored in one pass (:meth:`scores`; :meth:`distance_to` is the first one's).

    Always computes in float32 (also under autocast): FLIP's powers and colour transforms are not
    safe in bf16.
    """

    def __init__(self, ppd: float = DEFAULT_PPD, masking: float | tuple[float, ...] = 0.0):
        super().__init__()
        if not (math.isfinite(ppd) and ppd > 0):
            raise ValueError(f"pixels per degree must be a positive number, got {ppd}")
        maskings = tuple(masking) if isinstance(masking, tuple | list) else (masking,)
        if not maskings or not all(math.isfinite(m) and m >= 0 for m in maskings):
            raise ValueError(f"the masking strength must be 0 or more, got {masking}")
        self.ppd = float(ppd)
        self.maskings = tuple(float(m) for m in maskings)
        self._f = _filters(self.ppd)

    def at_scale(self, factor: float) -> VisibilityModel:
        """The same viewer for a copy of the image resized by ``factor`` (0.5 = half the size)."""
        return VisibilityModel(self.ppd * factor, self.maskings)

    def extra_repr(self) -> str:
        return f"ppd={self.ppd:.1f}, masking={self.maskings}"

    # -- the two pipelines --------------------------------------------------------------------------
    def _filtered_lab(self, ycc: Tensor) -> Tensor:
        chans = []
        for i, name in enumerate(("A", "RG", "BY")):
            plane = ycc[:, i : i + 1]
            chans.append(sum(w * _sep_conv(plane, g, g) for g, w in self._f.csf[name]))
        return _hunt_lab(_ycxcz_to_linear(torch.cat(chans, 1)).clamp(0, 1))

    def _features(self, ycc: Tensor) -> tuple[Tensor, Tensor]:
        y = (ycc[:, :1] + 16) / 116
        out = []
        for fx, fy in (self._f.edge, self._f.point):
            gx = _sep_conv(y, fx, fy)
            gy = _sep_conv(y, fy, fx)
            out.append(torch.sqrt(gx**2 + gy**2 + _EPS))
        return out[0], out[1]

    def _elevations(self, lab: Tensor) -> list[Tensor]:
        lum = lab[:, :1]
        mean = _sep_conv(lum, self._f.mask, self._f.mask)
        var = (_sep_conv(lum**2, self._f.mask, self._f.mask) - mean**2).clamp(min=0)
        contrast = torch.sqrt(var + _EPS)
        return [torch.ones_like(lum) if m == 0 else (1 + (contrast * m) ** 2) ** (MASK_EXPONENT / 2)
                for m in self.maskings]

    def reference(self, source: Tensor) -> VisibilityReference:
        """Precompute the original's side (Nx3xHxW in [0,1]); no gradients."""
        with torch.no_grad(), _float32(source):
            ycc = _ycxcz(source.float().clamp(0, 1))
            lab = self._filtered_lab(ycc)
            edges, points = self._features(ycc)
            return VisibilityReference(lab, edges, points, self._elevations(lab), source.shape)

    def error_maps(self, candidate: Tensor, ref: VisibilityReference) -> list[Tensor]:
        """Per-pixel visibility in [0,1] of ``candidate`` against the reference, one Nx1xHxW map per masking
        strength (differentiable; the filtering is shared)."""
        if candidate.shape[-2:] != ref.shape[-2:]:
            raise ValueError(f"image size {tuple(candidate.shape[-2:])} differs from the original's "
                             f"{tuple(ref.shape[-2:])}")
        with _float32(candidate):
            ycc = _ycxcz(candidate.float().clamp(0, 1))
            hyab = _hyab(self._filtered_lab(ycc), ref.lab)
            edges, points = self._features(ycc)
            feat = torch.maximum((edges - ref.edges).abs(), (points - ref.points).abs())
            feat = (feat / math.sqrt(2) + _EPS) ** QF
            return [(_redistribute((hyab / e) ** QC) + _EPS) ** (1 - feat) for e in ref.elevations]

    def error_map(self, candidate: Tensor, ref: VisibilityReference) -> Tensor:
        """The first masking strength's per-pixel map (FLIP's error map when it is 0), Nx1xHxW."""
        return self.error_maps(candidate, ref)[0]

    def scores(self, candidate: Tensor, ref: VisibilityReference) -> Tensor:
        """Mean visibility per masking strength and image, shape [K, N], differentiable."""
        return torch.stack([m.mean(dim=(1, 2, 3)) for m in self.error_maps(candidate, ref)])

    def distance_to(self, candidate: Tensor, ref: VisibilityReference) -> Tensor:
        """Mean visibility per image under the first masking strength, shape [N], differentiable (FLIP's mean
        error when it is 0)."""
        return self.scores(candidate, ref)[0]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean visibility of ``a`` against the original ``b``, shape [N]."""
        return self.distance_to(a, self.reference(b))


class ViewingModel(nn.Module):
    """Visibility under several viewings of the same image at once: the largest weighted score.

    ``models`` are :class:`VisibilityModel` s (e.g. the same viewer at 100 % and at 200 % zoom, i.e.
    ``ppd`` and ``ppd / 2``, each scoring one or more masking strengths); ``weights`` scale each score
    (one per model and masking strength, in that order; see :meth:`normalised`, which makes a reference
    image score the same under every term, so that a budget taken from it holds under each). Same methods
    as :class:`VisibilityModel`.
    """

    def __init__(self, models: list[VisibilityModel], weights: list[float] | None = None):
        super().__init__()
        if not models:
            raise ValueError("a viewing model needs at least one visibility model")
        self.models = list(models)
        terms = sum(len(m.maskings) for m in self.models)
        self.weights = [1.0] * terms if weights is None else [float(w) for w in weights]
        if len(self.weights) != terms or not all(w > 0 for w in self.weights):
            raise ValueError(f"one positive weight per model and masking strength is needed, got {weights}")

    @classmethod
    def zoomed(cls, ppd: float = DEFAULT_PPD, zooms: tuple[float, ...] = (1.0,),
               masking: float | tuple[float, ...] = 0.0) -> ViewingModel:
        """The viewer at ``ppd`` looking at the image at each zoom (2.0 = 200 %: ``ppd / 2``)."""
        if not zooms or not all(math.isfinite(z) and z > 0 for z in zooms):
            raise ValueError(f"zooms must be positive numbers, got {zooms}")
        return cls([VisibilityModel(ppd / z, masking) for z in zooms])

    def at_scale(self, factor: float) -> ViewingModel:
        return ViewingModel([m.at_scale(factor) for m in self.models], self.weights)

    @torch.no_grad()
    def normalised(self, reference: Tensor, source: Tensor) -> ViewingModel:
        """Weights making ``reference`` (e.g. the source's JPEG) score under every term what it scores under
        the first (the first model's first masking); the smallest over a batch of images is used per term."""
        scores = torch.cat([m.scores(reference, m.reference(source)).amin(1) for m in self.models]).tolist()
        return ViewingModel(self.models, [scores[0] / max(s, 1e-6) for s in scores])

    def reference(self, source: Tensor) -> list[VisibilityReference]:
        return [m.reference(source) for m in self.models]

    def distance_to(self, candidate: Tensor, ref: list[VisibilityReference]) -> Tensor:
        scores = torch.cat([m.scores(candidate, r) for m, r in zip(self.models, ref, strict=True)])
        weights = torch.tensor(self.weights, device=scores.device, dtype=scores.dtype).view(-1, 1)
        return (scores * weights).amax(0)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.distance_to(a, self.reference(b))


class _float32:
    """Autocast off (the model runs in float32 even inside the search's bf16 autocast)."""

    def __init__(self, like: Tensor):
        self.ctx = torch.autocast(device_type=like.device.type, enabled=False)

    def __enter__(self):
        return self.ctx.__enter__()

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


class VisibilityBudget(MeasuredBudget):
    """score(x + d, x) <= budget under a :class:`VisibilityModel` (or :class:`ViewingModel`), against a fixed
    original; the interface of :class:`fixative.core.constraints.LpipsBudget`. ``budget`` is a mean visibility in
    (0, 1) (FLIP units when the model's masking is 0); the score grows about linearly with a change's scale.
    """

    growth = 1.0
    name = "the visibility budget"

    def __init__(self, model: VisibilityModel | ViewingModel, source: Tensor, budget: float):
        super().__init__(model, source, budget)
        self.model = model


def jpeg_reference(image: Tensor, quality: int) -> Tensor:
    """``image`` (Nx3xHxW in [0,1]) saved as baseline JPEG at ``quality`` (1-100, PIL/libjpeg, 4:2:0
    chroma as PIL's default) and decoded again: what "as visible as a JPEG at quality Q" compares with."""
    from PIL import Image  # Pillow is light, but keep the import where it is used

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be between 1 and 100, got {quality}")
    out = []
    for one in image.detach().float().cpu():
        pixels = (quantize(one).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=int(quality))
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(back.copy()).permute(2, 0, 1))
    return torch.stack(out).to(image.device)


def flip_of_file(source: Tensor, candidate: Tensor, ppd: float = DEFAULT_PPD) -> float:
    """FLIP by NVIDIA's own ``flip-evaluator`` package (the independent check), 1x3xHxW in [0,1]."""
    import flip_evaluator

    def hwc(t: Tensor) -> np.ndarray:
        return np.ascontiguousarray(t[0].detach().float().cpu().permute(1, 2, 0).numpy())

    _, mean, _ = flip_evaluator.evaluate(hwc(source), hwc(candidate), "LDR", applyMagma=False,
                                         parameters={"ppd": float(ppd)})
    return float(mean)
