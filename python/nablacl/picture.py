"""The picture of a block mask as an RGB array, for matplotlib (``plt.imshow``).

The pixels are the library's (``nabla_mask_picture``), the same that ``nablacl mask --png``
writes: kept blocks dark blue on white, ``cell`` pixels per block, and beside them each block
row's kept count as an orange bar on grey whose full length stands for all Nb blocks.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np

from . import _tensors as T
from ._ffi import ffi, lib, string
from .errors import InvalidArgument


def mask_image(mask: Union["Any", np.ndarray], batch: int = 0, head: int = 0,
               cell: int = 0) -> np.ndarray:
    """RGB picture [height, width, 3] (uint8) of one (batch, head) of a mask.

    Args:
        mask: a :class:`nablacl.Mask`, or a block bitmap [B, H, Nb, Nb] (non-zero = kept).
        batch, head: which one to draw.
        cell: pixels per block (0: max(1, min(8, 512 // Nb))).
    """
    from .ops import Mask

    if isinstance(mask, Mask):
        bits = mask.bitmap
        shape = mask._shape
    else:
        bits = np.asarray(mask)
        if bits.ndim != 4 or bits.shape[2] != bits.shape[3]:
            raise InvalidArgument(f"mask: expected a Mask or a bitmap [B, H, Nb, Nb], got shape {bits.shape}")
        # Only the block count matters for the picture: a plain sequence of Nb whole blocks.
        shape = T.make_shape((bits.shape[0], bits.shape[1], bits.shape[2] * 64, 64), None)
    bits = np.ascontiguousarray(bits != 0, dtype=np.uint8)
    w, h = ffi.new("int *"), ffi.new("int *")
    err = ffi.new("char[]", 512)
    if lib.nabla_mask_picture(shape, ffi.from_buffer(bits), batch, head, cell, ffi.NULL, 0, w, h,
                              err, 512) != 0:
        raise InvalidArgument(string(err))
    out = np.empty((h[0], w[0], 3), np.uint8)
    st = lib.nabla_mask_picture(shape, ffi.from_buffer(bits), batch, head, cell,
                                ffi.from_buffer(out), out.size, w, h, err, 512)
    if st != 0:
        raise InvalidArgument(string(err) or f"nabla_mask_picture failed with status {st}")
    return out
