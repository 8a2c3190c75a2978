"""Devices and contexts.

A :class:`Context` owns (or borrows) an OpenCL context, device and in-order queue, plus the
library's caches of compiled kernels and scratch buffers. Like the C context it is used by one
thread at a time: :func:`default_context` keeps one per thread, created on first use on the
device ``NABLACL_DEVICE`` names (else the first GPU, else a CPU).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from ._ffi import ffi, lib, string
from .errors import InvalidArgument, NablaError, error_for


@dataclass(frozen=True)
class DeviceInfo:
    """One OpenCL device, as ``nablacl devices`` lists it (``index`` is what a selector takes)."""

    index: int
    platform: str
    name: str
    vendor: str
    driver: str
    opencl_c: str
    type: str
    compute_units: int
    global_mem: int
    local_mem: int
    fp16: bool
    fp64: bool
    subgroups: bool


def devices() -> List[DeviceInfo]:
    """Every OpenCL device of every platform, in the order device selectors index them."""
    count = ffi.new("size_t *")
    _check_plain(lib.nabla_devices_list(ffi.NULL, 0, count), "nabla_devices_list")
    n = int(count[0])
    if n == 0:
        return []
    infos = ffi.new("nabla_device_info[]", n)
    _check_plain(lib.nabla_devices_list(infos, n, count), "nabla_devices_list")
    out = []
    for d in infos[0:min(n, int(count[0]))]:
        out.append(DeviceInfo(
            index=d.index, platform=string(d.platform), name=string(d.name),
            vendor=string(d.vendor), driver=string(d.driver), opencl_c=string(d.opencl_c),
            type=string(d.type), compute_units=int(d.compute_units),
            global_mem=int(d.global_mem), local_mem=int(d.local_mem), fp16=bool(d.fp16),
            fp64=bool(d.fp64), subgroups=bool(d.subgroups)))
    return out


def variant_names() -> List[str]:
    """Every attention variant name ("auto" first), as variant= and NABLACL_VARIANT take them."""
    return [n.strip() for n in string(lib.nabla_variant_names()).split(",")]


def knobs() -> Dict[str, str]:
    """The kernels' knobs: name -> one line on what it takes and does."""
    out = {}
    buf = ffi.new("char[]", 1024)
    i = 0
    while lib.nabla_knob_describe(i, buf, 1024) == 0:
        line = string(buf)
        out[line.split("\t", 1)[0]] = line
        i += 1
    return out


def _check_plain(status: int, what: str) -> None:
    if status != 0:
        raise error_for(status, f"{what}: {string(lib.nabla_status_str(status))}")


def _handle(obj: Any) -> Any:
    """A cl_* handle from a pyopencl object (``int_ptr``), an int address or a cffi pointer."""
    if obj is None:
        return ffi.NULL
    if isinstance(obj, ffi.CData):
        return ffi.cast("void *", obj)
    ptr = getattr(obj, "int_ptr", obj)
    if not isinstance(ptr, int):
        raise InvalidArgument(f"expected an OpenCL handle (pyopencl object or int), got {type(obj).__name__}")
    return ffi.cast("void *", ptr)


