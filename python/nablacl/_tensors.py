"""Host (NumPy) and device (pyopencl) tensors as the library sees them: checked, then cl_mem.

Everything here runs before anything is uploaded or enqueued, so a bad argument raises
InvalidArgument with nothing done.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ._ffi import CL_MEM_CONTEXT, CL_MEM_READ_WRITE, cl, ffi, lib, string
from .context import Context
from .errors import InvalidArgument, error_for

F32, F16, BF16 = 0, 1, 2
DTYPE_NAMES = {F32: "f32", F16: "f16", BF16: "bf16"}

try:  # bf16 as its own NumPy type when ml_dtypes is installed; uint16 words otherwise
    import ml_dtypes as _ml_dtypes

    BFLOAT16: Optional[np.dtype] = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised where ml_dtypes is absent
    BFLOAT16 = None

Grid = Optional[Tuple[int, int, int]]


def nabla_dtype(dtype: np.dtype, name: str) -> int:
    """The library's storage type of a NumPy dtype: float32, float16, and bf16 given either as
    ml_dtypes.bfloat16 or as uint16 words holding the bits."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return F32
    if dtype == np.float16:
        return F16
    if dtype == np.uint16 or (BFLOAT16 is not None and dtype == BFLOAT16):
        return BF16
    raise InvalidArgument(
        f"{name}: dtype {dtype} is not supported (float32, float16, or bf16 as "
        "ml_dtypes.bfloat16 or uint16 words)")


def is_pyopencl(x: Any) -> bool:
    return type(x).__module__.startswith("pyopencl") and hasattr(x, "base_data")


def kind_of(arrays: Sequence[Any], names: Sequence[str]) -> str:
    """"numpy" or "pyopencl", the same for all; anything else is refused."""
    kinds = []
    for a, n in zip(arrays, names):
        if isinstance(a, np.ndarray):
            kinds.append("numpy")
        elif is_pyopencl(a):
            kinds.append("pyopencl")
        else:
            raise InvalidArgument(
                f"{n}: expected a numpy.ndarray or a pyopencl.array.Array, got {type(a).__name__}")
    if len(set(kinds)) != 1:
        raise InvalidArgument(
            "inputs mix NumPy and pyopencl arrays ("
            + ", ".join(f"{n}: {k}" for n, k in zip(names, kinds)) + "); pass one kind")
    return kinds[0]


def check_tensors(arrays: Sequence[Any], names: Sequence[str]) -> Tuple[Tuple[int, ...], np.dtype]:
    """Same 4-D shape, same supported dtype, C-contiguous; returns the shape and dtype."""
    first = arrays[0]
    for a, n in zip(arrays, names):
        if a.ndim != 4:
            raise InvalidArgument(f"{n}: expected 4 dimensions [B, H, S, D], got shape {tuple(a.shape)}")
        nabla_dtype(a.dtype, n)
        if not a.flags.c_contiguous:
            raise InvalidArgument(
                f"{n}: the array is not C-contiguous (strides {a.strides}); pass "
                "numpy.ascontiguousarray(x) or a contiguous copy")
        if is_pyopencl(a) and a.offset != 0:
            raise InvalidArgument(f"{n}: a pyopencl array view with offset {a.offset}; pass a whole array")
        if tuple(a.shape) != tuple(first.shape):
            raise InvalidArgument(
                f"{n}: shape {tuple(a.shape)} differs from {names[0]}'s {tuple(first.shape)}")
        if a.dtype != first.dtype:
            raise InvalidArgument(f"{n}: dtype {a.dtype} differs from {names[0]}'s {first.dtype}")
    return tuple(int(s) for s in first.shape), np.dtype(first.dtype)


def make_shape(shape4: Sequence[int], grid: Grid) -> Any:
    """A checked nabla_shape (video when grid is given, else a plain sequence)."""
    s = ffi.new("nabla_shape *")
    s.batch, s.heads, s.seq, s.head_dim = (int(x) for x in shape4)
    if grid is not None:
        g = tuple(int(x) for x in grid)
        if len(g) != 3:
            raise InvalidArgument(f"grid: expected (T, H, W), got {grid!r}")
        s.grid_t, s.grid_h, s.grid_w = g
    err = ffi.new("char[]", 512)
    if lib.nabla_shape_check(s, err, 512) != 0:
        raise InvalidArgument(string(err))
    return s


