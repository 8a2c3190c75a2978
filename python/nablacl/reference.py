"""The library's float64 reference (plain C on the host): the oracle for tests and checks.

Inputs are any real arrays [B, H, S, D] in tile order (bf16 as ml_dtypes.bfloat16 or uint16
bits: see :func:`to_float64`); results are float64. Slow: for small problems.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _tensors as T
from ._ffi import ffi, lib
from .errors import InvalidArgument


def to_float64(x: np.ndarray) -> np.ndarray:
    """float64 values of an array; uint16 is taken as bf16 bits (the package's convention)."""
    x = np.asarray(x)
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def _doubles(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(to_float64(x))


def mask(q: np.ndarray, k: np.ndarray, algo: str = "nabla-0.7",
         grid: T.Grid = None, eps: float = 1e-6) -> Tuple[np.ndarray, np.ndarray]:
    """The float64 block mask [B, H, Nb, Nb] (uint8) and the rows [B, H, Nb] an fp32
    implementation may decide differently (within ``eps`` of the threshold, or ties)."""
    qd, kd = _doubles(q), _doubles(k)
    if qd.shape != kd.shape or qd.ndim != 4:
        raise InvalidArgument(f"q and k: expected one [B, H, S, D] shape, got {qd.shape} and {kd.shape}")
    shape = T.make_shape(qd.shape, grid)
    a = T.parse_algo(algo)
    nb = int(lib.nabla_shape_blocks(shape))
    bits = np.zeros((qd.shape[0], qd.shape[1], nb, nb), np.uint8)
    near = np.zeros((qd.shape[0], qd.shape[1], nb), np.uint8)
    st = lib.nabla_ref_mask(shape, a, ffi.cast("double *", ffi.from_buffer(qd)),
                            ffi.cast("double *", ffi.from_buffer(kd)), ffi.from_buffer(bits),
                            ffi.from_buffer(near), eps)
    if st != 0:
        raise InvalidArgument(f"nabla_ref_mask failed with status {st}")
    return bits, near


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, bitmap: Optional[np.ndarray],
              grid: T.Grid = None) -> np.ndarray:
    """float64 attention over the kept blocks of ``bitmap`` [B, H, Nb, Nb] (None: dense)."""
    qd, kd, vd = _doubles(q), _doubles(k), _doubles(v)
    shape = T.make_shape(qd.shape, grid)
    out = np.empty(qd.shape, np.float64)
    dp = lambda a: ffi.cast("double *", ffi.from_buffer(a))  # noqa: E731
    if bitmap is None:
        lib.nabla_ref_attention_dense(shape, dp(qd), dp(kd), dp(vd), dp(out))
        return out
    bits = np.ascontiguousarray(bitmap != 0, dtype=np.uint8)
    nb = int(lib.nabla_shape_blocks(shape))
    if bits.shape != (qd.shape[0], qd.shape[1], nb, nb):
        raise InvalidArgument(f"bitmap: expected {(qd.shape[0], qd.shape[1], nb, nb)}, got {bits.shape}")
    row_ptr = np.empty(qd.shape[0] * qd.shape[1] * nb + 1, np.int32)
    col_idx = np.empty(max(int(bits.sum()), 1), np.int32)
    lib.nabla_ref_csr(shape, ffi.from_buffer(bits), ffi.cast("int32_t *", ffi.from_buffer(row_ptr)),
                      ffi.cast("int32_t *", ffi.from_buffer(col_idx)))
    lib.nabla_ref_attention_sparse(shape, dp(qd), dp(kd), dp(vd),
                                   ffi.cast("int32_t *", ffi.from_buffer(row_ptr)),
                                   ffi.cast("int32_t *", ffi.from_buffer(col_idx)), dp(out))
    return out


def reorder(x: np.ndarray, grid: Tuple[int, int, int], inverse: bool = False) -> np.ndarray:
    """Raster → tile order (``inverse``: tile → raster) in float64."""
    xd = _doubles(x)
    shape = T.make_shape(xd.shape, grid)
    out = np.empty_like(xd)
    lib.nabla_ref_reorder(shape, 1 if inverse else 0, ffi.cast("double *", ffi.from_buffer(xd)),
                          ffi.cast("double *", ffi.from_buffer(out)))
    return out
