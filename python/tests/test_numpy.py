"""NumPy arrays in and out, against the library's float64 reference."""
import numpy as np
import pytest

import nablacl
import nablacl.reference as ref
from conftest import TOL, ml_dtypes, to_storage, video_inputs

GRID = (2, 12, 20)           # ragged: 2 x 2 x 3 tiles, edge tiles of 4 x 8, 8 x 4, 4 x 4 tokens
SHAPE = (1, 2, 2 * 12 * 20, 64)


def assert_mask_matches(mask, q, k, algo, grid):
    bits, near = ref.mask(q, k, algo, grid)
    differs = (mask.bitmap != bits).any(-1)
    assert not (differs & (near == 0)).any(), "mask rows differ from float64 beyond rounding"
    return bits


@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "bf16ml"])
def test_attention_matches_float64(ctx, rng, kind):
    if kind == "bf16ml" and ml_dtypes is None:
        pytest.skip("ml_dtypes not installed")
    q, k, v = video_inputs(rng, SHAPE, GRID, kind)
    out = nablacl.attention(q, k, v, "nabla-0.7", grid=GRID, context=ctx)
    assert out.dtype == q.dtype and out.shape == q.shape and isinstance(out, np.ndarray)
    m = nablacl.mask(q, k, "nabla-0.7", grid=GRID, context=ctx)
    bits = assert_mask_matches(m, q, k, "nabla-0.7", GRID)
    assert 0 < m.density < 1
    expect = ref.attention(q, k, v, m.bitmap, GRID)
    err = np.abs(ref.to_float64(out) - expect).max()
    assert err < TOL[kind], err
    # the float64 mask and the device mask agree here, so the reference output with it too
    assert (bits == m.bitmap).all()


@pytest.mark.parametrize("algo", ["dense", "sta-3-3-3", "nabla-0.4_sta-1-1-1", "nabla-0.9"])
def test_algorithms(ctx, rng, algo):
    q, k, v = video_inputs(rng, SHAPE, GRID, "f32")
    out = nablacl.attention(q, k, v, algo, grid=GRID, context=ctx)
    bits = None if algo == "dense" else assert_mask_matches(
        nablacl.mask(q, k, algo, grid=GRID, context=ctx), q, k, algo, GRID)
    assert np.abs(out - ref.attention(q, k, v, bits, GRID)).max() < TOL["f32"]


def test_raster_order_is_reorder_then_tile(ctx, rng):
    q, k, v = video_inputs(rng, SHAPE, GRID, "f16")
    raster = [ref.reorder(t, GRID, inverse=True).astype(np.float16) for t in (q, k, v)]
    out_raster = nablacl.attention(*raster, "nabla-0.7", grid=GRID, order="raster", context=ctx)
    out_tile = nablacl.attention(q, k, v, "nabla-0.7", grid=GRID, context=ctx)
    assert np.array_equal(nablacl.reorder(out_raster, GRID, context=ctx), out_tile)
    m = nablacl.mask(*raster[:2], "nabla-0.7", grid=GRID, order="raster", context=ctx)
    assert np.array_equal(m.bitmap, nablacl.mask(q, k, "nabla-0.7", grid=GRID, context=ctx).bitmap)


@pytest.mark.parametrize("kind", ["f32", "bf16"])
def test_reorder_round_trip(ctx, rng, kind):
    x = to_storage(rng.standard_normal(SHAPE).astype(np.float32), kind)
    tile = nablacl.reorder(x, GRID, context=ctx)
    assert np.array_equal(ref.to_float64(tile), ref.reorder(x, GRID))
    assert not np.array_equal(tile, x)
    assert np.array_equal(nablacl.reorder(tile, GRID, inverse=True, context=ctx), x)


def test_plain_sequence(ctx, rng):
    q, k, v = (to_storage(rng.standard_normal((2, 1, 300, 32)).astype(np.float32), "f32")
               for _ in range(3))
    m = nablacl.mask(q, k, "nabla-0.5", context=ctx)
    assert m.blocks == 5 and m.grid is None
    bits = assert_mask_matches(m, q, k, "nabla-0.5", None)
    out = nablacl.attention(q, k, v, mask=m, context=ctx)
    assert np.abs(out - ref.attention(q, k, v, m.bitmap, None)).max() < TOL["f32"]
    del bits