def parse_algo(text: str) -> Any:
    if not isinstance(text, str):
        raise InvalidArgument(f"algo: expected a string such as 'nabla-0.7', got {type(text).__name__}")
    a = ffi.new("nabla_algo *")
    err = ffi.new("char[]", 512)
    if lib.nabla_algo_parse(text.encode(), a, err, 512) != 0:
        raise InvalidArgument(string(err))
    return a


def check_order(order: str) -> bool:
    """True for raster order."""
    if order not in ("tile", "raster"):
        raise InvalidArgument(f"order: expected 'tile' or 'raster', got {order!r}")
    return order == "raster"


class Buffer:
    """A cl_mem, owned (released on close) or borrowed from a pyopencl array."""

    def __init__(self, mem: Any, nbytes: int, owned: bool) -> None:
        self.mem, self.nbytes, self.owned = mem, nbytes, owned

    @classmethod
    def new(cls, ctx: Context, nbytes: int, what: str) -> "Buffer":
        code = ffi.new("cl_int *")
        mem = cl.clCreateBuffer(lib.nabla_context_cl_context(ctx.ptr), CL_MEM_READ_WRITE,
                                max(nbytes, 1), ffi.NULL, code)
        if code[0] != 0 or mem == ffi.NULL:
            raise error_for(-2 if code[0] in (-4, -5, -6, -61) else -3,
                            f"clCreateBuffer for {what} ({nbytes} bytes) failed with CL error {code[0]}")
        return cls(mem, nbytes, True)

    def close(self) -> None:
        if self.owned and self.mem != ffi.NULL:
            cl.clReleaseMemObject(self.mem)
        self.mem = ffi.NULL


def host_bytes(a: np.ndarray) -> Any:
    return ffi.from_buffer(a.reshape(-1).view(np.uint8))


def upload(ctx: Context, a: np.ndarray, what: str) -> Buffer:
    """A new device buffer holding the array (blocking write)."""
    buf = Buffer.new(ctx, a.nbytes, what)
    code = cl.clEnqueueWriteBuffer(lib.nabla_context_queue(ctx.ptr), buf.mem, 1, 0, a.nbytes,
                                   host_bytes(a), 0, ffi.NULL, ffi.NULL)
    if code != 0:
        buf.close()
        raise error_for(-3, f"clEnqueueWriteBuffer of {what} failed with CL error {code}")
    return buf


def download(ctx: Context, buf: Buffer, out: np.ndarray, what: str,
             wait: Optional[Any] = None) -> None:
    """Blocking read of a device buffer into a C-contiguous array."""
    n, w = (1, wait) if wait is not None else (0, ffi.NULL)
    code = cl.clEnqueueReadBuffer(lib.nabla_context_queue(ctx.ptr), buf.mem, 1, 0, out.nbytes,
                                  host_bytes(out), n, w, ffi.NULL)
    if code != 0:
        raise error_for(-3, f"clEnqueueReadBuffer of {what} failed with CL error {code}")


def borrow(ctx: Context, a: Any, name: str) -> Buffer:
    """The cl_mem of a pyopencl array, which must live in the context's OpenCL context."""
    mem = ffi.cast("cl_mem", a.base_data.int_ptr)
    owner = ffi.new("cl_context *")
    code = cl.clGetMemObjectInfo(mem, CL_MEM_CONTEXT, ffi.sizeof("cl_context"), owner, ffi.NULL)
    if code != 0:
        raise InvalidArgument(f"{name}: not a valid OpenCL buffer (CL error {code})")
    if owner[0] != lib.nabla_context_cl_context(ctx.ptr):
        raise InvalidArgument(
            f"{name}: the pyopencl array belongs to another OpenCL context than the nablacl "
            "context; use nablacl.Context.from_pyopencl(array.queue)")
    return Buffer(mem, int(a.nbytes), False)


def wait_list(arrays: Sequence[Any]) -> Tuple[int, Any, List[Any]]:
    """The pending pyopencl events of the arrays as a cl_event[] (count, array, keep-alive)."""
    events = [e for a in arrays if is_pyopencl(a) for e in getattr(a, "events", [])]
    if not events:
        return 0, ffi.NULL, []
    arr = ffi.new("cl_event[]", [ffi.cast("cl_event", e.int_ptr) for e in events])
    return len(events), arr, events


def adopt_event(event_ptr: Any, outputs: Sequence[Any]) -> None:
    """Hands a finished-enqueue event to pyopencl outputs (their later users wait on it)."""
    if event_ptr == ffi.NULL:
        return
    import pyopencl as pcl

    evt = pcl.Event.from_int_ptr(int(ffi.cast("uintptr_t", event_ptr)), retain=False)
    for o in outputs:
        o.add_event(evt)
