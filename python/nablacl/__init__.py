"""nablacl: NABLA block-sparse attention on any OpenCL device, from Python.

    import numpy as np, nablacl
    q, k, v = (np.random.randn(1, 2, 4 * 32 * 48, 64).astype(np.float32) for _ in range(3))
    o = nablacl.attention(q, k, v, algo="nabla-0.7", grid=(4, 32, 48))   # tile order
    m = nablacl.mask(q, k, algo="nabla-0.7", grid=(4, 32, 48))
    m.density, m.kv_num_blocks, m.kv_indices                           # FlexAttention layout

NumPy arrays are copied to the device and back; pyopencl arrays are used in place (see
:class:`Context.from_pyopencl`). PyTorch CUDA tensors: :mod:`nablacl.torch`. Errors raise
:class:`NablaError` subclasses carrying the library's status and message.
"""
from __future__ import annotations

from ._ffi import ffi as _ffi_mod, lib as _lib
from .context import (Context, DeviceInfo, default_context, devices, knobs, set_default_context,
                      variant_names)
from .errors import (BufferTooSmall, BuildError, FileError, InvalidArgument, NablaError, NoDevice,
                     NotFound, OpenCLError, OutOfMemory, Unsupported)
from .ops import Mask, attention, mask, reorder
from .picture import mask_image

__version__ = _ffi_mod.string(_lib.nabla_version_string()).decode()

__all__ = [
    "Context", "DeviceInfo", "Mask", "attention", "default_context", "devices", "knobs", "mask",
    "mask_image", "reorder", "set_default_context", "variant_names", "NablaError", "InvalidArgument", "OutOfMemory",
    "OpenCLError", "BuildError", "Unsupported", "NoDevice", "BufferTooSmall", "FileError",
    "NotFound", "__version__",
]
