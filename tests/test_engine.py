"""The engine's logic on tiny random models: budget, size, alpha, determinism, tiles, ensemble, errors."""

import numpy as np
import pytest
import torch

from fixative.core.constraints import LinfCap, LpipsBudget, quantize
from fixative.core.engine import Protector
from fixative.core.objectives import AwayFromSource, TowardsTarget
from fixative.core.optimizer import METHODS, OptimizerSettings
from fixative.errors import ConfigError

from tiny import TinyEncoder, smooth_image, tiny_perceptual


@pytest.fixture(scope="module")
def perceptual():
    return tiny_perceptual()


@pytest.fixture(scope="module")
def protector(perceptual):
    return Protector([TinyEncoder(0)], perceptual, "cpu")


def _fast(**kw):
    kw.setdefault("steps", 12)
    kw.setdefault("precision", "fp32")
    return OptimizerSettings(**kw)


@pytest.mark.parametrize("method", METHODS)
def test_budget_held_and_target_approached(protector, perceptual, method):
    x, t = smooth_image(48, 64, 0), smooth_image(48, 64, 1)
    budget = 0.02
    result = protector.protect(x, t, budget=budget, settings=_fast(method=method, steps=20))
    out = result.image
    # independent re-measurement of what would be saved: 8-bit levels, LPIPS in fp32
    assert torch.equal(out, quantize(out))
    assert float(perceptual.distance(out, x)) <= budget + 1e-6
    assert result.metrics.lpips <= budget
    assert result.metrics.mean_ratio < 1.0
    assert set(result.metrics.ratio) == {"tiny0"}


def test_every_method_has_a_step_class():
    from fixative.core.steps import METHOD_STEPS, MethodStep

    assert set(METHOD_STEPS) == set(METHODS) and all(issubclass(c, MethodStep) for c in METHOD_STEPS.values())


def test_fixative_beats_pgd_on_equal_steps(protector):
    x, t = smooth_image(48, 48, 2), smooth_image(48, 48, 3)
    ours = protector.protect(x, t, budget=0.02, settings=_fast(method="fixative", steps=25))
    pgd = protector.protect(x, t, budget=0.02, settings=_fast(method="pgd", steps=25))
    assert ours.metrics.mean_ratio < pgd.metrics.mean_ratio


def test_odd_size_kept(protector):
    x, t = smooth_image(37, 53, 0), smooth_image(37, 53, 1)
    result = protector.protect(x, t, budget=0.05, settings=_fast())
    assert result.image.shape == (1, 3, 37, 53)


def test_alpha_passes_through_untouched(protector):
    x, t = smooth_image(32, 40, 0), smooth_image(32, 40, 1)
    alpha = np.random.default_rng(0).integers(0, 256, size=(32, 40), dtype=np.uint8)
    result = protector.protect(x, t, budget=0.05, settings=_fast(), alpha=alpha.copy())
    assert result.alpha.dtype == np.uint8 and np.array_equal(result.alpha, alpha)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_same_seed_same_output(perceptual, precision):
    x, t = smooth_image(40, 40, 4), smooth_image(40, 40, 5)
    runs = [Protector([TinyEncoder(0)], perceptual).protect(x, t, budget=0.03,
                                                            settings=_fast(seed=7, precision=precision))
            for _ in range(2)]
    other = Protector([TinyEncoder(0)], perceptual).protect(x, t, budget=0.03,
                                                            settings=_fast(seed=8, precision=precision))
    assert torch.equal(runs[0].image, runs[1].image)
    assert not torch.equal(runs[0].image, other.image)


def test_tiled_protection_holds_budget_and_size(protector, perceptual):
    h, w = 96, 176
    x, t = smooth_image(h, w, 6), smooth_image(h, w, 7)
    budget = 0.05
    result = protector.protect(x, t, budget=budget, settings=_fast(steps=15), tile_size=64, tile_overlap=24)
    assert result.metrics.tiles > 2
    assert result.image.shape == x.shape
    assert float(perceptual.distance(result.image, x)) <= budget + 1e-6
    assert result.metrics.mean_ratio < 1.0
    # every tile got a perturbation (none left at zero by the blend)
    from fixative.core.tiling import plan_tiles

    for tile in plan_tiles(h, w, 64, 24, protector.align):
        assert float(tile.crop(result.image - x).abs().mean()) > 0


