"""Tile windows and blending (core/tiles.py): the MAP grid, the sliding windows, the two ramps, the canvas."""
import pytest
import torch

from iqa_map.core.tiles import Canvas, Grid, cosine_ramp, linear_ramp, starts


def _img(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


@pytest.mark.parametrize("h,w,tile,overlap,align", [(100, 120, 64, 16, 1), (192, 192, 64, 32, 1),
                                                    (3000, 4000, 768, 64, 1), (3000, 4001, 768, 64, 8),
                                                    (769, 300, 768, 64, 8), (64, 65, 64, 0, 1), (321, 481, 192, 48, 8)])
def test_grid_covers_the_image_with_the_overlap_and_no_spare_tile(h, w, tile, overlap, align):
    g = Grid(h, w, tile, overlap, align)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for y, x, th, tw in g.boxes():
        assert 0 <= y and y + th <= h and 0 <= x and x + tw <= w and y % align == x % align == 0
        assert th > min(tile, h) - align and tw > min(tile, w) - align  # cut short by less than align, if at all
        covered[y:y + th, x:x + tw] += 1
    assert int(covered.min()) >= 1
    for starts, size in ((g.rows, h), (g.cols, w)):
        if size > tile:
            assert all(tile - (b - a) >= overlap for a, b in zip(starts, starts[1:]))
            # one tile fewer could not cover the side with that overlap
            assert (len(starts) - 1) * (tile - overlap) + overlap < size + align - 1


def test_blend_of_crops_is_the_image_and_fades_between_differing_tiles():
    g = Grid(100, 120, 64, 16)
    x = _img(100, 120)
    crops = [x[..., y:y + th, xx:xx + tw] for y, xx, th, tw in g.boxes()]
    assert torch.allclose(g.blend(crops), x, atol=1e-6)
    # tiles of two constant levels: the result stays between them and changes by small steps only
    flat = [torch.full((1, 3, 64, 64), 0.2 if k % 2 else 0.8) for k in range(len(g))]
    out = g.blend(flat)
    assert float(out.min()) >= 0.2 - 1e-6 and float(out.max()) <= 0.8 + 1e-6
    hard = torch.zeros(1, 3, 100, 120)
    for (y, xx, th, tw), t in zip(g.boxes(), flat):
        hard[..., y:y + th, xx:xx + tw] = t  # later tiles pasted over earlier ones: a cut at each tile edge
    step = lambda im: float((im[..., 1:] - im[..., :-1]).abs().max())  # noqa: E731
    assert step(hard) == pytest.approx(0.6) and step(out) < 0.1


@pytest.mark.parametrize("size,tile,stride", [(10, 10, 3), (9, 10, 3), (100, 32, 8), (100, 32, 17), (65, 64, 1)])
def test_sliding_windows_step_by_stride_and_end_flush(size, tile, stride):
    s = starts(size, tile, stride)
    assert s[0] == 0 and s[-1] == max(size - tile, 0) and s == sorted(set(s))
    assert all(0 < b - a <= stride for a, b in zip(s, s[1:]))
    covered = torch.zeros(size)
    for a in s:
        covered[a:a + tile] += 1
    assert int(covered.min()) >= 1


def test_ramps_sum_to_one_over_an_overlap_and_keep_the_border():
    up, down = cosine_ramp(32, 8, True, False), cosine_ramp(32, 8, False, True)
    assert up[0] == 1 and down[-1] == 1 and torch.allclose(up[-8:] + down[:8], torch.ones(8, dtype=torch.float64))
    lin_a, lin_b = linear_ramp(32, 8, True, False), linear_ramp(32, 8, False, True)
    assert float(lin_b[0]) == float(lin_b[1]) == 0.0  # the outer quarter, where zero padding reaches, is unused
    assert torch.allclose(lin_a[-8:] + lin_b[:8], torch.ones(8))


def test_canvas_floor_only_guards_uncovered_pixels():
    c = Canvas(1, 1, 2, 3, torch.float32, "cpu")
    c.add(0, 0, torch.full((1, 1, 2, 2), 4.0), torch.full((1, 1, 2, 2), 0.5))
    out = c.result(floor=1e-8)
    assert out[..., :2].eq(4.0).all() and out[..., 2].eq(0.0).all()
    assert torch.isnan(c.result()[..., 2]).all()  # without a floor an uncovered pixel is 0/0
