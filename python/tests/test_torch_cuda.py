"""nablacl.torch on CUDA tensors (an NVIDIA GPU with its OpenCL driver; skipped elsewhere):
against FlexAttention with the same mask and against the NumPy path; argument errors before
anything is copied or launched."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nablacl  # noqa: E402

GRID = (3, 16, 24)
SHAPE = (1, 4, 3 * 16 * 24, 128)


def cuda_ready():
    return torch.cuda.is_available() and any("NVIDIA" in (d.platform + d.vendor).upper()
                                             for d in nablacl.devices())


needs_cuda = pytest.mark.skipif(not cuda_ready(), reason="needs CUDA and NVIDIA's OpenCL")


def inputs(dtype=torch.bfloat16, device="cuda"):
    g = torch.Generator(device="cpu").manual_seed(7)
    nb = SHAPE[2] // 64
    base = torch.randn(SHAPE[0], SHAPE[1], nb, SHAPE[3], generator=g) * 1.2
    qk = [(base.repeat_interleave(64, 2) + torch.randn(SHAPE, generator=g)).to(dtype)
          for _ in range(2)]
    v = torch.randn(SHAPE, generator=g).to(dtype)
    return [t.to(device) for t in (*qk, v)]


def test_cpu_tensors_are_refused():
    import nablacl.torch as nt

    q, k, v = inputs(device="cpu")
    with pytest.raises(nablacl.InvalidArgument, match="q: a cpu tensor"):
        nt.attention(q, k, v, GRID, "nabla-0.7")
    with pytest.raises(nablacl.InvalidArgument, match="a cpu tensor"):
        nt.block_mask(q.cuda() if cuda_ready() else q, k, GRID)


@needs_cuda
def test_bad_arguments_are_refused_before_any_copy():
    import nablacl.torch as nt

    nt.release_staging()
    q, k, v = inputs()
    with pytest.raises(nablacl.InvalidArgument, match="dtype torch.float64"):
        nt.attention(q.double(), k, v, GRID)
    with pytest.raises(nablacl.InvalidArgument, match="last dimension is not contiguous"):
        nt.attention(q, k.transpose(2, 3).contiguous().transpose(2, 3)[..., :], v, GRID)
    with pytest.raises(nablacl.InvalidArgument, match="v: shape"):
        nt.attention(q, k, v[:, :2], GRID)
    with pytest.raises(nablacl.InvalidArgument, match="grid"):
        nt.attention(q, k, v, (3, 16, 16))
    with pytest.raises(nablacl.InvalidArgument, match="nabla-2"):
        nt.attention(q, k, v, GRID, "nabla-2")
    with pytest.raises(nablacl.InvalidArgument, match="multiples of 8"):
        nt.block_mask(q[:, :, :3 * 12 * 20], k[:, :, :3 * 12 * 20], (3, 12, 20))
    assert not getattr(nt._local, "runners", None), "a refused call made staging memory"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dropin_matches_flex_with_the_same_mask(dtype):
    from torch.nn.attention.flex_attention import flex_attention
    import nablacl.torch as nt

    q, k, v = inputs(dtype)
    # the model's layout: [B, S, H, D] seen as [B, H, S, D]
    qv, kv, vv = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    out = nt.attention(qv, kv, vv, GRID, "nabla-0.4_sta-3-3-3")
    assert out.shape == q.shape and out.dtype == dtype and out.is_contiguous()
    bm = nt.block_mask(q, k, GRID, "nabla-0.4_sta-3-3-3")
    flex = flex_attention(q, k, v, block_mask=bm)
    assert float((out.float() - flex.float()).abs().max()) <= 2e-2
    # grid given as Wan's grid_sizes tensor; `out` filled in place
    dst = torch.empty_like(q)
    got = nt.attention(q, k, v, torch.tensor([GRID]), "nabla-0.4_sta-3-3-3", out=dst)
    assert got is dst and torch.equal(dst, out)


@needs_cuda
@pytest.mark.parametrize("grid", [GRID, (3, 12, 20)])
def test_mask_matches_the_numpy_path(grid):
    """Ragged grids copy Q and K and pool in nablacl, as the NumPy path does: the same mask.
    Grids of whole blocks build it from block means summed by PyTorch: rows may differ only
    where a cumulative sum sits at the threshold within the means' rounding (rare, one block)."""
    import nablacl.torch as nt

    q, k, _ = inputs(torch.float16)
    S = grid[0] * grid[1] * grid[2]
    q, k = q[:, :, :S], k[:, :, :S]
    num, idx = nt.mask(q, k, grid, "nabla-0.5")
    ctx = nt.context()
    m = nablacl.mask(q.cpu().numpy(), k.cpu().numpy(), "nabla-0.5", grid=grid, context=ctx)
    assert 0.0 < m.density < 1.0
    num, idx = num.cpu().numpy(), idx.cpu().numpy()
    if S % 64:
        assert np.array_equal(num, m.kv_num_blocks) and np.array_equal(idx, m.kv_indices)
        return
    differ = (idx != m.kv_indices).any(-1) | (num != m.kv_num_blocks)
    assert differ.sum() * 100 <= differ.size, f"{differ.sum()} of {differ.size} rows differ"
    assert np.abs(num - m.kv_num_blocks)[differ].max(initial=0) <= 1


