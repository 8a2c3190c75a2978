"""pyopencl arrays in and out, in place on the device (no host copies)."""
import numpy as np
import pytest

import nablacl
import nablacl.reference as ref
from conftest import TOL, video_inputs

cl = pytest.importorskip("pyopencl")
cla = pytest.importorskip("pyopencl.array")

GRID = (2, 16, 24)
SHAPE = (1, 2, 2 * 16 * 24, 64)


@pytest.fixture(scope="module")
def queue():
    if not nablacl.devices():
        pytest.skip("no OpenCL device")
    c = cl.create_some_context(interactive=False)
    return cl.CommandQueue(c)


@pytest.fixture(scope="module")
def nctx(queue):
    c = nablacl.Context.from_pyopencl(queue)
    yield c
    c.close()


def test_context_is_the_pyopencl_one(queue, nctx):
    assert nctx.cl_context == queue.context.int_ptr
    assert nctx.cl_queue == queue.int_ptr
    assert nctx.cl_device == queue.device.int_ptr


@pytest.mark.parametrize("kind", ["f32", "bf16"])
def test_attention_in_place(queue, nctx, rng, kind):
    host = video_inputs(rng, SHAPE, GRID, kind)
    q, k, v = (cla.to_device(queue, t) for t in host)
    out = cla.empty_like(q)
    got = nablacl.attention(q, k, v, "nabla-0.7", grid=GRID, out=out, context=nctx)
    assert got is out and isinstance(got, cla.Array)
    assert out.events, "the output carries the event of the enqueued work"
    m = nablacl.mask(q, k, "nabla-0.7", grid=GRID, context=nctx)
    bits, near = ref.mask(*host[:2], "nabla-0.7", GRID)
    assert not (((m.bitmap != bits).any(-1)) & (near == 0)).any()
    expect = ref.attention(*host, m.bitmap, GRID)
    assert np.abs(ref.to_float64(out.get()) - expect).max() < TOL[kind]
    # The same numbers as the NumPy path on the same device.
    assert np.array_equal(out.get(), nablacl.attention(*host, "nabla-0.7", grid=GRID, context=nctx))


def test_inputs_are_used_in_place(queue, nctx, rng):
    """The library reads the arrays' own buffers: a change made on the device after upload
    (never seen by the host) changes the result."""
    host = video_inputs(rng, SHAPE, GRID, "f32")
    q, k, v = (cla.to_device(queue, t) for t in host)
    before = nablacl.attention(q, k, v, "dense", grid=GRID, context=nctx).get()
    v *= 2.0  # a pyopencl kernel on the device
    after = nablacl.attention(q, k, v, "dense", grid=GRID, context=nctx).get()
    assert np.allclose(after, 2.0 * before, rtol=1e-5, atol=1e-6)


def test_default_context_for_pyopencl_arrays_follows_their_queue(queue, rng):
    host = video_inputs(rng, SHAPE, GRID, "f32")
    q, k, v = (cla.to_device(queue, t) for t in host)
    out = nablacl.attention(q, k, v, "nabla-0.7", grid=GRID)
    assert isinstance(out, cla.Array) and out.queue is queue
    tile = nablacl.reorder(q, GRID)
    assert np.array_equal(tile.get(), ref.reorder(host[0], GRID).astype(np.float32))
    back = nablacl.reorder(tile, GRID, inverse=True)
    assert np.array_equal(back.get(), host[0])


def test_array_of_another_context_is_refused(queue, rng):
    other = nablacl.Context()  # its own OpenCL context on the same device
    host = video_inputs(rng, SHAPE, GRID, "f32")
    q, k, v = (cla.to_device(queue, t) for t in host)
    with pytest.raises(nablacl.InvalidArgument, match="another OpenCL context"):
        nablacl.attention(q, k, v, "nabla-0.7", grid=GRID, context=other)
    other.close()


