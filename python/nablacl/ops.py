"""The operations: NABLA attention, the block mask alone, and the token reorder.

Inputs are NumPy arrays (uploaded, computed, read back; the call returns when the result is
on the host) or pyopencl arrays (used in place on the device, never copied; the call returns
once the work is enqueued, and the output array's ``events`` say when it is done). Tensors are
[B, H, S, D] of float32, float16 or bf16 (ml_dtypes.bfloat16, or uint16 words holding the bits).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from . import _tensors as T
from ._ffi import ffi, lib
from .context import Context, default_context
from .errors import InvalidArgument

_pyopencl_contexts = threading.local()


def _context_for(kind: str, arrays: Sequence[Any], context: Optional[Context]) -> Context:
    """The given context; else for pyopencl arrays one on their queue (kept per queue and
    thread), else the thread's default context."""
    if context is not None:
        return context
    if kind == "pyopencl":
        queue = arrays[0].queue
        cache: Dict[int, Context] = getattr(_pyopencl_contexts, "by_queue", None) or {}
        _pyopencl_contexts.by_queue = cache
        ctx = cache.get(queue.int_ptr)
        if ctx is None or ctx._ptr == ffi.NULL:
            ctx = Context.from_pyopencl(queue)
            cache[queue.int_ptr] = ctx
        return ctx
    return default_context()


def _new_like(kind: str, a: Any) -> Any:
    if kind == "numpy":
        return np.empty(a.shape, a.dtype)
    import pyopencl.array as cla

    return cla.empty(a.queue, a.shape, a.dtype)


