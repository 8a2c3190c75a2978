"""Bad arguments raise InvalidArgument naming the problem, before anything is enqueued (the
context's profiler records no kernel)."""
import numpy as np
import pytest

import nablacl
from conftest import video_inputs

GRID = (2, 8, 16)
SHAPE = (1, 2, 256, 32)


@pytest.fixture
def pctx():
    if not nablacl.devices():
        pytest.skip("no OpenCL device")
    c = nablacl.Context(profile=True)
    yield c
    assert c.profile_report() == {}, "a refused call enqueued work"
    c.close()


@pytest.fixture
def qkv(rng):
    return video_inputs(rng, SHAPE, GRID, "f32")


def test_wrong_dtype(pctx, qkv):
    q, k, v = qkv
    with pytest.raises(nablacl.InvalidArgument, match=r"q: dtype float64 is not supported"):
        nablacl.attention(q.astype(np.float64), k, v, grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match=r"v: dtype int32"):
        nablacl.attention(q, k, v.astype(np.int32), grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match=r"k: dtype float16 differs from q's float32"):
        nablacl.mask(q, k.astype(np.float16), grid=GRID, context=pctx)


def test_non_contiguous(pctx, qkv):
    q, k, v = qkv
    fortran = np.asfortranarray(k)
    with pytest.raises(nablacl.InvalidArgument, match=r"k: the array is not C-contiguous"):
        nablacl.attention(q, fortran, v, grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match=r"x: the array is not C-contiguous"):
        nablacl.reorder(q[..., ::2], GRID, context=pctx)


def test_shape_mismatch(pctx, qkv):
    q, k, v = qkv
    with pytest.raises(nablacl.InvalidArgument, match=r"v: shape \(1, 2, 128, 32\) differs"):
        nablacl.attention(q, k, np.ascontiguousarray(v[:, :, :128]), grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="expected 4 dimensions"):
        nablacl.attention(q[0], k[0], v[0], grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="grid"):
        nablacl.attention(q, k, v, grid=(2, 8, 8), context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="head_dim"):
        bad = np.zeros((1, 2, 256, 12), np.float32)
        nablacl.attention(bad, bad, bad, grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match=r"out: shape"):
        nablacl.attention(q, k, v, grid=GRID, out=np.empty((1, 2, 256, 16), np.float32), context=pctx)


def test_bad_algo_and_order(pctx, qkv):
    q, k, v = qkv
    with pytest.raises(nablacl.InvalidArgument, match="nabla-1.5"):
        nablacl.attention(q, k, v, "nabla-1.5", grid=GRID, context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="order"):
        nablacl.attention(q, k, v, grid=GRID, order="zigzag", context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="needs a video grid"):
        nablacl.attention(q, k, v, order="raster", context=pctx)
    with pytest.raises(nablacl.InvalidArgument, match="numpy.ndarray or a pyopencl"):
        nablacl.attention(q.tolist(), k, v, grid=GRID, context=pctx)


def test_mask_of_another_shape_is_refused(pctx, qkv):
    q, k, v = qkv
    m = nablacl.Mask.from_bitmap(np.ones((1, 2, 4, 4), np.uint8), 256, None, context=pctx)
    pctx.profile_report()  # the upload above is not a kernel, but clear anyway
    with pytest.raises(nablacl.InvalidArgument, match="mask: made for"):
        nablacl.attention(q, k, v, grid=GRID, mask=m, context=pctx)


def test_library_errors_carry_status_and_message():
    with pytest.raises(nablacl.NoDevice) as e:
        nablacl.Context("no-such-device-anywhere")
    assert e.value.status == -6 and e.value.status_name == "NO_DEVICE"
    assert "no-such-device-anywhere" in e.value.message or "device" in e.value.message
    with pytest.raises(nablacl.InvalidArgument, match="unknown"):
        c = nablacl.Context()
        try:
            c.force_variant("no-such-variant")
        finally:
            c.close()


def test_closed_context(qkv):
    c = nablacl.Context()
    c.close()
    with pytest.raises(nablacl.InvalidArgument, match="closed"):
        nablacl.attention(*qkv, grid=GRID, context=c)
