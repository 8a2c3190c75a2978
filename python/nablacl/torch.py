"""PyTorch CUDA tensors through nablacl on NVIDIA GPUs, without host copies.

NVIDIA's OpenCL cannot read PyTorch's allocations directly, so every call goes through staging
tensors in memory that both see: allocated with the CUDA driver's virtual-memory API, exported
as a file descriptor and imported into OpenCL (``nabla_import_memory``). Per call:
device-to-device copies into the staging tensors on the current CUDA stream, a wait for that
stream, the nablacl work on the OpenCL queue (between acquiring and releasing the imported
tensors), and a wait for it. The staging tensors are kept per (device, shape, dtype) across
calls (:func:`release_staging` frees them); the output is handed over without a copy.

Two entry points for a NABLA video DiT such as the Wan 2.1 NABLA reference:

* :func:`attention` replaces the mask build plus ``flex_attention(q, k, v, block_mask=...)`` in
  the self-attention: same inputs ([B, H, S, D] CUDA tensors in tile order, views such as
  ``x.transpose(1, 2)`` included), same output tensor ([B, H, S, D], contiguous, q's dtype).
* :func:`block_mask` only builds the mask and returns FlexAttention's ``BlockMask``, for code
  that keeps FlexAttention for the attention itself.

The reference's ``sparse_algo`` with ``thr=0.4``, ``wT=11`` and its default 3 x 3 spatial window
is ``"nabla-0.4_sta-11-3-3"`` here; its grid is the latent's (T, H, W) in tokens.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from . import _cuda
from . import _tensors as T
from ._ffi import cl, ffi, lib, string
from .context import Context, devices
from .errors import InvalidArgument, NablaError, Unsupported, error_for

_DTYPES = {torch.float32: (T.F32, "<f4"), torch.float16: (T.F16, "<f2"),
           torch.bfloat16: (T.BF16, "<i2")}

GridLike = Union[Tuple[int, int, int], Sequence[int], torch.Tensor]

OPAQUE_FD = 1  # NABLA_HANDLE_OPAQUE_FD: CUDA's CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR


class _CudaArray:
    """__cuda_array_interface__ over raw device memory, for torch.as_tensor (no copy). A tensor
    made from it keeps it, and so `owner`, alive."""

    def __init__(self, ptr: int, shape: Tuple[int, ...], typestr: str, owner: Any = None) -> None:
        self.owner = owner
        # No "stream" entry: the memory has no pending work when the view is made.
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": None}


class _Shared:
    """One staging tensor: CUDA memory, the same memory as a cl_mem, and a torch view of it.
    Freed by close() or when the last reference goes (an output handed to the caller holds one)."""

    def __init__(self, runner: "_Runner", shape: Tuple[int, ...], dtype: torch.dtype) -> None:
        self.shape, self.dtype, self.device = shape, dtype, runner.device
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = itemsize
        for s in shape:
            nbytes *= s
        self.nbytes = nbytes
        self.alloc = _cuda.SharedAllocation(nbytes, runner.ordinal)
        self.mem: Any = ffi.NULL
        try:
            self.mem = runner.import_memory(self.alloc)
            self.tensor: Optional[torch.Tensor] = self.view(owner=None)
        except BaseException:
            self.close()
            raise

    def view(self, owner: Any) -> torch.Tensor:
        """A new tensor over the memory; `owner` is kept alive as long as the tensor is."""
        typestr = {torch.float32: "<f4", torch.float16: "<f2", torch.bfloat16: "<i2",
                   torch.int32: "<i4"}[self.dtype]
        arr = _CudaArray(self.alloc.ptr, self.shape, typestr, owner)
        t = torch.as_tensor(arr, device=self.device)
        self._last_view = weakref.ref(arr)
        return t.view(self.dtype) if self.dtype == torch.bfloat16 else t

    def in_use(self) -> bool:
        """Whether a tensor handed out by view() is still alive."""
        ref = getattr(self, "_last_view", None)
        return ref is not None and ref() is not None and ref().owner is not None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        self.tensor = None
        if self.mem != ffi.NULL:
            cl.clReleaseMemObject(self.mem)
            self.mem = ffi.NULL
        self.alloc.close()


class _Runner:
    """The nablacl context on the OpenCL device that is a given CUDA device, and its staging
    tensors. One per (thread, CUDA device), like contexts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ordinal = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.init()
        torch.empty(1, device=device)  # PyTorch's context is current on this thread
        self.cuda_context = _cuda.CurrentContext()
        self.uuid = _cuda.device_uuid(self.ordinal)
        self._uuid_buf = ffi.new("uint8_t[16]", list(self.uuid))
        self.ctx = self._open_context()
        self.cuda_context.restore()
        self.staging: Dict[Tuple[Any, ...], _Shared] = {}
        # Outputs handed to callers as they are (no copy out): reused once no tensor holds one.
        self.outputs: Dict[Tuple[Any, ...], List[_Shared]] = {}

    def _open_context(self) -> Context:
        """A context on the NVIDIA OpenCL device with this CUDA device's UUID (or the only one,
        where the driver does not report UUIDs) that imports opaque file descriptors."""
        nvidia = [d for d in devices() if d.type == "GPU" and "NVIDIA" in (d.platform + d.vendor).upper()]
        if not nvidia:
            raise Unsupported("no NVIDIA OpenCL device: is NVIDIA's OpenCL ICD registered "
                              "(an .icd file naming libnvidia-opencl.so.1 in OCL_ICD_VENDORS)?")
        why = []
        for d in nvidia:
            ctx = Context(d.index)
            caps = ffi.new("nabla_interop_caps *")
            ctx.check(lib.nabla_interop_caps_query(ctx.ptr, caps), "nabla_interop_caps_query")
            same = bytes(ffi.buffer(caps.uuid)) == self.uuid if caps.has_uuid else len(nvidia) == 1
            if same and caps.memory & (1 << OPAQUE_FD):
                return ctx
            if same:
                why.append(f"device {d.index} ({d.name}) cannot import CUDA memory: missing "
                           f"{string(caps.missing) or 'cl_khr_external_memory_opaque_fd'}")
            ctx.close()
        raise Unsupported("; ".join(why) or
                          f"no OpenCL device is CUDA device {self.ordinal} (UUID {self.uuid.hex()})")

    def import_memory(self, alloc: _cuda.SharedAllocation) -> Any:
        """The allocation as a cl_mem (nabla_import_memory consumes the descriptor)."""
        fd = alloc.export_fd()
        out = ffi.new("cl_mem *")
        m = ffi.new("nabla_external_memory *")
        m.type, m.fd, m.size, m.offset, m.bytes = OPAQUE_FD, fd, alloc.size, 0, 0
        m.device_uuid = self._uuid_buf
        st = lib.nabla_import_memory(self.ctx.ptr, m, out)
        if st != 0:
            _cuda.close_fd(fd)  # a failed import leaves the descriptor ours
            self.ctx.check(st, "nabla_import_memory")
        return out[0]

    def shared(self, role: str, shape: Tuple[int, ...], dtype: torch.dtype) -> _Shared:
        key = (role, shape, dtype)
        s = self.staging.get(key)
        if s is None:
            # A new shape replaces the role's old staging rather than accumulating memory.
            for old in [k for k in self.staging if k[0] == role]:
                self.staging.pop(old).close()
            s = _Shared(self, shape, dtype)
            self.staging[key] = s
        return s

    def output(self, role: str, shape: Tuple[int, ...], dtype: torch.dtype) -> _Shared:
        """An output staging tensor of `role` no caller holds any more (a new one when all are
        held). Each role has its own pool, so calls alternating between roles keep theirs."""
        key = (role, shape, dtype)
        if key not in self.outputs:
            for old in [k for k in self.outputs if k[0] == role]:  # another shape: let go of the old pool
                self.outputs.pop(old)
            self.outputs[key] = []
        pool = self.outputs[key]
        for s in pool:
            if not s.in_use():
                return s
        s = _Shared(self, shape, dtype)
        pool.append(s)
        return s

    def begin(self, mems: Sequence[Any]) -> None:
        """Acquires the imported tensors for OpenCL (enqueued)."""
        arr = ffi.new("cl_mem[]", list(mems))
        self.ctx.check(lib.nabla_external_begin(self.ctx.ptr, 0, ffi.NULL, len(mems), arr, 0,
                                                ffi.NULL, ffi.NULL), "nabla_external_begin")

    def end(self, mems: Sequence[Any]) -> None:
        """Releases them back to CUDA (enqueued; finish() waits)."""
        arr = ffi.new("cl_mem[]", list(mems))
        self.ctx.check(lib.nabla_external_end(self.ctx.ptr, len(mems), arr, 0, ffi.NULL, 0,
                                              ffi.NULL, ffi.NULL), "nabla_external_end")

    @contextlib.contextmanager
    def opencl(self, mems: Sequence[Any]) -> Iterator[None]:
        """The imported tensors belong to OpenCL inside the block: acquired at its start, released
        and waited for at its end (also when it raises), so CUDA reads them only afterwards."""
        self.begin(mems)
        try:
            yield
        finally:
            try:
                self.end(mems)
            finally:
                self.finish()  # also when end() raised: nothing of this call runs on afterwards

    def finish(self) -> None:
        code = cl.clFinish(lib.nabla_context_queue(self.ctx.ptr))
        self.cuda_context.restore()
        if code != 0:
            raise error_for(-3, f"clFinish failed with CL error {code}")

    def close(self) -> None:
        for s in self.staging.values():
            s.close()
        self.staging.clear()
        # An output a caller still holds is freed with its last tensor (its _Shared lives on).
        for pool in self.outputs.values():
            for s in pool:
                if not s.in_use():
                    s.close()
        self.outputs.clear()
        self.ctx.close()