def test_ensemble_terms_are_normalised():
    x, t = smooth_image(32, 32, 0), smooth_image(32, 32, 1)
    small, huge = TinyEncoder(1, scale=1.0), TinyEncoder(2, scale=1000.0)
    obj = TowardsTarget()
    obj.prepare([small, huge], x, t)
    with torch.no_grad():
        start = obj.loss([small(x), huge(x)])
        # moving only the huge-scale encoder's latent to the target halves the loss, not ~all of it
        half = obj.loss([small(x), huge(t)])
    assert float(start) == pytest.approx(1.0, rel=1e-5)
    assert float(half) == pytest.approx(0.5, rel=1e-5)


def test_away_objective_moves_latent(protector):
    x = smooth_image(40, 40, 3)
    result = protector.protect(x, objective="away", budget=0.05, settings=_fast())
    assert result.metrics.distance_after["tiny0"] > 0
    assert result.metrics.ratio is None
    obj = AwayFromSource()
    obj.prepare([TinyEncoder(0)], x, None)
    assert obj.baselines() == [0.0]


def test_linf_cap_respected(protector):
    x, t = smooth_image(40, 40, 0), smooth_image(40, 40, 1)
    result = protector.protect(x, t, budget=0.2, settings=_fast(linf=4 / 255))
    assert result.metrics.linf <= 4 / 255 + 1 / 255 / 2 + 1e-6  # + half a level of rounding
    assert torch.equal(LinfCap(0.1).project(torch.tensor([0.5, -0.5])), torch.tensor([0.1, -0.1]))


def test_cancel_keeps_budget(protector):
    x, t = smooth_image(40, 40, 0), smooth_image(40, 40, 1)
    seen = []
    result = protector.protect(x, t, budget=0.03, settings=_fast(steps=50),
                               callback=lambda info: seen.append(info.step) or info.step < 3)
    assert result.metrics.stopped == "cancelled"
    assert seen == [1, 2, 3]
    assert result.metrics.lpips <= 0.03


def test_early_stop_when_nothing_improves(protector):
    x, t = smooth_image(32, 32, 0), smooth_image(32, 32, 1)
    result = protector.protect(x, t, budget=0.05, settings=_fast(steps=200, lr=1e-9, patience=4))
    assert result.metrics.stopped == "early-stop"
    assert result.metrics.steps < 20


def test_time_limit_stops_search(protector):
    x, t = smooth_image(64, 64, 0), smooth_image(64, 64, 1)
    result = protector.protect(x, t, budget=0.05, settings=_fast(steps=100000, seconds=1.0))
    assert result.metrics.stopped == "seconds"
    assert result.metrics.seconds < 5


def test_scale_back_guarantees_budget(perceptual):
    x = smooth_image(40, 40, 0)
    b = LpipsBudget(perceptual, x, 0.01)
    delta = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    d, lp, scale = b.scale_back(delta, levels=255)
    assert 0 < scale < 1
    assert lp <= 0.01
    assert float(perceptual.distance(quantize(x + d), x)) <= 0.01


@pytest.mark.parametrize("kwargs,match", [
    ({"budget": 0}, "budget"),
    ({"budget": 1.5}, "budget"),
    ({"objective": "sideways"}, "objective"),
])
def test_clear_errors(protector, kwargs, match):
    x, t = smooth_image(32, 32), smooth_image(32, 32, 1)
    with pytest.raises(ConfigError, match=match):
        protector.protect(x, t, settings=_fast(), **kwargs)


def test_wrong_target_size_and_bad_settings(protector):
    with pytest.raises(ConfigError, match="target size"):
        protector.protect(smooth_image(32, 32), smooth_image(32, 48), settings=_fast())
    with pytest.raises(ConfigError, match="needs a target"):
        protector.protect(smooth_image(32, 32), None, settings=_fast())
    with pytest.raises(ConfigError, match="unknown method"):
        OptimizerSettings(method="magic")
    with pytest.raises(ConfigError, match="at least one encoder"):
        Protector([], tiny_perceptual())


