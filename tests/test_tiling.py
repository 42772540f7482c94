import pytest
import torch

from fixative.core.tiling import blend, plan_tiles, tile_weights


@pytest.mark.parametrize("h,w,tile,overlap,align", [(100, 100, 128, 16, 8), (300, 517, 128, 32, 8),
                                                     (1000, 260, 256, 64, 32), (129, 128, 128, 16, 8)])
def test_tiles_cover_and_weights_sum_to_one(h, w, tile, overlap, align):
    tiles = plan_tiles(h, w, tile, overlap, align)
    cover = torch.zeros(h, w)
    for t in tiles:
        assert t.height <= tile and t.width <= tile
        assert t.top % align == 0 or t.bottom == h
        assert t.left % align == 0 or t.right == w
        cover[t.top:t.bottom, t.left:t.right] += 1
    assert bool((cover >= 1).all())
    weights = tile_weights(tiles, h, w, torch.device("cpu"))
    total = blend([torch.ones(1, 1, t.height, t.width) for t in tiles], tiles, weights, torch.zeros(1, 1, h, w))
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_neighbouring_tiles_overlap_at_least_requested():
    tiles = plan_tiles(64, 500, 128, 40, 8)
    lefts = sorted({t.left for t in tiles})
    rights = sorted({t.right for t in tiles})
    for r, next_left in zip(rights, lefts[1:], strict=False):
        assert r - next_left >= 40


def test_small_image_is_one_tile():
    assert len(plan_tiles(37, 53, 1024, 128, 8)) == 1


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(500, 500, 64, 64, 8)


def test_blend_has_no_seams():
    """Tiles whose perturbations differ completely still blend into a smooth ramp, not a step."""
    h, w, overlap = 64, 400, 48
    tiles = plan_tiles(h, w, 128, overlap, 8)
    weights = tile_weights(tiles, h, w, torch.device("cpu"))
    parts = [torch.full((1, 1, t.height, t.width), float(i % 2)) for i, t in enumerate(tiles)]
    out = blend(parts, tiles, weights, torch.zeros(1, 1, h, w))[0, 0]
    jumps = (out[:, 1:] - out[:, :-1]).abs()
    # a hard cut would jump by 1.0 at each tile edge; the raised-cosine ramp spreads it out
    assert float(jumps.max()) < 3.2 / overlap
    assert float(out.min()) >= 0 and float(out.max()) <= 1