_local = threading.local()


def _runner(device: torch.device) -> _Runner:
    runners: Dict[int, _Runner] = getattr(_local, "runners", None) or {}
    _local.runners = runners
    idx = device.index if device.index is not None else torch.cuda.current_device()
    r = runners.get(idx)
    if r is None:
        r = _Runner(torch.device("cuda", idx))
        runners[idx] = r
    return r


def context(device: Union[torch.device, int, None] = None) -> Context:
    """The nablacl context this thread uses for a CUDA device (e.g. to force a variant)."""
    if device is None:
        device = torch.cuda.current_device()
    return _runner(torch.device("cuda", device) if isinstance(device, int) else device).ctx


def release_staging() -> None:
    """Frees this thread's staging tensors and contexts (the next call makes new ones)."""
    for r in (getattr(_local, "runners", None) or {}).values():
        r.close()
    _local.runners = {}


def _grid(grid: Optional[GridLike]) -> Optional[Tuple[int, int, int]]:
    if grid is None:
        return None
    if isinstance(grid, torch.Tensor):
        rows = grid.reshape(-1, 3).tolist()
        if any(r != rows[0] for r in rows):
            raise InvalidArgument(f"grid: every sample must share one grid, got {rows}")
        return tuple(int(x) for x in rows[0])  # type: ignore[return-value]
    g = tuple(int(x) for x in grid)
    if len(g) != 3:
        raise InvalidArgument(f"grid: expected (T, H, W), got {grid!r}")
    return g  # type: ignore[return-value]