class Mask:
    """A block mask on the device: CSR per (batch, head) row of 64-token query blocks.

    The host views are read on first use (blocking) and kept: ``row_ptr`` [B*H*Nb + 1] and
    ``col_idx`` [kept] (int32), ``bitmap`` [B, H, Nb, Nb] (uint8 0/1), and FlexAttention's
    ``kv_num_blocks`` [B, H, Nb] / ``kv_indices`` [B, H, Nb, Nb] (int32; each row's kept blocks
    ascending, then zeros; expanded on the device), ready for ``BlockMask.from_kv_blocks``;
    :meth:`write_flex` writes those into pyopencl arrays instead. ``block_starts`` [Nb + 1]
    gives each block's first token (tile order). Pass the mask to :func:`attention` to attend
    with it; :meth:`release` frees the device copy (or let it be garbage-collected).
    """

    def __init__(self, context: Context, ptr: Any, shape: Any) -> None:
        self.context = context
        self._ptr = ptr
        self._shape = shape
        self.batch, self.heads = int(shape.batch), int(shape.heads)
        self.seq = int(shape.seq)
        self.grid: Optional[Tuple[int, int, int]] = (
            (int(shape.grid_t), int(shape.grid_h), int(shape.grid_w)) if shape.grid_t else None)
        self.blocks = int(lib.nabla_shape_blocks(shape))
        self._cache: Dict[str, Any] = {}

    @classmethod
    def from_bitmap(cls, bitmap: np.ndarray, seq: int, grid: T.Grid = None, *,
                    context: Optional[Context] = None) -> "Mask":
        """A mask from a host block bitmap [B, H, Nb, Nb] (non-zero = kept) for sequences of
        ``seq`` tokens (on ``grid`` for video)."""
        bitmap = np.asarray(bitmap)
        if bitmap.ndim != 4 or bitmap.shape[2] != bitmap.shape[3]:
            raise InvalidArgument(f"bitmap: expected [B, H, Nb, Nb], got shape {bitmap.shape}")
        shape = T.make_shape((bitmap.shape[0], bitmap.shape[1], seq, 64), grid)
        nb = int(lib.nabla_shape_blocks(shape))
        if bitmap.shape[2] != nb:
            raise InvalidArgument(f"bitmap: {bitmap.shape[2]} blocks per row, the shape has {nb}")
        ctx = context or default_context()
        bits = np.ascontiguousarray(bitmap != 0, dtype=np.uint8)
        out = ffi.new("nabla_mask **")
        ctx.check(lib.nabla_mask_from_bitmap(ctx.ptr, shape, ffi.from_buffer(bits), out),
                  "nabla_mask_from_bitmap")
        return cls(ctx, out[0], shape)

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise InvalidArgument("the mask was released")
        return self._ptr

    def release(self) -> None:
        """Frees the device mask (idempotent); host views already read stay usable."""
        if self._ptr != ffi.NULL:
            lib.nabla_mask_release(self._ptr)
            self._ptr = ffi.NULL

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass

    def _stats(self) -> Tuple[int, float]:
        if "stats" not in self._cache:
            kept, dens = ffi.new("int64_t *"), ffi.new("double *")
            self.context.check(lib.nabla_mask_stats(self.context.ptr, self.ptr, kept, dens),
                               "nabla_mask_stats")
            self._cache["stats"] = (int(kept[0]), float(dens[0]))
        return self._cache["stats"]

    @property
    def kept(self) -> int:
        """Number of kept blocks over all (batch, head) rows."""
        return self._stats()[0]

    @property
    def density(self) -> float:
        """kept / (B * H * Nb * Nb)."""
        return self._stats()[1]

    def _csr(self) -> Tuple[np.ndarray, np.ndarray]:
        if "csr" not in self._cache:
            rows = self.batch * self.heads * self.blocks
            row_ptr = np.empty(rows + 1, np.int32)
            col_idx = np.empty(max(self.kept, 1), np.int32)
            self.context.check(lib.nabla_mask_read_csr(
                self.context.ptr, self.ptr, ffi.from_buffer("int32_t[]", row_ptr), row_ptr.size,
                ffi.from_buffer("int32_t[]", col_idx), col_idx.size), "nabla_mask_read_csr")
            self._cache["csr"] = (row_ptr, col_idx[:self.kept])
        return self._cache["csr"]

    @property
    def row_ptr(self) -> np.ndarray:
        """CSR row pointers [B*H*Nb + 1] (int32)."""
        return self._csr()[0]

    @property
    def col_idx(self) -> np.ndarray:
        """CSR column indices [kept] (int32), ascending within each row."""
        return self._csr()[1]

    @property
    def bitmap(self) -> np.ndarray:
        """Dense block bitmap [B, H, Nb, Nb] (uint8, 1 = kept)."""
        if "bitmap" not in self._cache:
            nb = self.blocks
            bits = np.empty((self.batch, self.heads, nb, nb), np.uint8)
            self.context.check(lib.nabla_mask_read_bitmap(self.context.ptr, self.ptr,
                                                          ffi.from_buffer(bits), bits.size),
                               "nabla_mask_read_bitmap")
            self._cache["bitmap"] = bits
        return self._cache["bitmap"]

    def _flex(self) -> Tuple[np.ndarray, np.ndarray]:
        if "flex" not in self._cache:
            nb = self.blocks
            num = np.empty((self.batch, self.heads, nb), np.int32)
            idx = np.empty((self.batch, self.heads, nb, nb), np.int32)
            self.context.check(lib.nabla_mask_read_flex(
                self.context.ptr, self.ptr, ffi.from_buffer("int32_t[]", num), num.size,
                ffi.from_buffer("int32_t[]", idx), idx.size), "nabla_mask_read_flex")
            self._cache["flex"] = (num, idx)
        return self._cache["flex"]

    @property
    def kv_num_blocks(self) -> np.ndarray:
        """FlexAttention's kv_num_blocks [B, H, Nb] (int32)."""
        return self._flex()[0]

    @property
    def kv_indices(self) -> np.ndarray:
        """FlexAttention's kv_indices [B, H, Nb, Nb] (int32)."""
        return self._flex()[1]

    def write_flex(self, kv_num_blocks: Any, kv_indices: Any) -> Tuple[Any, Any]:
        """Writes FlexAttention's layout into pyopencl arrays on the device, never via the host
        (``nabla_mask_write_flex``): int32, C-contiguous, [B, H, Nb] and [B, H, Nb, Nb], in this
        mask's OpenCL context. Enqueued after their pending events; their ``events`` then say
        when it is done. Returns the two arrays."""
        arrays, names = (kv_num_blocks, kv_indices), ("kv_num_blocks", "kv_indices")
        nb = self.blocks
        shapes = ((self.batch, self.heads, nb), (self.batch, self.heads, nb, nb))
        for a, n, want in zip(arrays, names, shapes):
            if not T.is_pyopencl(a):
                raise InvalidArgument(f"{n}: expected a pyopencl.array.Array, got {type(a).__name__} "
                                      "(the kv_num_blocks and kv_indices properties give NumPy arrays)")
            if a.dtype != np.int32 or tuple(a.shape) != want:
                raise InvalidArgument(f"{n}: expected int32 {want}, got {a.dtype} {tuple(a.shape)}")
            if not a.flags.c_contiguous or a.offset != 0:
                raise InvalidArgument(f"{n}: expected a whole C-contiguous array")
        bufs = [T.borrow(self.context, a, n) for a, n in zip(arrays, names)]
        nw, wl, _keep = T.wait_list(arrays)
        done = ffi.new("cl_event *")
        self.context.check(lib.nabla_mask_write_flex(self.context.ptr, self.ptr, bufs[0].mem,
                                                     bufs[1].mem, nw, wl, done),
                           "nabla_mask_write_flex")
        T.adopt_event(done[0], arrays)
        return kv_num_blocks, kv_indices

    @property
    def block_starts(self) -> np.ndarray:
        """First token of every block in tile order, [Nb + 1] (the last entry is S)."""
        out = np.empty(self.blocks + 1, np.int32)
        st = lib.nabla_shape_block_starts(self._shape, ffi.from_buffer("int32_t[]", out), out.size)
        if st != 0:
            raise InvalidArgument("nabla_shape_block_starts failed")
        return out

    def __repr__(self) -> str:
        return (f"<nablacl.Mask B={self.batch} H={self.heads} blocks={self.blocks} "
                f"grid={self.grid}>")


