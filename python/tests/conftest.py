"""Shared fixtures: one nablacl context per test module on the default device (PoCL in CI),
a fresh random generator per test, and inputs rounded to the storage type."""
from __future__ import annotations

import os

import numpy as np
import pytest

import nablacl

# The library's disk cache goes to a scratch directory, never the user's home.
os.environ.setdefault("NABLACL_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache"))

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None


@pytest.fixture(scope="module")
def ctx():
    if not nablacl.devices():
        pytest.skip("no OpenCL device")
    c = nablacl.Context()
    yield c
    c.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def to_storage(x: np.ndarray, kind: str) -> np.ndarray:
    """float32 values as the storage type: 'f32', 'f16', 'bf16' (uint16 bits) or 'bf16ml'."""
    if kind == "f32":
        return x.astype(np.float32)
    if kind == "f16":
        return x.astype(np.float16)
    bits = x.astype(np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # nearest even
    if kind == "bf16":
        return rounded
    assert ml_dtypes is not None
    return rounded.view(ml_dtypes.bfloat16)


def video_inputs(rng, shape, grid, kind, structured=True):
    """Q, K, V with block structure (smooth in the grid) so that masks are not uniform."""
    b, h, s, d = shape
    x = rng.standard_normal((3, b, h, s, d)).astype(np.float32)
    if structured:
        base = rng.standard_normal((3, b, h, 1, d)).astype(np.float32) * 2.0
        pos = np.linspace(0.0, 3.0, s, dtype=np.float32)[None, None, None, :, None]
        x = x + base * np.sin(pos * (1.0 + np.arange(d, dtype=np.float32) / d))
    return tuple(to_storage(t, kind) for t in x)


TOL = {"f32": 2e-5, "f16": 3e-3, "bf16": 2e-2, "bf16ml": 2e-2}