class Context:
    """A nablacl context on one OpenCL device.

    ``Context()`` picks the device like the C library (``NABLACL_DEVICE``, else the first GPU,
    else the first CPU); ``Context("pocl")`` or ``Context(0)`` select by name substring or index.
    ``variant`` forces an attention kernel variant ("portable", "cpu-rows", ...; None: automatic),
    ``knobs`` sets the kernels' developer knobs (``{"WG_BULK": 1}``; :func:`knobs` lists them)
    and ``profile`` turns on per-stage profiling (:meth:`profile_report`).

    Use :meth:`from_cl` / :meth:`from_pyopencl` to run on your own OpenCL context and queue, so
    that pyopencl arrays are used in place. Close with :meth:`close` or a ``with`` block;
    otherwise the context is destroyed when garbage-collected.
    """

    def __init__(self, device: Union[str, int, None] = None, *, variant: Optional[str] = None,
                 knobs: Optional[Mapping[str, Any]] = None, profile: bool = False) -> None:
        self._ptr: Any = ffi.NULL
        self._owner_thread = threading.get_ident()
        self._keep: List[Any] = []  # borrowed pyopencl objects, kept alive with the context
        out = ffi.new("nabla_context **")
        err = ffi.new("char[]", 1024)
        selector = ffi.NULL if device is None else str(device).encode()
        st = lib.nabla_context_create(out, selector, err, 1024)
        if st != 0:
            raise error_for(st, string(err))
        self._ptr = out[0]
        self._configure(variant, knobs, profile)

    @classmethod
    def from_cl(cls, cl_context: Any, device: Any, queue: Any, *, variant: Optional[str] = None,
                knobs: Optional[Mapping[str, Any]] = None, profile: bool = False) -> "Context":
        """A context on the caller's OpenCL objects (pyopencl objects or integer handles),
        which are retained until :meth:`close`. The queue must be in-order."""
        self = cls.__new__(cls)
        self._ptr = ffi.NULL
        self._owner_thread = threading.get_ident()
        self._keep = [cl_context, device, queue]
        out = ffi.new("nabla_context **")
        err = ffi.new("char[]", 1024)
        st = lib.nabla_context_create_from_cl(out, _handle(cl_context), _handle(device),
                                              _handle(queue), err, 1024)
        if st != 0:
            raise error_for(st, string(err))
        self._ptr = out[0]
        self._configure(variant, knobs, profile)
        return self

    @classmethod
    def from_pyopencl(cls, queue: Any, **options: Any) -> "Context":
        """A context on a pyopencl ``CommandQueue`` (its context and device): pyopencl arrays
        of that context go in and out without copies."""
        return cls.from_cl(queue.context, queue.device, queue, **options)

    def _configure(self, variant: Optional[str], knobs: Optional[Mapping[str, Any]],
                   profile: bool) -> None:
        try:
            for name, value in (knobs or {}).items():
                self.set_knob(name, value)
            if variant is not None:
                self.force_variant(variant)
            if profile:
                self.check(lib.nabla_profile_enable(self._ptr, 1), "nabla_profile_enable")
        except BaseException:
            self.close()
            raise

    # ---- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Finishes the queue and destroys the context (idempotent)."""
        if self._ptr != ffi.NULL:
            lib.nabla_context_destroy(self._ptr)
            self._ptr = ffi.NULL
            self._keep = []

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    @property
    def ptr(self) -> Any:
        """The ``nabla_context *`` (cffi pointer); raises if the context is closed."""
        if self._ptr == ffi.NULL:
            raise InvalidArgument("the context is closed")
        return self._ptr

    # ---- errors ----------------------------------------------------------------------------

    @property
    def last_error(self) -> str:
        """Text of the last failure on this context ("" if none)."""
        return string(lib.nabla_last_error(self.ptr))

    def check(self, status: int, what: str) -> None:
        """Raises the exception of a non-OK status, with the context's last-error message."""
        if status != 0:
            msg = self.last_error or string(lib.nabla_status_str(status))
            raise error_for(status, f"{what}: {msg}")

    # ---- OpenCL objects and identity -------------------------------------------------------

    @property
    def cl_context(self) -> int:
        """The OpenCL context handle (an address; ``pyopencl.Context.from_int_ptr`` takes it)."""
        return int(ffi.cast("uintptr_t", lib.nabla_context_cl_context(self.ptr)))

    @property
    def cl_device(self) -> int:
        """The OpenCL device handle."""
        return int(ffi.cast("uintptr_t", lib.nabla_context_device(self.ptr)))

    @property
    def cl_queue(self) -> int:
        """The in-order command queue every operation is enqueued on."""
        return int(ffi.cast("uintptr_t", lib.nabla_context_queue(self.ptr)))

    @property
    def device_key(self) -> str:
        """Hex identity of the device (platform, device, driver, versions)."""
        return string(lib.nabla_context_device_key(self.ptr))

    @property
    def cache_dir(self) -> Optional[str]:
        """Directory of the on-disk caches, or None when caching is off (NABLACL_CACHE_DIR=off)."""
        p = lib.nabla_context_cache_dir(self.ptr)
        return None if p == ffi.NULL else string(p)

    @property
    def device_name(self) -> str:
        """The OpenCL device's name."""
        from ._ffi import cl  # CL_DEVICE_NAME = 0x102B
        size = ffi.new("size_t *")
        dev = lib.nabla_context_device(self.ptr)
        if cl.clGetDeviceInfo(dev, 0x102B, 0, ffi.NULL, size) != 0:
            return ""
        buf = ffi.new("char[]", int(size[0]) + 1)
        cl.clGetDeviceInfo(dev, 0x102B, int(size[0]), buf, ffi.NULL)
        return string(buf)

    # ---- variants, profiling, scratch ------------------------------------------------------

    def variants(self) -> List[str]:
        """Attention variants this device supports (runs their probes once)."""
        buf = ffi.new("char[]", 512)
        self.check(lib.nabla_variant_list(self.ptr, buf, 512), "nabla_variant_list")
        return string(buf).split()

    def force_variant(self, variant: Optional[str]) -> None:
        """Forces an attention variant for later calls (None or "auto": automatic choice)."""
        name = ffi.NULL if variant is None else variant.encode()
        self.check(lib.nabla_variant_force(self.ptr, name), "nabla_variant_force")

    def set_knob(self, name: str, value: Any) -> None:
        """Sets a kernel knob ("WG_BULK", "MMA_QPW", ...; None restores its default)."""
        v = ffi.NULL if value is None else str(value).encode()
        self.check(lib.nabla_knob_set(self.ptr, name.encode(), v), f"knob {name}")

    def knob(self, name: str) -> str:
        """A knob's value on this context ("" when unset: the kernels' default)."""
        buf = ffi.new("char[]", 256)
        self.check(lib.nabla_knob_get(self.ptr, name.encode(), buf, 256), f"knob {name}")
        return string(buf)

    @property
    def last_variant(self) -> str:
        """The attention variant of the last launch ("" before the first)."""
        return string(lib.nabla_variant_last(self.ptr))

    @property
    def variant_note(self) -> str:
        """Why the last variant decision did not get the preferred variant ("" if it did)."""
        return string(lib.nabla_variant_note(self.ptr))

    def profile_report(self) -> dict:
        """Milliseconds per stage since profiling was enabled or last reported (waits)."""
        buf = ffi.new("char[]", 4096)
        self.check(lib.nabla_profile_report(self.ptr, buf, 4096), "nabla_profile_report")
        out = {}
        for line in string(buf).splitlines():
            name, _, ms = line.partition(" ")
            if ms:
                out[name] = float(ms)
        return out

    def trim(self) -> int:
        """Gives back the context's scratch device buffers; returns the bytes released."""
        freed = ffi.new("size_t *")
        self.check(lib.nabla_context_trim(self.ptr, freed), "nabla_context_trim")
        return int(freed[0])

    def finish(self) -> None:
        """Waits for everything enqueued on the context's queue."""
        from ._ffi import cl
        code = cl.clFinish(lib.nabla_context_queue(self.ptr))
        if code != 0:
            raise error_for(-3, f"clFinish failed ({code})")

    def __repr__(self) -> str:
        if self._ptr == ffi.NULL:
            return "<nablacl.Context closed>"
        return f"<nablacl.Context {self.device_name!r}>"


_local = threading.local()


def default_context() -> Context:
    """This thread's default context, created on first use (``NABLACL_DEVICE`` picks it)."""
    ctx = getattr(_local, "ctx", None)
    if ctx is None or ctx._ptr == ffi.NULL:
        ctx = Context()
        _local.ctx = ctx
    return ctx


def set_default_context(ctx: Optional[Context]) -> None:
    """Replaces this thread's default context (None: create a new one on next use)."""
    _local.ctx = ctx


__all__ = ["Context", "DeviceInfo", "devices", "default_context", "knobs", "set_default_context",
           "variant_names", "NablaError"]