def test_mask_layouts_agree(ctx, rng):
    q, k, _ = video_inputs(rng, SHAPE, GRID, "f32")
    m = nablacl.mask(q, k, "nabla-0.6", grid=GRID, context=ctx)
    nb = m.blocks
    assert m.bitmap.shape == (1, 2, nb, nb) and m.kv_indices.shape == (1, 2, nb, nb)
    assert m.kept == int(m.bitmap.sum()) == len(m.col_idx) == int(m.row_ptr[-1])
    assert m.density == pytest.approx(m.kept / (2 * nb * nb))
    rows = m.bitmap.reshape(-1, nb)
    for r in range(rows.shape[0]):
        cols = m.col_idx[m.row_ptr[r]:m.row_ptr[r + 1]]
        assert np.array_equal(cols, np.flatnonzero(rows[r]))
        n = m.kv_num_blocks.reshape(-1)[r]
        assert n == len(cols)
        assert np.array_equal(m.kv_indices.reshape(-1, nb)[r, :n], cols)
        assert not m.kv_indices.reshape(-1, nb)[r, n:].any()
    starts = m.block_starts
    assert starts[0] == 0 and starts[-1] == SHAPE[2] and len(starts) == nb + 1


def flex_of(bitmap):
    """FlexAttention's layout of a block bitmap, made here from its rows (the oracle)."""
    b, h, nb, _ = bitmap.shape
    rows = bitmap.reshape(-1, nb) != 0
    idx = np.zeros((rows.shape[0], nb), np.int32)
    for r, row in enumerate(rows):
        cols = np.flatnonzero(row)
        idx[r, :len(cols)] = cols
    return rows.sum(1).astype(np.int32).reshape(b, h, nb), idx.reshape(b, h, nb, nb)


@pytest.mark.parametrize("algo", ["nabla-0.5", "sta-1-3-3", "nabla-0.3_sta-1-1-1", "dense"])
def test_flex_layout_is_the_csr_expanded(ctx, rng, algo):
    q, k, _ = video_inputs(rng, (2, 3, SHAPE[2], 32), GRID, "f32")
    m = nablacl.mask(q, k, algo, grid=GRID, context=ctx)
    num, idx = flex_of(m.bitmap)
    assert np.array_equal(m.kv_num_blocks, num) and np.array_equal(m.kv_indices, idx)
    assert np.array_equal(m.kv_num_blocks.reshape(-1), np.diff(m.row_ptr))


def test_flex_layout_of_adversarial_masks(ctx, rng):
    nb = 12
    bits = rng.random((2, 3, nb, nb)) < 0.3
    bits[0, 0] = False             # every row empty
    bits[0, 1] = True              # every row full
    bits[1, 0] = False
    bits[1, 0, :, -1] = True       # the last block alone
    bits[1, 1, ::2] = False        # every other row empty
    bits[1, 2, :, 0] = True        # the first block in every row
    m = nablacl.Mask.from_bitmap(bits, SHAPE[2], GRID, context=ctx)
    num, idx = flex_of(bits)
    assert np.array_equal(m.kv_num_blocks, num) and np.array_equal(m.kv_indices, idx)


def test_mask_from_bitmap_drives_attention(ctx, rng):
    q, k, v = video_inputs(rng, SHAPE, GRID, "f32")
    nb = 12
    bits = rng.random((1, 2, nb, nb)) < 0.3
    bits[..., np.arange(nb), np.arange(nb)] = True
    m = nablacl.Mask.from_bitmap(bits, SHAPE[2], GRID, context=ctx)
    assert np.array_equal(m.bitmap, bits.astype(np.uint8))
    out = nablacl.attention(q, k, v, mask=m, grid=GRID, context=ctx)
    assert np.abs(out - ref.attention(q, k, v, bits, GRID)).max() < TOL["f32"]
    m.release()
    with pytest.raises(nablacl.InvalidArgument, match="released"):
        nablacl.attention(q, k, v, mask=m, grid=GRID, context=ctx)


def test_out_argument_is_filled_in_place(ctx, rng):
    q, k, v = video_inputs(rng, SHAPE, GRID, "f32")
    out = np.zeros_like(q)
    got = nablacl.attention(q, k, v, "nabla-0.7", grid=GRID, out=out, context=ctx)
    assert got is out and np.abs(out).sum() > 0


def test_default_context_is_per_thread_and_lazy(rng):
    import threading

    q, k, v = video_inputs(rng, SHAPE, GRID, "f32")
    seen = {}

    def work(name):
        nablacl.attention(q, k, v, "nabla-0.7", grid=GRID)
        seen[name] = nablacl.default_context()

    t = threading.Thread(target=work, args=("thread",))
    t.start()
    t.join()
    work("main")
    assert seen["thread"] is not seen["main"]
    assert nablacl.default_context() is seen["main"]
