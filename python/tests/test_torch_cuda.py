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
def test_mask_matches_the_numpy_path():
    import nablacl.torch as nt

    q, k, _ = inputs(torch.float16)
    num, idx = nt.mask(q, k, GRID, "nabla-0.5")
    ctx = nt.context()
    m = nablacl.mask(q.cpu().numpy(), k.cpu().numpy(), "nabla-0.5", grid=GRID, context=ctx)
    assert np.array_equal(num.cpu().numpy(), m.kv_num_blocks)
    assert np.array_equal(idx.cpu().numpy(), m.kv_indices)
    assert 0.0 < m.density < 1.0


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