def test_check_encoder_measured_not_crafted(perceptual):
    x, t = smooth_image(40, 40, 0), smooth_image(40, 40, 1)
    protector = Protector([TinyEncoder(0)], perceptual, check_encoders=[TinyEncoder(3), TinyEncoder(0)])
    assert [e.name for e in protector.check_encoders] == ["tiny3"]  # a crafting encoder is not re-checked
    result = protector.protect(x, t, budget=0.05, settings=_fast())
    m = result.metrics
    assert m.encoders == ["tiny0"] and m.checked == ["tiny3"]
    assert set(m.ratio) == {"tiny0", "tiny3"}
    assert m.mean_ratio == pytest.approx(m.ratio["tiny0"])


def test_batched_tiles_match_one_at_a_time(protector, perceptual):
    """Tiles searched together in one batch (as on a GPU) give the result of searching them one by one."""
    h, w = 96, 176
    x, t = smooth_image(h, w, 6), smooth_image(h, w, 7)
    kw = dict(budget=0.05, settings=_fast(steps=10, patience=0), tile_size=64, tile_overlap=24)
    seen = []
    alone = protector.protect(x, t, tile_batch=1, **kw)
    together = protector.protect(x, t, tile_batch=3, callback=seen.append, **kw)
    assert alone.metrics.tiles == together.metrics.tiles > 3
    assert together.settings["tile_batch"] == 3 and alone.settings["tile_batch"] == 1
    # the same per-tile problems: equal up to float summation order in batched convolutions
    assert float((alone.image - together.image).abs().max()) <= 2 / 255
    assert together.metrics.mean_ratio == pytest.approx(alone.metrics.mean_ratio, abs=0.02)
    assert float(perceptual.distance(together.image, x)) <= 0.05 + 1e-6
    # progress covers every tile once, in batches of up to 3, and ends at 1
    assert {(i.tile, i.group) for i in seen} == {(1, 3), (4, 3)} | ({(7, together.metrics.tiles - 6)}
                                                                    if together.metrics.tiles > 6 else set())
    assert seen[-1].overall == pytest.approx(1.0)


def test_one_over_budget_tile_does_not_shrink_the_others(perceptual):
    """Per-image projection in a batch: only the image that left the budget is scaled back."""
    from fixative.core.optimizer import _Search

    x = torch.cat([smooth_image(32, 32, 0), smooth_image(32, 32, 1)])
    budget = LpipsBudget(perceptual, x, 0.05)
    run = _Search(x, [TinyEncoder(0)], TowardsTarget(), budget, _fast(), None)
    delta = torch.zeros_like(x)
    delta[0] = 0.3 * torch.randn(x[0].shape, generator=torch.Generator().manual_seed(0))
    delta[1] = 0.002
    before = delta.clone()
    scale = run.shrink_to(delta, 0.04)
    assert float(scale[0]) < 1 and float(scale[1]) == 1.0
    assert torch.equal(delta[1], before[1])
    assert float(run.measure(delta)[0]) <= 0.04


def test_tile_batch_sized_to_free_memory():
    from fixative.core.engine import tile_batch_size

    gib = 2**30
    assert tile_batch_size(10 * gib, 1 * gib, 24) == 7  # 70 % of the free memory
    assert tile_batch_size(10 * gib, 1 * gib, 3) == 3  # never more than the tiles
    assert tile_batch_size(1 * gib, 4 * gib, 24) == 1  # at least one
    with pytest.raises(ConfigError, match="tile_batch"):
        Protector([TinyEncoder(0)], tiny_perceptual()).protect(
            smooth_image(96, 96), smooth_image(96, 96, 1), settings=_fast(), tile_size=64, tile_overlap=16,
            tile_batch=0)


def test_measure_a_saved_image_like_the_engine(protector):
    """Protector.measure of the engine's own output gives the engine's figures (the JPEG re-check uses it)."""
    x, t = smooth_image(48, 64, 0), smooth_image(48, 64, 1)
    result = protector.protect(x, t, budget=0.05, settings=_fast())
    again = protector.measure(x, result.image, t)
    assert again.stopped == "measured" and again.steps == 0
    assert again.lpips == pytest.approx(result.metrics.lpips, abs=1e-5)
    assert again.ratio == pytest.approx(result.metrics.ratio)
    assert protector.measure(x, x, t).mean_ratio == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="needs a target"):
        protector.measure(x, result.image)