def _prepare(arrays: Sequence[Any], names: Sequence[str], grid: T.Grid, order: str,
             context: Optional[Context]) -> Tuple[str, Any, int, bool, Context]:
    kind = T.kind_of(arrays, names)
    shape4, dtype = T.check_tensors(arrays, names)
    shape = T.make_shape(shape4, grid)
    raster = T.check_order(order)
    if raster and grid is None:
        raise InvalidArgument("order='raster' needs a video grid (T, H, W)")
    ctx = _context_for(kind, arrays, context)
    return kind, shape, T.nabla_dtype(dtype, names[0]), raster, ctx


class _Staged:
    """The device buffers of one call: borrowed (pyopencl) or uploaded (NumPy), in tile order;
    closed together."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.buffers: list = []

    def add(self, buf: T.Buffer) -> T.Buffer:
        self.buffers.append(buf)
        return buf

    def input(self, kind: str, a: Any, name: str, shape: Any, dtype: int, raster: bool,
              wait: Tuple[int, Any]) -> T.Buffer:
        """The tensor as the library reads it; a raster-order one is reordered first, after
        `wait` (the pending events of pyopencl arrays)."""
        src = self.add(T.borrow(self.ctx, a, name) if kind == "pyopencl"
                       else T.upload(self.ctx, a, name))
        if not raster:
            return src
        tile = self.add(T.Buffer.new(self.ctx, src.nbytes, name + " (tile order)"))
        self.ctx.check(lib.nabla_reorder(self.ctx.ptr, shape, dtype, 0, src.mem, tile.mem, wait[0],
                                         wait[1], ffi.NULL), f"nabla_reorder ({name})")
        return tile

    def close(self) -> None:
        for b in self.buffers:
            b.close()
        self.buffers = []


def attention(q: Any, k: Any, v: Any, algo: str = "nabla-0.7", grid: T.Grid = None,
              order: str = "tile", *, mask: Optional[Mask] = None, out: Any = None,
              context: Optional[Context] = None) -> Any:
    """NABLA block-sparse attention: builds the block mask of ``algo`` from Q and K, then
    ``softmax(Q Kᵀ / sqrt(D)) V`` over the kept key blocks of every query block.

    Args:
        q, k, v: [B, H, S, D] arrays of one dtype, all NumPy or all pyopencl.
        algo: "nabla-<thr>", "sta-<t>-<h>-<w>", "nabla-<thr>_sta-<t>-<h>-<w>" or "dense".
        grid: video grid (T, H, W) in tokens, T*H*W == S; None for a plain sequence.
        order: "tile" (tokens already in tile order) or "raster" (reordered on the device, and
            the output back).
        mask: attend with this mask instead of building one (``algo`` is then ignored).
        out: output array like q (NumPy or pyopencl); a new one when None.
        context: the nablacl context (default: the thread's; for pyopencl arrays one on their
            queue).

    Returns:
        The output [B, H, S, D] of q's type and dtype (``out`` when given).
    """
    arrays = [q, k, v] + ([out] if out is not None else [])
    names = ["q", "k", "v"] + (["out"] if out is not None else [])
    kind, shape, dtype, raster, ctx = _prepare(arrays, names, grid, order, context)
    algo_s = T.parse_algo(algo) if mask is None else None
    if mask is not None:
        if (mask.batch, mask.heads, mask.seq, mask.grid) != (
                shape.batch, shape.heads, shape.seq, grid and tuple(int(g) for g in grid)):
            raise InvalidArgument(f"mask: made for B={mask.batch} H={mask.heads} S={mask.seq} "
                                  f"grid={mask.grid}, not for the inputs' shape")
        if mask.context is not ctx:
            raise InvalidArgument("mask: built on another context than the one this call uses")
    result = out if out is not None else _new_like(kind, q)
    staged = _Staged(ctx)
    try:
        nw, wl, _keep = T.wait_list(arrays)
        bq = staged.input(kind, q, "q", shape, dtype, raster, (nw, wl))
        bk = staged.input(kind, k, "k", shape, dtype, raster, (nw, wl))
        bv = staged.input(kind, v, "v", shape, dtype, raster, (nw, wl))
        bo_final = staged.add(T.borrow(ctx, result, "out") if kind == "pyopencl"
                              else T.Buffer.new(ctx, q.nbytes, "out"))
        bo = staged.add(T.Buffer.new(ctx, q.nbytes, "out (tile order)")) if raster else bo_final
        done = ffi.new("cl_event *")
        if mask is None:
            ctx.check(lib.nabla_attention(ctx.ptr, algo_s, shape, dtype, bq.mem, bk.mem, bv.mem,
                                          bo.mem, nw, wl, done), "nabla_attention")
        else:
            ctx.check(lib.nabla_attend(ctx.ptr, shape, dtype, mask.ptr, bq.mem, bk.mem, bv.mem,
                                       bo.mem, nw, wl, done), "nabla_attend")
        if raster:
            last = ffi.new("cl_event *")
            ctx.check(lib.nabla_reorder(ctx.ptr, shape, dtype, 1, bo.mem, bo_final.mem, 0,
                                        ffi.NULL, last), "nabla_reorder (out)")
            _release_event(done[0])
            done = last
        if kind == "numpy":
            T.download(ctx, bo_final, result, "out", done)
            _release_event(done[0])
        else:
            T.adopt_event(done[0], [result])
        return result
    finally:
        staged.close()


def _release_event(e: Any) -> None:
    from ._ffi import cl

    if e != ffi.NULL:
        cl.clReleaseEvent(e)


def mask(q: Any, k: Any, algo: str = "nabla-0.7", grid: T.Grid = None, order: str = "tile", *,
         context: Optional[Context] = None) -> Mask:
    """The block mask of ``algo`` from Q and K alone ([B, H, S, D], NumPy or pyopencl), built on
    the device; arguments as :func:`attention`. Masks are over blocks in tile order, also for
    raster-order inputs (which are reordered on the device first)."""
    kind, shape, dtype, raster, ctx = _prepare([q, k], ["q", "k"], grid, order, context)
    algo_s = T.parse_algo(algo)
    staged = _Staged(ctx)
    try:
        nw, wl, _keep = T.wait_list([q, k])
        bq = staged.input(kind, q, "q", shape, dtype, raster, (nw, wl))
        bk = staged.input(kind, k, "k", shape, dtype, raster, (nw, wl))
        out = ffi.new("nabla_mask **")
        ctx.check(lib.nabla_mask_build(ctx.ptr, algo_s, shape, dtype, bq.mem, bk.mem, out, nw, wl,
                                       ffi.NULL), "nabla_mask_build")
        # Releasing the input buffers below is safe: OpenCL keeps them until the build ends.
        return Mask(ctx, out[0], shape)
    finally:
        staged.close()


def reorder(x: Any, grid: Tuple[int, int, int], inverse: bool = False, *, out: Any = None,
            context: Optional[Context] = None) -> Any:
    """Raster → tile token order of a video tensor [B, H, T*H*W, D] (``inverse``: tile →
    raster), on the device. NumPy or pyopencl, like :func:`attention`."""
    arrays = [x] + ([out] if out is not None else [])
    names = ["x"] + (["out"] if out is not None else [])
    if grid is None:
        raise InvalidArgument("grid: reorder needs the video grid (T, H, W)")
    kind, shape, dtype, _raster, ctx = _prepare(arrays, names, grid, "tile", context)
    result = out if out is not None else _new_like(kind, x)
    staged = _Staged(ctx)
    try:
        nw, wl, _keep = T.wait_list(arrays)
        src = staged.input(kind, x, "x", shape, dtype, False, (nw, wl))
        dst = staged.add(T.borrow(ctx, result, "out") if kind == "pyopencl"
                         else T.Buffer.new(ctx, x.nbytes, "out"))
        done = ffi.new("cl_event *")
        ctx.check(lib.nabla_reorder(ctx.ptr, shape, dtype, 1 if inverse else 0, src.mem, dst.mem,
                                    nw, wl, done), "nabla_reorder")
        if kind == "numpy":
            T.download(ctx, dst, result, "out", done)
            _release_event(done[0])
        else:
            T.adopt_event(done[0], [result])
        return result
    finally:
        staged.close()
