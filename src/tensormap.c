/* Tensor maps for the wgmma kernel's tensor copies, encoded by the CUDA driver (see tensormap.h). */
#include "tensormap.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <CL/cl_ext.h>

/* The CUDA driver API's calls used here (cuda.h); its enums are int-sized, handles pointers,
 * CUdevice an int, results 0 on success. */
typedef int (*cu_init_fn)(unsigned int flags);
typedef int (*cu_device_get_fn)(int *dev, int ordinal);
typedef int (*cu_device_by_pci_fn)(int *dev, const char *bus_id);
typedef int (*cu_primary_retain_fn)(void **cuctx, int dev);
typedef int (*cu_primary_release_fn)(int dev);
typedef int (*cu_ctx_push_fn)(void *cuctx);
typedef int (*cu_ctx_pop_fn)(void **cuctx);
typedef int (*cu_encode_tiled_fn)(void *map, int data_type, uint32_t rank, void *address, const uint64_t *dims,
                                  const uint64_t *strides, const uint32_t *box, const uint32_t *element_strides,
                                  int interleave, int swizzle, int l2_promotion, int oob_fill);
enum {
  CU_TENSOR_MAP_DATA_TYPE_UINT16 = 1,
  CU_TENSOR_MAP_INTERLEAVE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_128B = 3,
  CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3,
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0, /* zeros */
};

/* The function `name` of the driver into *fn (a function pointer of fn_size bytes); 0 if absent. */
static int driver_sym(void *lib, const char *name, void *fn, size_t fn_size) {
  void *sym = dlsym(lib, name);
  memcpy(fn, &sym, fn_size); /* POSIX: a dlsym result converts to a function pointer */
  return sym != NULL;
}

/* The CUDA device of the OpenCL device: by PCI address where OpenCL tells it
 * (cl_khr_pci_bus_info), else the first. */
static int cuda_device(nabla_context *ctx, cu_device_get_fn get, cu_device_by_pci_fn by_pci, int *dev) {
  cl_device_pci_bus_info_khr pci;
  char bus_id[32];
  if (by_pci && clGetDeviceInfo(ctx->device, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof pci, &pci, NULL) == CL_SUCCESS) {
    snprintf(bus_id, sizeof bus_id, "%04x:%02x:%02x.%x", pci.pci_domain, pci.pci_bus, pci.pci_device,
             pci.pci_function);
    if (by_pci(dev, bus_id) == 0) return 0;
  }
  return get(dev, 0);
}

/* Opens libcuda.so.1 and retains the device's primary CUDA context (the encoder wants a
 * context), once per nablacl context; the verdict, and why not, is kept. */
static nabla_status open_driver(nabla_context *ctx) {
  nabla_cuda_driver *cu = &ctx->cuda;
  if (!cu->tried) {
    cu->tried = 1;
    cu_init_fn init = NULL;
    cu_device_get_fn get = NULL;
    cu_device_by_pci_fn by_pci = NULL;
    cu_primary_retain_fn retain = NULL;
    int rc = -1;
    cu->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu->lib) {
      snprintf(cu->why, sizeof cu->why, "no CUDA driver library (libcuda.so.1) to encode tensor maps");
    } else if (!driver_sym(cu->lib, "cuInit", &init, sizeof init) ||
               !driver_sym(cu->lib, "cuDeviceGet", &get, sizeof get) ||
               !driver_sym(cu->lib, "cuDevicePrimaryCtxRetain", &retain, sizeof retain) ||
               !driver_sym(cu->lib, "cuDevicePrimaryCtxRelease_v2", &cu->release, sizeof cu->release) ||
               !driver_sym(cu->lib, "cuCtxPushCurrent_v2", &cu->push, sizeof cu->push) ||
               !driver_sym(cu->lib, "cuCtxPopCurrent_v2", &cu->pop, sizeof cu->pop) ||
               !driver_sym(cu->lib, "cuTensorMapEncodeTiled", &cu->encode, sizeof cu->encode)) {
      snprintf(cu->why, sizeof cu->why, "the CUDA driver lacks the tensor-map calls (cuTensorMapEncodeTiled)");
    } else if ((rc = init(0)) != 0) {
      snprintf(cu->why, sizeof cu->why, "cuInit failed (CUresult %d)", rc);
    } else {
      driver_sym(cu->lib, "cuDeviceGetByPCIBusId", &by_pci, sizeof by_pci);
      if ((rc = cuda_device(ctx, get, by_pci, &cu->dev)) != 0)
        snprintf(cu->why, sizeof cu->why, "no CUDA device for the OpenCL device (CUresult %d)", rc);
      else if ((rc = retain(&cu->cuctx, cu->dev)) != 0)
        snprintf(cu->why, sizeof cu->why, "cuDevicePrimaryCtxRetain failed (CUresult %d)", rc);
    }
    if (cu->why[0]) {
      if (cu->lib) dlclose(cu->lib);
      cu->lib = NULL;
      cu->cuctx = NULL;
    }
  }
  return cu->cuctx ? NABLA_OK : nabla_fail(ctx, NABLA_UNSUPPORTED, "%s", cu->why);
}

nabla_status nabla_tensor_map_encode(nabla_context *ctx, uint64_t rows, int head_dim,
                                     unsigned char map[NABLA_TMAP_BYTES]) {
  nabla_status st = NABLA_OK;
  nabla_cuda_driver *cu = &ctx->cuda;
  if (cu->cuctx && cu->map_rows == rows && cu->map_head_dim == head_dim) { /* the last one again */
    memcpy(map, cu->map, NABLA_TMAP_BYTES);
    return NABLA_OK;
  }
  TRY(st, open_driver(ctx));
  /* Any 16-byte-aligned address will do: tmap_bind replaces it on the device. */
  void *placeholder = (void *)(uintptr_t)0x10000;
  const uint64_t dims[2] = {(uint64_t)head_dim, rows}, strides[1] = {(uint64_t)head_dim * 2};
  const uint32_t box[2] = {64, 64}, element_strides[2] = {1, 1};
  cu_encode_tiled_fn encode = NULL;
  cu_ctx_push_fn push = NULL;
  cu_ctx_pop_fn pop = NULL;
  memcpy(&encode, &cu->encode, sizeof encode);
  memcpy(&push, &cu->push, sizeof push);
  memcpy(&pop, &cu->pop, sizeof pop);
  void *popped = NULL;
  _Alignas(128) unsigned char encoded[NABLA_TMAP_BYTES]; /* the driver wants 64-byte alignment */
  int rc = push(cu->cuctx); /* the calling thread's own current context stays as it was */
  if (rc == 0) {
    rc = encode(encoded, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, placeholder, dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    pop(&popped);
  }
  if (rc != 0) {
    cu->map_rows = 0;
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "cuTensorMapEncodeTiled refused a [%llu][%d] map (CUresult %d)",
                    (unsigned long long)rows, head_dim, rc);
    goto done;
  }
  memcpy(cu->map, encoded, NABLA_TMAP_BYTES);
  cu->map_rows = rows;
  cu->map_head_dim = head_dim;
  memcpy(map, encoded, NABLA_TMAP_BYTES);
done:
  return st;
}

void nabla_cuda_driver_release(nabla_context *ctx) {
  nabla_cuda_driver *cu = &ctx->cuda;
  if (cu->cuctx) {
    cu_primary_release_fn release = NULL;
    memcpy(&release, &cu->release, sizeof release);
    release(cu->dev);
  }
  if (cu->lib) dlclose(cu->lib);
  memset(cu, 0, sizeof *cu);
}
