/* Device enumeration, identity key and capabilities. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"
#include "internal.h"

nabla_status nabla_device_string(cl_device_id dev, cl_device_info what, char *out, size_t len) {
  size_t got = 0;
  out[0] = '\0';
  if (clGetDeviceInfo(dev, what, len - 1, out, &got) != CL_SUCCESS) {
    /* Longer than the buffer: fetch into a temporary and truncate. */
    if (clGetDeviceInfo(dev, what, 0, NULL, &got) != CL_SUCCESS) return NABLA_OPENCL;
    char *tmp = malloc(got + 1);
    if (!tmp) return NABLA_OUT_OF_MEMORY;
    cl_int rc = clGetDeviceInfo(dev, what, got, tmp, NULL);
    if (rc == CL_SUCCESS) snprintf(out, len, "%s", tmp);
    free(tmp);
    return rc == CL_SUCCESS ? NABLA_OK : NABLA_OPENCL;
  }
  out[got < len ? got : len - 1] = '\0';
  /* Drivers pad some strings with spaces. */
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == ' ') out[--n] = '\0';
  return NABLA_OK;
}

int nabla_device_has_extension(cl_device_id dev, const char *ext) {
  size_t len = 0;
  if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &len) != CL_SUCCESS) return 0;
  char *all = malloc(len + 2);
  if (!all) return 0;
  int found = 0;
  if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, len, all, NULL) == CL_SUCCESS) {
    size_t el = strlen(ext);
    for (const char *p = strstr(all, ext); p; p = strstr(p + 1, ext))
      if ((p == all || p[-1] == ' ') && (p[el] == ' ' || p[el] == '\0')) found = 1;
  }
  free(all);
  return found;
}

static const char *type_name(cl_device_type t) {
  if (t & CL_DEVICE_TYPE_GPU) return "GPU";
  if (t & CL_DEVICE_TYPE_CPU) return "CPU";
  if (t & CL_DEVICE_TYPE_ACCELERATOR) return "ACCELERATOR";
  return "OTHER";
}

static void fill_info(cl_platform_id plat, cl_device_id dev, int index, nabla_device_info *info) {
  memset(info, 0, sizeof *info);
  info->index = index;
  clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof info->platform - 1, info->platform, NULL);
  nabla_device_string(dev, CL_DEVICE_NAME, info->name, sizeof info->name);
  nabla_device_string(dev, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
  nabla_device_string(dev, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
  nabla_device_string(dev, CL_DEVICE_OPENCL_C_VERSION, info->opencl_c, sizeof info->opencl_c);
  cl_device_type t = 0;
  cl_uint cu = 0;
  cl_ulong gm = 0, lm = 0;
  clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof t, &t, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
  snprintf(info->type, sizeof info->type, "%s", type_name(t));
  info->compute_units = cu;
  info->global_mem = gm;
  info->local_mem = lm;
  info->fp16 = nabla_device_has_extension(dev, "cl_khr_fp16");
  info->fp64 = nabla_device_has_extension(dev, "cl_khr_fp64");
  info->subgroups = nabla_device_has_extension(dev, "cl_khr_subgroups") ||
                    nabla_device_has_extension(dev, "cl_intel_subgroups");
}

/* Visits every device of every platform in enumeration order. */
typedef int (*device_visit)(cl_platform_id plat, cl_device_id dev, int index, void *user);

static nabla_status for_each_device(device_visit visit, void *user) {
  cl_uint nplat = 0;
  if (clGetPlatformIDs(0, NULL, &nplat) != CL_SUCCESS || nplat == 0) return NABLA_NO_DEVICE;
  cl_platform_id plats[32];
  if (nplat > 32) nplat = 32;
  if (clGetPlatformIDs(nplat, plats, NULL) != CL_SUCCESS) return NABLA_OPENCL;
  int index = 0;
  for (cl_uint p = 0; p < nplat; p++) {
    cl_uint ndev = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS) continue;
    cl_device_id devs[64];
    if (ndev > 64) ndev = 64;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, ndev, devs, NULL) != CL_SUCCESS) continue;
    for (cl_uint d = 0; d < ndev; d++, index++)
      if (visit(plats[p], devs[d], index, user)) return NABLA_OK;
  }
  return NABLA_OK;
}

