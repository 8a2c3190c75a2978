"""mask_image: the library's picture of a mask, checked pixel by pixel against the bitmap."""
import numpy as np
import pytest

import nablacl
from conftest import video_inputs

KEPT, EMPTY, BAR, TRACK = (31, 78, 161), (255, 255, 255), (230, 120, 30), (225, 225, 225)


def expected_picture(bits2d, cell):
    nb = bits2d.shape[0]
    grid_px = nb * cell
    gap, bar = max(4, 2 * cell), max(32, grid_px // 4)
    img = np.empty((grid_px, grid_px + gap + bar, 3), np.uint8)
    img[:, :grid_px] = np.where(np.kron(bits2d, np.ones((cell, cell), np.uint8))[..., None] != 0,
                                KEPT, EMPTY)
    img[:, grid_px:grid_px + gap] = EMPTY
    for i in range(nb):
        kept = int(bits2d[i].sum())
        length = (kept * bar * 2 + nb) // (2 * nb)
        if kept and not length:
            length = 1
        rows = slice(i * cell, (i + 1) * cell)
        img[rows, grid_px + gap:] = TRACK
        img[rows, grid_px + gap:grid_px + gap + length] = BAR
    return img


@pytest.mark.parametrize("cell", [0, 1, 3])
def test_bitmap_picture_pixels(rng, cell):
    bits = (rng.random((2, 3, 10, 10)) < 0.3).astype(np.uint8)
    bits[1, 2, 4] = 0          # an empty row: no bar at all
    bits[1, 2, 5] = 1          # a full row: the whole bar
    img = nablacl.mask_image(bits, batch=1, head=2, cell=cell)
    used = cell or 8           # 512 // 10 > 8
    assert img.shape == (10 * used, 10 * used + max(4, 2 * used) + max(32, 10 * used // 4), 3)
    assert np.array_equal(img, expected_picture(bits[1, 2], used))


def test_mask_picture_is_the_bitmap_of_the_head(ctx, rng):
    grid = (2, 16, 24)
    q, k, _ = video_inputs(rng, (1, 2, 2 * 16 * 24, 64), grid, "f32")
    m = nablacl.mask(q, k, "nabla-0.5", grid=grid, context=ctx)
    img = nablacl.mask_image(m, head=1)
    assert np.array_equal(img, expected_picture(m.bitmap[0, 1], 8))
    assert np.array_equal(img, nablacl.mask_image(m.bitmap, head=1))


def test_picture_arguments_are_checked():
    bits = np.ones((1, 2, 4, 4), np.uint8)
    with pytest.raises(nablacl.InvalidArgument, match="head 2 is outside 0..1"):
        nablacl.mask_image(bits, head=2)
    with pytest.raises(nablacl.InvalidArgument, match="batch -1"):
        nablacl.mask_image(bits, batch=-1)
    with pytest.raises(nablacl.InvalidArgument, match="cell 65"):
        nablacl.mask_image(bits, cell=65)
    with pytest.raises(nablacl.InvalidArgument, match="bitmap"):
        nablacl.mask_image(np.ones((2, 4, 4), np.uint8))
