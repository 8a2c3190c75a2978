"""CUDA memory that OpenCL can import: the driver's virtual-memory API through cffi.

An allocation made with cuMemCreate(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) is mapped into
the CUDA address space of the current (PyTorch's primary) context and exported as a file
descriptor, which OpenCL imports (cl_khr_external_memory_opaque_fd) as a cl_mem over the same
device memory. libcuda.so.1 is opened on first use; nothing here runs at import time.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import cffi

from .errors import OpenCLError, Unsupported

ffi = cffi.FFI()
ffi.cdef(
    r"""
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct CUctx_st *CUcontext;
typedef struct { int type; int id; } CUmemLocation;
typedef struct {
  int type;
  int requestedHandleTypes;
  CUmemLocation location;
  void *win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
} CUmemAllocationProp;
typedef struct { CUmemLocation location; int flags; } CUmemAccessDesc;
typedef struct { char bytes[16]; } CUuuid;

CUresult cuInit(unsigned int flags);
CUresult cuDeviceGet(CUdevice *device, int ordinal);
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev);
CUresult cuCtxGetCurrent(CUcontext *pctx);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuGetErrorName(CUresult error, const char **pstr);
CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop, int option);
CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                     unsigned long long flags);
CUresult cuMemRelease(CUmemGenericAllocationHandle handle);
CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags);
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags);
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count);
CUresult cuMemExportToShareableHandle(void *shareableHandle, CUmemGenericAllocationHandle handle,
                                      int handleType, unsigned long long flags);
"""
)

CU_MEM_ALLOCATION_TYPE_PINNED = 1
CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1
CU_MEM_LOCATION_TYPE_DEVICE = 1
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1

_driver: Optional[Any] = None


def driver() -> Any:
    """libcuda.so.1, initialised (Unsupported where there is no CUDA driver)."""
    global _driver
    if _driver is None:
        try:
            drv = ffi.dlopen("libcuda.so.1")
        except OSError as e:
            raise Unsupported(f"the CUDA driver (libcuda.so.1) cannot be opened: {e}") from None
        check(drv, drv.cuInit(0), "cuInit")
        _driver = drv
    return _driver


def check(drv: Any, res: int, what: str) -> None:
    if res != 0:
        name = ffi.new("const char **")
        text = "CUDA error %d" % res
        if drv.cuGetErrorName(res, name) == 0 and name[0] != ffi.NULL:
            text = ffi.string(name[0]).decode()
        raise OpenCLError(f"{what} failed: {text}")


def device_uuid(ordinal: int) -> bytes:
    """The 16-byte UUID of CUDA device `ordinal` (what OpenCL's CL_DEVICE_UUID_KHR reports)."""
    drv = driver()
    dev = ffi.new("CUdevice *")
    check(drv, drv.cuDeviceGet(dev, ordinal), "cuDeviceGet")
    uuid = ffi.new("CUuuid *")
    check(drv, drv.cuDeviceGetUuid(uuid, dev[0]), "cuDeviceGetUuid")
    return bytes(ffi.buffer(uuid, 16))


class CurrentContext:
    """Keeps the calling thread's current CUDA context (PyTorch's) across OpenCL calls: a
    driver that leaves its own context current would otherwise receive PyTorch's later work."""

    def __init__(self) -> None:
        self._drv = driver()
        cur = ffi.new("CUcontext *")
        check(self._drv, self._drv.cuCtxGetCurrent(cur), "cuCtxGetCurrent")
        self._saved = cur[0]
        self._probe = ffi.new("CUcontext *")

    def restore(self) -> None:
        if self._drv.cuCtxGetCurrent(self._probe) == 0 and self._probe[0] != self._saved:
            check(self._drv, self._drv.cuCtxSetCurrent(self._saved), "cuCtxSetCurrent")


class SharedAllocation:
    """Device memory of at least `nbytes` on CUDA device `ordinal`, mapped at ``ptr`` in the
    current CUDA context and exportable as a file descriptor. ``size`` is the rounded size."""

    def __init__(self, nbytes: int, ordinal: int) -> None:
        drv = driver()
        self._drv = drv
        self.ptr = 0
        self._handle: Optional[int] = None
        self._mapped = False
        cur = ffi.new("CUcontext *")
        check(drv, drv.cuCtxGetCurrent(cur), "cuCtxGetCurrent")
        if cur[0] == ffi.NULL:
            raise Unsupported("no current CUDA context: initialise the device first "
                              "(e.g. torch.cuda.init() and a tensor on it)")
        prop = ffi.new("CUmemAllocationProp *")
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = ordinal
        gran = ffi.new("size_t *")
        check(drv, drv.cuMemGetAllocationGranularity(gran, prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
              "cuMemGetAllocationGranularity")
        g = max(int(gran[0]), 1)
        self.size = (max(nbytes, 1) + g - 1) // g * g
        try:
            handle = ffi.new("CUmemGenericAllocationHandle *")
            check(drv, drv.cuMemCreate(handle, self.size, prop, 0), f"cuMemCreate({self.size} bytes)")
            self._handle = int(handle[0])
            ptr = ffi.new("CUdeviceptr *")
            check(drv, drv.cuMemAddressReserve(ptr, self.size, g, 0, 0), "cuMemAddressReserve")
            self.ptr = int(ptr[0])
            check(drv, drv.cuMemMap(self.ptr, self.size, 0, self._handle, 0), "cuMemMap")
            self._mapped = True
            access = ffi.new("CUmemAccessDesc *")
            access.location.type = CU_MEM_LOCATION_TYPE_DEVICE
            access.location.id = ordinal
            access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE
            check(drv, drv.cuMemSetAccess(self.ptr, self.size, access, 1), "cuMemSetAccess")
        except BaseException:
            self.close()
            raise

    def export_fd(self) -> int:
        """A new file descriptor for the allocation (the importer takes ownership of it)."""
        if self._handle is None:
            raise OpenCLError("the allocation was released")
        fd = ffi.new("int *")
        check(self._drv, self._drv.cuMemExportToShareableHandle(
            fd, self._handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0), "cuMemExportToShareableHandle")
        return int(fd[0])

    def close(self) -> None:
        """Unmaps and releases (OpenCL's import keeps the memory until it is released too)."""
        drv = self._drv
        if self._mapped:
            drv.cuMemUnmap(self.ptr, self.size)
            self._mapped = False
        if self.ptr:
            drv.cuMemAddressFree(self.ptr, self.size)
            self.ptr = 0
        if self._handle is not None:
            drv.cuMemRelease(self._handle)
            self._handle = None


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