typedef struct {
  nabla_device_info *out;
  size_t cap, count;
} list_state;

static int list_visit(cl_platform_id plat, cl_device_id dev, int index, void *user) {
  list_state *s = user;
  if (s->count < s->cap) fill_info(plat, dev, index, &s->out[s->count]);
  s->count++;
  return 0;
}

nabla_status nabla_devices_list(nabla_device_info *out, size_t cap, size_t *count) {
  if (!count || (cap && !out)) return NABLA_INVALID_ARGUMENT;
  list_state s = {out, cap, 0};
  nabla_status st = for_each_device(list_visit, &s);
  *count = s.count;
  return st == NABLA_NO_DEVICE ? NABLA_OK : st;
}

nabla_status nabla_device_caps_query(nabla_context *ctx) {
  nabla_device_caps *c = &ctx->caps;
  cl_device_id dev = ctx->device;
  cl_device_type t = 0;
  cl_ulong lm = 0, gm = 0, ma = 0;
  cl_uint cu = 0;
  size_t wg = 0;
  if (clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof t, &t, NULL) != CL_SUCCESS ||
      clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL) != CL_SUCCESS ||
      clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL) != CL_SUCCESS ||
      clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL) != CL_SUCCESS ||
      clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL) != CL_SUCCESS ||
      clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL) != CL_SUCCESS)
    return nabla_fail(ctx, NABLA_OPENCL, "clGetDeviceInfo failed on the selected device");
  if (wg < NABLA_MIN_WORK_GROUP) /* the CSR and reduced-map kernels are written for 256 */
    return nabla_fail(ctx, NABLA_UNSUPPORTED,
                      "the device runs work-groups of at most %zu work-items; nablacl's mask kernels need %d", wg,
                      NABLA_MIN_WORK_GROUP);
  c->is_cpu = (t & CL_DEVICE_TYPE_CPU) != 0;
  c->is_gpu = (t & CL_DEVICE_TYPE_GPU) != 0;
  c->local_mem = lm;
  c->global_mem = gm;
  c->max_alloc = ma;
  c->compute_units = cu;
  c->max_wg = wg;
  c->fp16 = nabla_device_has_extension(dev, "cl_khr_fp16");
  c->fp64 = nabla_device_has_extension(dev, "cl_khr_fp64");
  c->subgroups = nabla_device_has_extension(dev, "cl_khr_subgroups") ||
                 nabla_device_has_extension(dev, "cl_intel_subgroups");

  char plat_name[256] = "", plat_ver[256] = "", name[256], vendor[256], driver[256], version[256];
  cl_platform_id plat = NULL;
  clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
  if (plat) {
    clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof plat_name - 1, plat_name, NULL);
    clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof plat_ver - 1, plat_ver, NULL);
  }
  nabla_device_string(dev, CL_DEVICE_NAME, name, sizeof name);
  nabla_device_string(dev, CL_DEVICE_VENDOR, vendor, sizeof vendor);
  nabla_device_string(dev, CL_DRIVER_VERSION, driver, sizeof driver);
  nabla_device_string(dev, CL_DEVICE_VERSION, version, sizeof version);
  snprintf(ctx->device_desc, sizeof ctx->device_desc, "%s|%s|%s|%s|%s|%s", plat_name, plat_ver,
           name, vendor, driver, version);
  uint64_t h1 = nabla_hash64(ctx->device_desc, strlen(ctx->device_desc), 1);
  uint64_t h2 = nabla_hash64(ctx->device_desc, strlen(ctx->device_desc), 2);
  snprintf(ctx->device_key, sizeof ctx->device_key, "%016llx%016llx", (unsigned long long)h1,
           (unsigned long long)h2);

  if (strstr(vendor, "NVIDIA")) c->vendor = NABLA_VENDOR_NVIDIA;
  else if (strstr(vendor, "Advanced Micro") || strstr(vendor, "AMD")) c->vendor = NABLA_VENDOR_AMD;
  else if (strstr(vendor, "Intel") && c->is_gpu) c->vendor = NABLA_VENDOR_INTEL;
  else if (strstr(plat_name, "Portable Computing Language")) c->vendor = NABLA_VENDOR_POCL;
  else c->vendor = NABLA_VENDOR_OTHER;
  return NABLA_OK;
}

