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

/* CL_PLATFORM_ICD_SUFFIX_KHR (cl_khr_icd), e.g. "POCL", "INTEL", "NV"; older headers lack it. */
#ifndef CL_PLATFORM_ICD_SUFFIX_KHR
#define CL_PLATFORM_ICD_SUFFIX_KHR 0x0920
#endif

static int contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return 1;
  }
  return n == 0;
}

static int equals_ci(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
  return *a == *b;
}

int nabla_device_preference(const nabla_device_desc *d) {
  if (d->type & CL_DEVICE_TYPE_GPU) return 0;
  if (d->type & CL_DEVICE_TYPE_ACCELERATOR) return 1;
  if (!(d->type & CL_DEVICE_TYPE_CPU)) return 6;
  /* CPUs by measured speed of nablacl (docs/api.md): Intel's CPU runtime ran attention 1.6-4.3x
   * faster than PoCL on the same cores; any other CPU runtime (e.g. a simulator such as
   * Oclgrind) is unmeasured and comes last. */
  if (equals_ci(d->platform, "Intel(R) OpenCL")) return 2;
  if (strstr(d->platform, "Portable Computing Language")) return 3;
  return 4;
}

/* How well platform name `platform` (ICD suffix `suffix`) matches `text`: 3 the whole name,
 * 2 a substring of it, 1 the ICD suffix exactly, 0 no match (all case-insensitive). */
static int platform_match(const nabla_device_desc *d, const char *text) {
  if (equals_ci(d->platform, text)) return 3;
  if (contains_ci(d->platform, text)) return 2;
  return d->suffix[0] && equals_ci(d->suffix, text) ? 1 : 0;
}

int nabla_device_pick(const nabla_device_desc *devs, size_t n, const char *selector) {
  int best = -1, best_score = 0;
  if (!selector || !*selector) { /* the default rule: lowest preference, first in order */
    for (size_t i = 0; i < n; i++)
      if (best < 0 || nabla_device_preference(&devs[i]) < nabla_device_preference(&devs[best])) best = (int)i;
    return best;
  }
  char *end = NULL;
  long index = strtol(selector, &end, 10);
  if (end != selector && *end == '\0' && index >= 0 && selector[0] != '-' && selector[0] != '+')
    return (size_t)index < n ? (int)index : -1;
  int by_platform = 1, by_device = 1;
  if (strncmp(selector, "platform:", 9) == 0) selector += 9, by_device = 0;
  else if (strncmp(selector, "device:", 7) == 0) selector += 7, by_platform = 0;
  if (!*selector) return -1;
  /* A platform match wins over a device name match, and the best platform match over a
   * weaker one: PoCL's device names contain the CPU's name ("... Intel(R) Xeon(R) ..."), so
   * "intel" must find Intel's platform before PoCL's device; "Intel(R) OpenCL" names Intel's
   * CPU runtime exactly, although its GPU platform's name contains it too. */
  for (size_t i = 0; by_platform && i < n; i++) {
    int score = platform_match(&devs[i], selector);
    if (score > best_score) best = (int)i, best_score = score;
  }
  for (size_t i = 0; by_device && best < 0 && i < n; i++)
    if (contains_ci(devs[i].name, selector)) best = (int)i;
  return best;
}

/* Every device as nabla_device_desc, with its handles, in NABLACL_DEVICE index order. */
typedef struct {
  nabla_device_desc *desc;
  cl_platform_id *plat;
  cl_device_id *dev;
  size_t cap, count;
} snapshot_state;

static int snapshot_visit(cl_platform_id plat, cl_device_id dev, int index, void *user) {
  snapshot_state *s = user;
  (void)index;
  if (s->count == s->cap) return 1;
  nabla_device_desc *d = &s->desc[s->count];
  memset(d, 0, sizeof *d);
  clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof d->type, &d->type, NULL);
  clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof d->platform - 1, d->platform, NULL);
  clGetPlatformInfo(plat, CL_PLATFORM_ICD_SUFFIX_KHR, sizeof d->suffix - 1, d->suffix, NULL);
  nabla_device_string(dev, CL_DEVICE_NAME, d->name, sizeof d->name);
  s->plat[s->count] = plat;
  s->dev[s->count] = dev;
  s->count++;
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

#define SNAPSHOT_CAP 64

/* Enumerates the devices into s and picks one by selector (NULL: NABLACL_DEVICE, else the
 * default rule); its position goes to *pick. */
static nabla_status snapshot_pick(const char *selector, snapshot_state *s, int *pick, char *err, size_t err_len) {
  if (!selector || !*selector) selector = getenv("NABLACL_DEVICE");
  if (selector && !*selector) selector = NULL;
  nabla_status st = for_each_device(snapshot_visit, s);
  if (st == NABLA_OPENCL) {
    if (err && err_len) snprintf(err, err_len, "clGetPlatformIDs failed");
    return st;
  }
  *pick = nabla_device_pick(s->desc, s->count, selector);
  if (*pick >= 0) return NABLA_OK;
  char prefix[512];
  if (selector)
    snprintf(prefix, sizeof prefix,
             "no OpenCL device matches \"%s\" (index, platform or device name substring, "
             "platform:NAME, device:NAME)", selector);
  else
    snprintf(prefix, sizeof prefix, "no OpenCL device found");
  describe_devices(err, err_len, prefix);
  return NABLA_NO_DEVICE;
}

nabla_status nabla_device_select(const char *selector, cl_platform_id *plat, cl_device_id *dev,
                                 char *err, size_t err_len) {
  nabla_device_desc desc[SNAPSHOT_CAP];
  cl_platform_id plats[SNAPSHOT_CAP];
  cl_device_id devs[SNAPSHOT_CAP];
  snapshot_state s = {desc, plats, devs, SNAPSHOT_CAP, 0};
  int i = -1;
  nabla_status st = snapshot_pick(selector, &s, &i, err, err_len);
  if (st != NABLA_OK) return st;
  *plat = plats[i];
  *dev = devs[i];
  return NABLA_OK;
}

nabla_status nabla_device_choose(const char *selector, int *index, char *err, size_t err_len) {
  nabla_device_desc desc[SNAPSHOT_CAP];
  cl_platform_id plats[SNAPSHOT_CAP];
  cl_device_id devs[SNAPSHOT_CAP];
  snapshot_state s = {desc, plats, devs, SNAPSHOT_CAP, 0};
  if (!index) {
    if (err && err_len) snprintf(err, err_len, "nabla_device_choose: index is NULL");
    return NABLA_INVALID_ARGUMENT;
  }
  *index = -1;
  return snapshot_pick(selector, &s, index, err, err_len);
}