def test_views_and_mixed_kinds_are_refused(queue, nctx, rng):
    host = video_inputs(rng, (1, 2, 2 * 16 * 24, 64), GRID, "f32")
    q, k, v = (cla.to_device(queue, t) for t in host)
    with pytest.raises(nablacl.InvalidArgument, match="mix NumPy and pyopencl"):
        nablacl.attention(q, host[1], v, "nabla-0.7", grid=GRID, context=nctx)
    big = cla.to_device(queue, np.concatenate([host[0], host[0]], axis=1))
    with pytest.raises(nablacl.InvalidArgument, match="offset"):
        nablacl.attention(big[:, 1:], k, v, "nabla-0.7", grid=GRID, context=nctx)


def test_another_queue_waits_for_the_arrays_events(queue, rng):
    """A context on a second queue of the same OpenCL context orders its work after the
    arrays' pending events (here the kernel that makes v2), raster reorders included."""
    q2 = cl.CommandQueue(queue.context)
    other = nablacl.Context.from_cl(queue.context, queue.device, q2)
    host = video_inputs(rng, SHAPE, GRID, "f32")
    raster = [ref.reorder(t, GRID, inverse=True).astype(np.float32) for t in host]
    q, k, v = (cla.to_device(queue, t) for t in raster)
    v2 = v * 2.0
    assert v2.events
    out = nablacl.attention(q, k, v2, "nabla-0.7", grid=GRID, order="raster", context=other)
    expect = nablacl.attention(raster[0], raster[1], 2.0 * raster[2], "nabla-0.7", grid=GRID,
                               order="raster", context=other)
    assert np.allclose(out.get(), expect, rtol=1e-5, atol=1e-6)
    other.close()


def test_write_flex_on_the_device(queue, nctx, rng):
    """FlexAttention's layout written into pyopencl arrays equals the host one and the CSR,
    after the arrays' pending work."""
    host = video_inputs(rng, (2, 2, SHAPE[2], 64), GRID, "f32")
    q, k = (cla.to_device(queue, t) for t in host[:2])
    m = nablacl.mask(q, k, "nabla-0.5_sta-1-3-3", grid=GRID, context=nctx)
    nb = m.blocks
    num = cla.empty(queue, (2, 2, nb), np.int32)
    idx = cla.zeros(queue, (2, 2, nb, nb), np.int32) + 7  # pending work the write waits for
    assert idx.events
    got = m.write_flex(num, idx)
    assert got[0] is num and got[1] is idx and num.events
    assert np.array_equal(num.get(), m.kv_num_blocks)
    assert np.array_equal(idx.get(), m.kv_indices)
    assert np.array_equal(num.get().reshape(-1), np.diff(m.row_ptr))


def test_write_flex_refusals(queue, nctx, rng):
    host = video_inputs(rng, SHAPE, GRID, "f32")
    m = nablacl.mask(*host[:2], "nabla-0.5", grid=GRID, context=nctx)
    nb = m.blocks
    num = cla.empty(queue, (1, 2, nb), np.int32)
    idx = cla.empty(queue, (1, 2, nb, nb), np.int32)
    with pytest.raises(nablacl.InvalidArgument, match="kv_num_blocks: expected a pyopencl"):
        m.write_flex(np.zeros((1, 2, nb), np.int32), idx)
    with pytest.raises(nablacl.InvalidArgument, match="kv_indices: expected int32"):
        m.write_flex(num, cla.empty(queue, (1, 2, nb, nb), np.int64))
    with pytest.raises(nablacl.InvalidArgument, match="kv_num_blocks: expected int32"):
        m.write_flex(cla.empty(queue, (1, 2, nb + 1), np.int32), idx)
    big = cla.empty(queue, (2, 2, nb, nb), np.int32)
    with pytest.raises(nablacl.InvalidArgument, match="kv_indices: expected a whole"):
        m.write_flex(num, big[1:])
    other = cl.CommandQueue(cl.Context(devices=[queue.device]))
    with pytest.raises(nablacl.InvalidArgument, match="another OpenCL context"):
        m.write_flex(num, cla.empty(other, (1, 2, nb, nb), np.int32))