/* ---- selection -------------------------------------------------------------------------- */

typedef struct {
  const char *selector;  /* NULL: default rule */
  long index;            /* >= 0 when the selector is a number */
  cl_platform_id plat;
  cl_device_id dev;
  int best_rank;         /* default rule: 0 GPU, 1 accelerator, 2 CPU, 3 other */
} select_state;

static int contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return 1;
  }
  return n == 0;
}

static int select_visit(cl_platform_id plat, cl_device_id dev, int index, void *user) {
  select_state *s = user;
  if (s->selector) {
    char name[256] = "", pname[256] = "";
    nabla_device_string(dev, CL_DEVICE_NAME, name, sizeof name);
    clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof pname - 1, pname, NULL);
    int hit = s->index >= 0 ? index == s->index
                            : contains_ci(name, s->selector) || contains_ci(pname, s->selector);
    if (hit) {
      s->plat = plat;
      s->dev = dev;
    }
    return hit;
  }
  cl_device_type t = 0;
  clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof t, &t, NULL);
  int rank = (t & CL_DEVICE_TYPE_GPU) ? 0 : (t & CL_DEVICE_TYPE_ACCELERATOR) ? 1 : (t & CL_DEVICE_TYPE_CPU) ? 2 : 3;
  if (rank < s->best_rank) {
    s->best_rank = rank;
    s->plat = plat;
    s->dev = dev;
  }
  return 0;
}

static void describe_devices(char *err, size_t err_len, const char *prefix) {
  if (!err || !err_len) return;
  size_t n = 0;
  nabla_device_info infos[16];
  nabla_devices_list(infos, 16, &n);
  int off = snprintf(err, err_len, "%s; available devices:", prefix);
  if (n == 0 && off >= 0 && (size_t)off < err_len) snprintf(err + off, err_len - off, " none (is an OpenCL ICD installed?)");
  for (size_t i = 0; i < n && i < 16 && off >= 0 && (size_t)off < err_len; i++)
    off += snprintf(err + off, err_len - off, " [%d] %s (%s, %s)", infos[i].index, infos[i].name,
                    infos[i].platform, infos[i].type);
}

nabla_status nabla_device_select(const char *selector, cl_platform_id *plat, cl_device_id *dev,
                                 char *err, size_t err_len) {
  if (!selector || !*selector) selector = getenv("NABLACL_DEVICE");
  if (selector && !*selector) selector = NULL;
  select_state s = {selector, -1, NULL, NULL, 4};
  if (selector) {
    char *end = NULL;
    long v = strtol(selector, &end, 10);
    if (end != selector && *end == '\0' && v >= 0) s.index = v;
  }
  nabla_status st = for_each_device(select_visit, &s);
  if (st == NABLA_OPENCL) {
    if (err && err_len) snprintf(err, err_len, "clGetPlatformIDs failed");
    return st;
  }
  if (!s.dev) {
    char prefix[512];
    if (selector)
      snprintf(prefix, sizeof prefix, "no OpenCL device matches \"%s\" (index, or device or platform name substring)", selector);
    else
      snprintf(prefix, sizeof prefix, "no OpenCL device found");
    describe_devices(err, err_len, prefix);
    return NABLA_NO_DEVICE;
  }
  *plat = s.plat;
  *dev = s.dev;
  return NABLA_OK;
}