def _check(tensors: Sequence[torch.Tensor], names: Sequence[str], grid: Optional[GridLike]
           ) -> Tuple[Any, int, Tuple[int, ...], torch.dtype, torch.device, Optional[Tuple[int, int, int]]]:
    """Everything checked before any copy or launch."""
    first = tensors[0]
    for t, n in zip(tensors, names):
        if not isinstance(t, torch.Tensor):
            raise InvalidArgument(f"{n}: expected a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cuda":
            raise InvalidArgument(f"{n}: a {t.device} tensor; nablacl.torch takes CUDA tensors "
                                  "(use nablacl.attention for NumPy arrays)")
        if t.dtype not in _DTYPES:
            raise InvalidArgument(f"{n}: dtype {t.dtype} is not supported (bfloat16, float16, float32)")
        if t.dim() != 4:
            raise InvalidArgument(f"{n}: expected 4 dimensions [B, H, S, D], got shape {tuple(t.shape)}")
        if t.stride(-1) != 1:
            raise InvalidArgument(f"{n}: the last dimension is not contiguous (strides {t.stride()}); "
                                  "rows of D elements must be dense")
        if t.shape != first.shape:
            raise InvalidArgument(f"{n}: shape {tuple(t.shape)} differs from {names[0]}'s {tuple(first.shape)}")
        if t.dtype != first.dtype:
            raise InvalidArgument(f"{n}: dtype {t.dtype} differs from {names[0]}'s {first.dtype}")
        if t.device != first.device:
            raise InvalidArgument(f"{n}: on {t.device}, {names[0]} on {first.device}")
    g = _grid(grid)
    shape4 = tuple(int(s) for s in first.shape)
    shape = T.make_shape(shape4, g)
    return shape, _DTYPES[first.dtype][0], shape4, first.dtype, first.device, g


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: Optional[GridLike],
              algo: str = "nabla-0.7", *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NABLA attention of CUDA tensors, mask build included: the drop-in for the reference's
    mask build + ``flex_attention(q, k, v, block_mask=...)``.

    Args:
        q, k, v: [B, H, S, D] CUDA tensors (bfloat16, float16 or float32), tokens in tile
            order; any strides whose last one is 1 (e.g. ``x.transpose(1, 2)`` of [B, S, H, D]).
        grid: the latent grid (T, H, W) in tokens (T*H*W == S), a [B, 3] tensor of equal rows
            (Wan's ``grid_sizes``), or None for a plain sequence.
        algo: "nabla-<thr>", "sta-<t>-<h>-<w>", "nabla-<thr>_sta-<t>-<h>-<w>" or "dense".
        out: a contiguous [B, H, S, D] tensor of q's dtype and device to copy the result into.

    Returns:
        [B, H, S, D] contiguous, q's dtype, on q's device, ready on the current stream: ``out``,
        or else the staging memory the result was written to, which is not reused while any
        tensor refers to it (so no copy out; keeping many outputs alive keeps their memory).
    """
    names = ["q", "k", "v"]
    shape, dtype, shape4, tdtype, device, _g = _check([q, k, v], names, grid)
    algo_s = T.parse_algo(algo)
    if out is not None:
        if (not isinstance(out, torch.Tensor) or out.shape != q.shape or out.dtype != q.dtype
                or out.device != device or not out.is_contiguous()):
            raise InvalidArgument("out: expected a contiguous tensor of q's shape, dtype and device")
    r = _runner(device)
    sq, sk, sv = (r.shared(n, shape4, tdtype) for n in ("q", "k", "v"))
    so = r.shared("o", shape4, tdtype) if out is not None else r.output("o", shape4, tdtype)
    stream = torch.cuda.current_stream(device)
    sq.tensor.copy_(q)
    sk.tensor.copy_(k)
    sv.tensor.copy_(v)
    stream.synchronize()  # the copies are in memory before OpenCL reads it
    with r.opencl([sq.mem, sk.mem, sv.mem, so.mem]):  # the output is in memory before CUDA reads it
        r.ctx.check(lib.nabla_attention(r.ctx.ptr, algo_s, shape, dtype, sq.mem, sk.mem, sv.mem,
                                        so.mem, 0, ffi.NULL, ffi.NULL), "nabla_attention")
    if out is None:
        return so.view(owner=so)  # the staging memory itself: no copy out
    out.copy_(so.tensor)
    return out


def mask(q: torch.Tensor, k: torch.Tensor, grid: Optional[GridLike], algo: str = "nabla-0.7"
         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The block mask of ``algo`` as FlexAttention's ``(kv_num_blocks [B, H, Nb],
    kv_indices [B, H, Nb, Nb])`` int32 CUDA tensors (each row's kept blocks ascending, then
    zeros), built by nablacl from Q and K; arguments as :func:`attention`.

    Where every block holds 64 tokens, Q and K are not copied: their block means are summed in
    fp32 by PyTorch where they are (reading them once) into staging memory, and nablacl builds the
    mask from those (``nabla_mask_build_from_means``). Ragged grids copy Q and K and pool in
    nablacl. The result is written on the GPU straight into staging memory
    (``nabla_mask_write_flex``) and handed over as it is, ready on the current stream; like
    :func:`attention`'s output, that memory is not reused while any tensor refers to it."""
    shape, dtype, shape4, tdtype, device, _g = _check([q, k], ["q", "k"], grid)
    algo_s = T.parse_algo(algo)
    B, H, S, D = shape4
    nb = int(lib.nabla_shape_blocks(shape))
    r = _runner(device)
    means = S == 64 * nb  # every block holds 64 tokens (none holds more): block i is 64 i .. 64 i + 63
    if means:
        sq = r.shared("q_means", (B, H, nb, D), torch.float32)
        sk = r.shared("k_means", (B, H, nb, D), torch.float32)
        if algo_s.nabla:  # dense and pure STA read neither
            for src, dst in ((q, sq), (k, sk)):
                torch.sum(src.unflatten(2, (nb, 64)), dim=3, dtype=torch.float32, out=dst.tensor)
                dst.tensor.mul_(1.0 / 64.0)  # exact: a power of two
    else:
        sq, sk = r.shared("q", shape4, tdtype), r.shared("k", shape4, tdtype)
        if algo_s.nabla:
            sq.tensor.copy_(q)
            sk.tensor.copy_(k)
    snum = r.output("kv_num_blocks", (B, H, nb), torch.int32)
    sidx = r.output("kv_indices", (B, H, nb, nb), torch.int32)
    # The inputs are in memory before OpenCL reads them, and work queued earlier on this stream
    # (which may still read an earlier mask now let go of) is done before OpenCL rewrites it.
    torch.cuda.current_stream(device).synchronize()
    with r.opencl([sq.mem, sk.mem, snum.mem, sidx.mem]):
        handle = ffi.new("nabla_mask **")
        if means:
            r.ctx.check(lib.nabla_mask_build_from_means(r.ctx.ptr, algo_s, shape, sq.mem, sk.mem, handle,
                                                        0, ffi.NULL, ffi.NULL), "nabla_mask_build_from_means")
        else:
            r.ctx.check(lib.nabla_mask_build(r.ctx.ptr, algo_s, shape, dtype, sq.mem, sk.mem, handle,
                                             0, ffi.NULL, ffi.NULL), "nabla_mask_build")
        try:
            r.ctx.check(lib.nabla_mask_write_flex(r.ctx.ptr, handle[0], snum.mem, sidx.mem, 0,
                                                  ffi.NULL, ffi.NULL), "nabla_mask_write_flex")
        finally:
            lib.nabla_mask_release(handle[0])  # the queued kernels keep its buffers alive
    return snum.view(owner=snum), sidx.view(owner=sidx)


def block_mask(q: torch.Tensor, k: torch.Tensor, grid: Optional[GridLike], algo: str = "nabla-0.7",
               *, full_blocks: bool = True, compute_q_blocks: bool = False) -> Any:
    """FlexAttention's ``BlockMask`` of the NABLA mask built by nablacl (64-token blocks).

    ``full_blocks`` (default, as the NABLA reference does) marks every kept block as a full
    block, so FlexAttention applies no mask_mod inside it; otherwise they are partial blocks.
    The transposed (query-side) indices FlexAttention needs only for the backward pass are left
    out (inference; the NABLA reference runs under no_grad) unless ``compute_q_blocks`` (older
    PyTorch without that option always computes them).

    FlexAttention's blocks are 64 consecutive tokens: video grids need H and W multiples of 8.
    """
    from torch.nn.attention.flex_attention import BlockMask

    g = _grid(grid)
    if g is not None and (g[1] % 8 or g[2] % 8):
        raise InvalidArgument(f"grid {g}: FlexAttention's 64-token blocks need H and W multiples "
                              "of 8 (nablacl's ragged edge tiles have no BlockMask form)")
    num, idx = mask(q, k, g, algo)
    kwargs: Dict[str, Any] = {"BLOCK_SIZE": 64}
    if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters:
        kwargs["compute_q_blocks"] = compute_q_blocks
    if full_blocks:
        return BlockMask.from_kv_blocks(torch.zeros_like(num), idx, num, idx, **kwargs)
    return BlockMask.from_kv_blocks(num, idx, **kwargs)


__all__ = ["attention", "mask", "block_mask", "context", "release_staging", "NablaError"]
