/* Tensor maps for the wgmma kernel's tensor copies, encoded by the CUDA driver (see tensormap.h).
 * Why a cached template per head dim rather than an encoding per call: holding CUDA's primary
 * context (the encoder needs it) for a context's life cost 524 MiB and 240 ms per process (H200);
 * with the template a small problem's process took 321 ms (345 with rows staged), at the same
 * peak memory. */
#include "tensormap.h"

#include "diskcache.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CL/cl_ext.h>

_Static_assert(sizeof ((nabla_cuda_driver *)0)->tmpl[0] == NABLA_TMAP_BYTES, "a template slot holds one map");

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

/* Opens libcuda.so.1 and finds the CUDA device of the OpenCL device, once per nablacl context;
 * the verdict, and why not, is kept. */
static nabla_status open_driver(nabla_context *ctx) {
  nabla_cuda_driver *cu = &ctx->cuda;
  if (!cu->tried) {
    cu->tried = 1;
    cu_init_fn init = NULL;
    cu_device_get_fn get = NULL;
    cu_device_by_pci_fn by_pci = NULL;
    int rc = -1;
    cu->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu->lib) {
      snprintf(cu->why, sizeof cu->why, "no CUDA driver library (libcuda.so.1) to encode tensor maps");
    } else if (!driver_sym(cu->lib, "cuInit", &init, sizeof init) ||
               !driver_sym(cu->lib, "cuDeviceGet", &get, sizeof get) ||
               !driver_sym(cu->lib, "cuDevicePrimaryCtxRetain", &cu->retain, sizeof cu->retain) ||
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
    }
    if (cu->why[0]) {
      if (cu->lib) dlclose(cu->lib);
      cu->lib = NULL;
    }
  }
  return cu->lib ? NABLA_OK : nabla_fail(ctx, NABLA_UNSUPPORTED, "%s", cu->why);
}

/* Has the driver encode the template of head_dim into map, in the device's primary CUDA context,
 * retained for the call alone. *refused is set when the encoder itself said no (a lasting
 * verdict); a context that could not be retained or made current may be had later. */
static nabla_status encode_template(nabla_context *ctx, int head_dim, unsigned char map[NABLA_TMAP_BYTES],
                                    int *refused) {
  nabla_status st = NABLA_OK;
  nabla_cuda_driver *cu = &ctx->cuda;
  TRY(st, open_driver(ctx));
  /* Any 16-byte-aligned address will do: tmap_bind replaces it, and the row count, on the device. */
  void *placeholder = (void *)(uintptr_t)0x10000;
  const uint64_t dims[2] = {(uint64_t)head_dim, NABLA_TMAP_TEMPLATE_ROWS}, strides[1] = {(uint64_t)head_dim * 2};
  const uint32_t box[2] = {64, 64}, element_strides[2] = {1, 1};
  cu_encode_tiled_fn encode = NULL;
  cu_primary_retain_fn retain = NULL;
  cu_primary_release_fn release = NULL;
  cu_ctx_push_fn push = NULL;
  cu_ctx_pop_fn pop = NULL;
  memcpy(&encode, &cu->encode, sizeof encode);
  memcpy(&retain, &cu->retain, sizeof retain);
  memcpy(&release, &cu->release, sizeof release);
  memcpy(&push, &cu->push, sizeof push);
  memcpy(&pop, &cu->pop, sizeof pop);
  void *cuctx = NULL, *popped = NULL;
  _Alignas(128) unsigned char encoded[NABLA_TMAP_BYTES]; /* the driver wants 64-byte alignment */
  int rc = retain(&cuctx, cu->dev);
  if (rc != 0) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "cuDevicePrimaryCtxRetain failed (CUresult %d)", rc);
    goto done;
  }
  int pushed = push(cuctx); /* the calling thread's own current context stays as it was */
  if (pushed == 0) {
    rc = encode(encoded, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, placeholder, dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    pop(&popped);
  }
  release(cu->dev); /* the encoded map does not refer to the context */
  if (pushed != 0) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "cuCtxPushCurrent failed (CUresult %d)", pushed);
  } else if (rc != 0) {
    *refused = 1;
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "cuTensorMapEncodeTiled refused a [%d][%d] map (CUresult %d)",
                    NABLA_TMAP_TEMPLATE_ROWS, head_dim, rc);
  } else {
    memcpy(map, encoded, NABLA_TMAP_BYTES);
  }
done:
  return st;
}

/* The template's key in the "tensormaps" namespace: the device description (driver version
 * included, as the format is the driver's), then what was encoded. */
static void template_key(const nabla_context *ctx, int head_dim, char *buf, size_t len) {
  snprintf(buf, len, "%s\ntensormap\nu16 [%d rows][%d] box 64x64 swizzle 128B L2 256B oob zero", ctx->device_desc,
           NABLA_TMAP_TEMPLATE_ROWS, head_dim);
}

nabla_status nabla_tensor_map_template(nabla_context *ctx, int head_dim, unsigned char map[NABLA_TMAP_BYTES]) {
  nabla_status st = NABLA_OK;
  nabla_cuda_driver *cu = &ctx->cuda;
  char key[sizeof ctx->device_desc + 96];
  void *cached = NULL;
  size_t cached_len = 0;
  const int slot = head_dim == 128;
  if (head_dim != 64 && head_dim != 128) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "tensor maps are made for head dim 64 or 128, not %d", head_dim);
    goto done;
  }
  if (cu->have[slot] < 0) { /* the encoder refused it before */
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "%s", cu->refused[slot]);
    goto done;
  }
  if (!cu->have[slot]) {
    template_key(ctx, head_dim, key, sizeof key);
    if (ctx->cache_root[0] &&
        nabla_diskcache_get(ctx->cache_root, NABLA_TMAP_NS, key, &cached, &cached_len) == NABLA_OK &&
        cached_len == NABLA_TMAP_BYTES) {
      memcpy(cu->tmpl[slot], cached, NABLA_TMAP_BYTES);
    } else {
      int refused = 0;
      if ((st = encode_template(ctx, head_dim, cu->tmpl[slot], &refused)) != NABLA_OK) {
        if (refused) { /* not asked again on this context */
          cu->have[slot] = -1;
          snprintf(cu->refused[slot], sizeof cu->refused[slot], "%.150s", ctx->error);
        }
        goto done;
      }
      if (ctx->cache_root[0]) /* failure = no caching */
        nabla_diskcache_put(ctx->cache_root, NABLA_TMAP_NS, key, cu->tmpl[slot], NABLA_TMAP_BYTES);
    }
    cu->have[slot] = 1;
  }
  memcpy(map, cu->tmpl[slot], NABLA_TMAP_BYTES);
done:
  free(cached);
  return st;
}

void nabla_cuda_driver_release(nabla_context *ctx) {
  nabla_cuda_driver *cu = &ctx->cuda;
  if (cu->lib) dlclose(cu->lib);
  memset(cu, 0, sizeof *cu);
}