def test_flex_layout_is_what_blockmask_reads():
    """The library's kv_num_blocks / kv_indices (here from the NumPy path, any device) make a
    BlockMask whose dense form is the mask's bitmap, as block_mask builds it."""
    from torch.nn.attention.flex_attention import BlockMask

    if not nablacl.devices():
        pytest.skip("no OpenCL device")
    rng = np.random.default_rng(3)
    q, k = (rng.standard_normal((2, 2, SHAPE[2], 32)).astype(np.float32) for _ in range(2))
    m = nablacl.mask(q, k, "nabla-0.5_sta-1-3-3", grid=GRID)
    num, idx = torch.from_numpy(m.kv_num_blocks), torch.from_numpy(m.kv_indices)
    bm = BlockMask.from_kv_blocks(torch.zeros_like(num), idx, num, idx, BLOCK_SIZE=64)
    assert np.array_equal(bm.to_dense().numpy() != 0, m.bitmap != 0)


def test_output_pools_are_kept_per_role(monkeypatch):
    """Calls alternating between attention's output and the mask's two keep each role's pool
    (no new staging memory per call); a new shape replaces its own role's pool alone."""
    import nablacl.torch as nt

    made = []

    class FakeShared:
        def __init__(self, runner, shape, dtype):
            self.shape, self.dtype, self.held = shape, dtype, False
            made.append(self)

        def in_use(self):
            return self.held

    monkeypatch.setattr(nt, "_Shared", FakeShared)
    r = object.__new__(nt._Runner)
    r.outputs = {}
    o = r.output("o", (1, 2, 64, 8), torch.bfloat16)
    n = r.output("kv_num_blocks", (1, 2, 1), torch.int32)
    i = r.output("kv_indices", (1, 2, 1, 1), torch.int32)
    assert len(made) == 3
    assert r.output("o", (1, 2, 64, 8), torch.bfloat16) is o
    assert r.output("kv_indices", (1, 2, 1, 1), torch.int32) is i
    i.held = True
    i2 = r.output("kv_indices", (1, 2, 1, 1), torch.int32)
    assert i2 is not i and len(made) == 4
    assert r.output("kv_num_blocks", (1, 2, 1), torch.int32) is n
    n2 = r.output("kv_num_blocks", (1, 2, 2), torch.int32)
    assert n2 is not n and ("kv_num_blocks", (1, 2, 1), torch.int32) not in r.outputs
    assert r.output("o", (1, 2, 64, 8), torch.bfloat16) is o
    assert r.output("kv_indices", (1, 2, 1, 1), torch.int32) is i2


def test_opencl_section_hands_back_even_when_the_call_fails():
    """The imported tensors go back to CUDA and the queue is waited for after the library's
    calls, also when one of them raises."""
    import nablacl.torch as nt

    calls = []

    class FakeRunner:
        def begin(self, mems):
            calls.append(("begin", list(mems)))

        def end(self, mems):
            calls.append(("end", list(mems)))

        def finish(self):
            calls.append(("finish",))

    with nt._Runner.opencl(FakeRunner(), ["a", "b"]):
        calls.append(("work",))
    assert calls == [("begin", ["a", "b"]), ("work",), ("end", ["a", "b"]), ("finish",)]
    calls.clear()
    with pytest.raises(nablacl.InvalidArgument):
        with nt._Runner.opencl(FakeRunner(), ["a"]):
            raise nablacl.InvalidArgument("refused")
    assert calls == [("begin", ["a"]), ("end", ["a"]), ("finish",)]


@needs_cuda
def test_mask_outputs_are_not_reused_while_held():
    import nablacl.torch as nt

    q, k, _ = inputs()
    num, idx = nt.mask(q, k, GRID, "nabla-0.5")
    assert num.dtype == idx.dtype == torch.int32 and idx.is_contiguous()
    num_copy, idx_copy, idx_ptr = num.clone(), idx.clone(), idx.data_ptr()
    num2, idx2 = nt.mask(q, k, GRID, "dense")
    assert idx2.data_ptr() != idx_ptr and torch.equal(idx, idx_copy) and torch.equal(num, num_copy)
    nb = idx2.shape[-1]
    assert bool((num2 == nb).all())
    assert torch.equal(idx2[0, 0, 0], torch.arange(nb, dtype=torch.int32, device=idx2.device))
    del num, idx
    num3, idx3 = nt.mask(q, k, GRID, "nabla-0.5")
    assert idx3.data_ptr() == idx_ptr, "the first free output is reused"
    assert torch.equal(idx3, idx_copy) and torch.equal(num3, num_copy)


@needs_cuda
def test_outputs_are_not_reused_while_held():
    import nablacl.torch as nt

    q, k, v = inputs()
    a = nt.attention(q, k, v, GRID, "nabla-0.5")
    a_ptr, a_copy = a.data_ptr(), a.clone()
    b = nt.attention(q, k, 2 * v, GRID, "nabla-0.5")
    assert b.data_ptr() != a_ptr and torch.equal(a, a_copy)
    assert float((b.float() - 2 * a.float()).abs().max()) <= 2e-2
    view = a[:, 1:]
    del a
    c = nt.attention(q, k, v, GRID, "nabla-0.5")
    assert c.data_ptr() not in (a_ptr, b.data_ptr()), "a view still holds the first output"
    del view, c
    d = nt.attention(q, k, v, GRID, "nabla-0.5")
    assert d.data_ptr() == a_ptr, "the first free output is reused"
    assert torch.equal(d, a_copy)
