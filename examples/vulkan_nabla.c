/*
 * vulkan_nabla: a Vulkan renderer's buffers as nablacl tensors, without copies.
 *
 *   1. nablacl picks its OpenCL device; Vulkan picks the physical device with the same UUID.
 *   2. Vulkan allocates Q, K, V and O as exportable buffers (VK_KHR_external_memory_fd, opaque
 *      FD) and two exportable binary semaphores (VK_KHR_external_semaphore_fd): `ready`
 *      (Vulkan -> nablacl) and `done` (nablacl -> Vulkan).
 *   3. The buffers' and semaphores' file descriptors are imported (nabla_import_memory,
 *      nabla_import_semaphore); the imports consume them.
 *   4. Vulkan uploads Q, K and V from a staging buffer, hands the buffers to the external queue
 *      family and signals `ready`.
 *   5. nablacl waits on `ready` and acquires the tensors (nabla_external_begin), builds the
 *      nabla-0.7 mask and attends, releases the tensors and signals `done` (nabla_external_end).
 *      The host never waits in between.
 *   6. Vulkan waits on `done`, takes O back and copies it to the staging buffer; the host
 *      compares it with the float64 reference on the mask nablacl chose.
 *
 * Exit status: 0 when O matches, 1 on a mismatch or an error, 77 (skipped, with the reason)
 * when there is no OpenCL device with the interop extensions or no Vulkan device to pair it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vulkan/vulkan.h>

#include "nablacl.h"

#define SKIP 77

static int skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("SKIP: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  return SKIP;
}

#define VK_CHECK(call)                                                                  \
  do {                                                                                  \
    VkResult r_ = (call);                                                               \
    if (r_ != VK_SUCCESS) {                                                             \
      fprintf(stderr, "%s:%d: %s failed (VkResult %d)\n", __FILE__, __LINE__, #call, r_); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

static void nabla_check(nabla_context *ctx, nabla_status st, const char *what) {
  if (st != NABLA_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, nabla_status_str(st), nabla_last_error(ctx));
    exit(1);
  }
}

typedef struct {
  VkInstance instance;
  VkPhysicalDevice phys;
  VkDevice device;
  uint32_t family;
  VkQueue queue;
  VkCommandPool pool;
  uint8_t uuid[VK_UUID_SIZE];
  PFN_vkGetMemoryFdKHR get_memory_fd;
  PFN_vkGetSemaphoreFdKHR get_semaphore_fd;
} vk;

typedef struct {
  VkBuffer buffer;
  VkDeviceMemory memory;
  VkDeviceSize allocation; /* the exported allocation's size */
  void *mapped;            /* host-visible buffers only */
} vk_buffer;

static int has_extension(const VkExtensionProperties *ext, uint32_t n, const char *name) {
  for (uint32_t i = 0; i < n; i++)
    if (!strcmp(ext[i].extensionName, name)) return 1;
  return 0;
}

/* The Vulkan device whose UUID is the OpenCL device's, with both fd extensions and a queue
 * that can copy. Returns 0 or SKIP. */
static int vk_open(vk *v, const uint8_t uuid[16]) {
  memset(v, 0, sizeof *v);
  const VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "vulkan_nabla",
                                 .apiVersion = VK_API_VERSION_1_1};
  const VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
  VkResult r = vkCreateInstance(&ici, NULL, &v->instance);
  if (r != VK_SUCCESS) return skip("no Vulkan 1.1 driver (vkCreateInstance: VkResult %d)", r);
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(v->instance, &n, NULL);
  VkPhysicalDevice devs[16];
  if (n > 16) n = 16;
  vkEnumeratePhysicalDevices(v->instance, &n, devs);
  for (uint32_t i = 0; i < n && !v->phys; i++) {
    VkPhysicalDeviceIDProperties id = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &id};
    vkGetPhysicalDeviceProperties2(devs[i], &p2);
    if (memcmp(id.deviceUUID, uuid, VK_UUID_SIZE) == 0) {
      v->phys = devs[i];
      memcpy(v->uuid, id.deviceUUID, VK_UUID_SIZE);
      printf("Vulkan device: %s\n", p2.properties.deviceName);
    }
  }
  if (!v->phys) return skip("none of the %u Vulkan devices is the OpenCL device (UUIDs differ)", n);
  uint32_t ne = 0;
  vkEnumerateDeviceExtensionProperties(v->phys, NULL, &ne, NULL);
  VkExtensionProperties *ext = calloc(ne ? ne : 1, sizeof *ext);
  vkEnumerateDeviceExtensionProperties(v->phys, NULL, &ne, ext);
  const char *need[] = {VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME, VK_KHR_EXTERNAL_SEMAPHORE_FD_EXTENSION_NAME};
  for (int i = 0; i < 2; i++)
    if (!has_extension(ext, ne, need[i])) {
      free(ext);
      return skip("the Vulkan device lacks %s", need[i]);
    }
  free(ext);
  uint32_t nf = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(v->phys, &nf, NULL);
  VkQueueFamilyProperties fam[32];
  if (nf > 32) nf = 32;
  vkGetPhysicalDeviceQueueFamilyProperties(v->phys, &nf, fam);
  v->family = UINT32_MAX;
  for (uint32_t i = 0; i < nf && v->family == UINT32_MAX; i++)
    if (fam[i].queueFlags & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT | VK_QUEUE_TRANSFER_BIT)) v->family = i;
  if (v->family == UINT32_MAX) return skip("the Vulkan device has no queue that copies");
  const float prio = 1.0f;
  const VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                       .queueFamilyIndex = v->family, .queueCount = 1, .pQueuePriorities = &prio};
  const VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1,
                                  .pQueueCreateInfos = &qci, .enabledExtensionCount = 2,
                                  .ppEnabledExtensionNames = need};
  VK_CHECK(vkCreateDevice(v->phys, &dci, NULL, &v->device));
  vkGetDeviceQueue(v->device, v->family, 0, &v->queue);
  const VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                       .queueFamilyIndex = v->family};
  VK_CHECK(vkCreateCommandPool(v->device, &pci, NULL, &v->pool));
  v->get_memory_fd = (PFN_vkGetMemoryFdKHR)vkGetDeviceProcAddr(v->device, "vkGetMemoryFdKHR");
  v->get_semaphore_fd = (PFN_vkGetSemaphoreFdKHR)vkGetDeviceProcAddr(v->device, "vkGetSemaphoreFdKHR");
  if (!v->get_memory_fd || !v->get_semaphore_fd) return skip("vkGetMemoryFdKHR or vkGetSemaphoreFdKHR is missing");

  /* Can the device export such buffers and semaphores as opaque FDs? */
  VkPhysicalDeviceExternalBufferInfo bi = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO,
                                           .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                           .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
  VkExternalBufferProperties bp = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES};
  vkGetPhysicalDeviceExternalBufferProperties(v->phys, &bi, &bp);
  if (!(bp.externalMemoryProperties.externalMemoryFeatures & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT))
    return skip("the Vulkan device cannot export buffers as opaque FDs");
  VkPhysicalDeviceExternalSemaphoreInfo si = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_SEMAPHORE_INFO,
                                              .handleType = VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
  VkExternalSemaphoreProperties sp = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_SEMAPHORE_PROPERTIES};
  vkGetPhysicalDeviceExternalSemaphoreProperties(v->phys, &si, &sp);
  if (!(sp.externalSemaphoreFeatures & VK_EXTERNAL_SEMAPHORE_FEATURE_EXPORTABLE_BIT))
    return skip("the Vulkan device cannot export binary semaphores as opaque FDs");
  return 0;
}

static uint32_t memory_type(const vk *v, uint32_t bits, VkMemoryPropertyFlags want) {
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(v->phys, &mp);
  for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
    if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) return i;
  fprintf(stderr, "no Vulkan memory type with properties 0x%x\n", (unsigned)want);
  exit(1);
}

/* A buffer of `bytes`: device-local and exportable as an opaque FD, or host-visible staging. */
static vk_buffer vk_buffer_new(const vk *v, VkDeviceSize bytes, int exportable) {
  vk_buffer b = {0};
  const VkExternalMemoryBufferCreateInfo ext = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
                                                .handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
  const VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .pNext = exportable ? &ext : NULL,
                                  .size = bytes,
                                  .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                  .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  VK_CHECK(vkCreateBuffer(v->device, &bci, NULL, &b.buffer));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(v->device, b.buffer, &req);
  /* A dedicated allocation: some drivers export buffers only that way, and it is always valid. */
  const VkMemoryDedicatedAllocateInfo dedicated = {.sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO,
                                                   .buffer = b.buffer};
  const VkExportMemoryAllocateInfo export_info = {.sType = VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO,
                                                  .pNext = &dedicated,
                                                  .handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
  const VkMemoryPropertyFlags props = exportable ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
                                                 : VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  const VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                    .pNext = exportable ? &export_info : NULL, .allocationSize = req.size,
                                    .memoryTypeIndex = memory_type(v, req.memoryTypeBits, props)};
  VK_CHECK(vkAllocateMemory(v->device, &mai, NULL, &b.memory));
  VK_CHECK(vkBindBufferMemory(v->device, b.buffer, b.memory, 0));
  b.allocation = req.size;
  if (!exportable) VK_CHECK(vkMapMemory(v->device, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped));
  return b;
}

static void vk_buffer_free(const vk *v, vk_buffer *b) {
  if (b->mapped) vkUnmapMemory(v->device, b->memory);
  vkDestroyBuffer(v->device, b->buffer, NULL);
  vkFreeMemory(v->device, b->memory, NULL);
}

static VkSemaphore vk_semaphore_new(const vk *v) {
  const VkExportSemaphoreCreateInfo export_info = {.sType = VK_STRUCTURE_TYPE_EXPORT_SEMAPHORE_CREATE_INFO,
                                                   .handleTypes = VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
  const VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &export_info};
  VkSemaphore s;
  VK_CHECK(vkCreateSemaphore(v->device, &sci, NULL, &s));
  return s;
}

/* Imports a Vulkan buffer's memory as a tensor of `bytes` (the fd is consumed). */
static cl_mem import_buffer(nabla_context *ctx, const vk *v, const vk_buffer *b, size_t bytes) {
  const VkMemoryGetFdInfoKHR gi = {.sType = VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR, .memory = b->memory,
                                   .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
  int fd = -1;
  VK_CHECK(v->get_memory_fd(v->device, &gi, &fd));
  nabla_external_memory m = {.type = NABLA_HANDLE_OPAQUE_FD, .fd = fd, .size = b->allocation, .bytes = bytes,
                             .device_uuid = v->uuid};
  cl_mem out = NULL;
  nabla_check(ctx, nabla_import_memory(ctx, &m, &out), "nabla_import_memory");
  return out;
}

static nabla_semaphore *import_semaphore(nabla_context *ctx, const vk *v, VkSemaphore s) {
  const VkSemaphoreGetFdInfoKHR gi = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_GET_FD_INFO_KHR, .semaphore = s,
                                      .handleType = VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
  int fd = -1;
  VK_CHECK(v->get_semaphore_fd(v->device, &gi, &fd));
  nabla_semaphore *out = NULL;
  nabla_check(ctx, nabla_import_semaphore(ctx, NABLA_HANDLE_OPAQUE_FD, fd, &out), "nabla_import_semaphore");
  return out;
}

/* A queue-family ownership transfer of a whole buffer (to or from VK_QUEUE_FAMILY_EXTERNAL). */
static VkBufferMemoryBarrier transfer(VkBuffer b, uint32_t from, uint32_t to, VkAccessFlags src, VkAccessFlags dst) {
  return (VkBufferMemoryBarrier){.sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER, .srcAccessMask = src,
                                 .dstAccessMask = dst, .srcQueueFamilyIndex = from, .dstQueueFamilyIndex = to,
                                 .buffer = b, .offset = 0, .size = VK_WHOLE_SIZE};
}

static VkCommandBuffer begin_commands(const vk *v) {
  const VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                          .commandPool = v->pool, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                          .commandBufferCount = 1};
  VkCommandBuffer cb;
  VK_CHECK(vkAllocateCommandBuffers(v->device, &ai, &cb));
  const VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  VK_CHECK(vkBeginCommandBuffer(cb, &bi));
  return cb;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double normal(void) {
  double u[2];
  for (int i = 0; i < 2; i++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    u[i] = ((double)(rng >> 11) + 0.5) * 0x1.0p-53;
  }
  return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

int main(void) {
  const nabla_shape s = {1, 2, 3 * 16 * 16, 64, 3, 16, 16}; /* 3 frames of 16x16 tokens */
  const size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim, bytes = n * sizeof(uint16_t);

  /* 1. nablacl's device and what it can import. */
  char err[512] = "";
  nabla_context *ctx = NULL;
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) return skip("no OpenCL device: %s", err);
  nabla_interop_caps caps;
  nabla_check(ctx, nabla_interop_caps_query(ctx, &caps), "nabla_interop_caps_query");
  if (!(caps.memory & NABLA_HANDLE_BIT(NABLA_HANDLE_OPAQUE_FD)) ||
      !(caps.semaphore & NABLA_HANDLE_BIT(NABLA_HANDLE_OPAQUE_FD)) || !caps.has_uuid) {
    int rc = skip("the OpenCL device cannot import opaque-fd memory and semaphores (lacks %s)", caps.missing);
    nabla_context_destroy(ctx);
    return rc;
  }
  vk v;
  int rc = vk_open(&v, caps.uuid);
  if (rc) {
    if (v.device) vkDestroyDevice(v.device, NULL);
    if (v.instance) vkDestroyInstance(v.instance, NULL);
    nabla_context_destroy(ctx);
    return rc;
  }

  /* 2. Exportable buffers and semaphores; 3. imported into nablacl. */
  vk_buffer buf[4], staging = vk_buffer_new(&v, 4 * bytes, 0);
  for (int i = 0; i < 4; i++) buf[i] = vk_buffer_new(&v, bytes, 1);
  VkSemaphore ready = vk_semaphore_new(&v), done = vk_semaphore_new(&v);
  cl_mem t[4];
  for (int i = 0; i < 4; i++) t[i] = import_buffer(ctx, &v, &buf[i], bytes);
  nabla_semaphore *cl_ready = import_semaphore(ctx, &v, ready), *cl_done = import_semaphore(ctx, &v, done);

  /* 4. Q, K, V (bf16) through the staging buffer; the buffers go to the external family. */
  double *x[3];
  uint16_t *host = staging.mapped;
  for (int j = 0; j < 3; j++) {
    x[j] = malloc(n * sizeof *x[j]);
    for (size_t i = 0; i < n; i++) {
      host[j * n + i] = nabla_f32_to_bf16((float)normal());
      x[j][i] = nabla_bf16_to_f32(host[j * n + i]);
    }
  }
  VkCommandBuffer up = begin_commands(&v);
  VkBufferMemoryBarrier out_barriers[4];
  for (int j = 0; j < 4; j++) {
    if (j < 3) vkCmdCopyBuffer(up, staging.buffer, buf[j].buffer, 1, &(VkBufferCopy){j * bytes, 0, bytes});
    out_barriers[j] = transfer(buf[j].buffer, v.family, VK_QUEUE_FAMILY_EXTERNAL, VK_ACCESS_TRANSFER_WRITE_BIT, 0);
  }
  vkCmdPipelineBarrier(up, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, 0, 0, NULL, 4,
                       out_barriers, 0, NULL);
  VK_CHECK(vkEndCommandBuffer(up));
  const VkSubmitInfo submit_up = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                                  .pCommandBuffers = &up, .signalSemaphoreCount = 1, .pSignalSemaphores = &ready};
  VK_CHECK(vkQueueSubmit(v.queue, 1, &submit_up, VK_NULL_HANDLE));

  /* 5. nablacl, ordered on the device after the upload and before the read-back. */
  nabla_algo algo;
  nabla_check(ctx, nabla_algo_parse("nabla-0.7", &algo, err, sizeof err), "nabla_algo_parse");
  nabla_mask *mask = NULL;
  nabla_check(ctx, nabla_external_begin(ctx, 1, &cl_ready, 4, t, 0, NULL, NULL), "nabla_external_begin");
  nabla_check(ctx, nabla_mask_build(ctx, &algo, &s, NABLA_BF16, t[0], t[1], &mask, 0, NULL, NULL), "nabla_mask_build");
  nabla_check(ctx, nabla_attend(ctx, &s, NABLA_BF16, mask, t[0], t[1], t[2], t[3], 0, NULL, NULL), "nabla_attend");
  nabla_check(ctx, nabla_external_end(ctx, 4, t, 1, &cl_done, 0, NULL, NULL), "nabla_external_end");

  /* 6. Vulkan takes O back after `done` and copies it out. */
  VkCommandBuffer down = begin_commands(&v);
  VkBufferMemoryBarrier in_barrier =
      transfer(buf[3].buffer, VK_QUEUE_FAMILY_EXTERNAL, v.family, 0, VK_ACCESS_TRANSFER_READ_BIT);
  vkCmdPipelineBarrier(down, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, NULL, 1,
                       &in_barrier, 0, NULL);
  vkCmdCopyBuffer(down, buf[3].buffer, staging.buffer, 1, &(VkBufferCopy){0, 3 * bytes, bytes});
  VK_CHECK(vkEndCommandBuffer(down));
  const VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
  const VkSubmitInfo submit_down = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .waitSemaphoreCount = 1,
                                    .pWaitSemaphores = &done, .pWaitDstStageMask = &wait_stage,
                                    .commandBufferCount = 1, .pCommandBuffers = &down};
  VkFence fence;
  VK_CHECK(vkCreateFence(v.device, &(VkFenceCreateInfo){.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO}, NULL, &fence));
  VK_CHECK(vkQueueSubmit(v.queue, 1, &submit_down, fence));
  VK_CHECK(vkWaitForFences(v.device, 1, &fence, VK_TRUE, UINT64_MAX));

  /* The float64 reference on the mask nablacl chose. */
  const int nb = nabla_shape_blocks(&s), rows = s.batch * s.heads * nb;
  int64_t kept = 0;
  double density = 0;
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc((size_t)rows * nb * sizeof *col_idx);
  double *ref = malloc(n * sizeof *ref);
  nabla_check(ctx, nabla_mask_stats(ctx, mask, &kept, &density), "nabla_mask_stats");
  nabla_check(ctx, nabla_mask_read_csr(ctx, mask, row_ptr, rows + 1, col_idx, (size_t)rows * nb),
              "nabla_mask_read_csr");
  nabla_ref_attention_sparse(&s, x[0], x[1], x[2], row_ptr, col_idx, ref);
  double max_err = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)nabla_bf16_to_f32(host[3 * n + i]) - ref[i]);
    if (!(d <= max_err)) max_err = d; /* a NaN counts as the largest error */
  }
  const int pass = max_err <= 3e-2; /* bf16 storage of O */
  printf("B=%d H=%d grid %dx%dx%d D=%d bf16, nabla-0.7 kept %.1f %% of the blocks, variant %s: "
         "max |O - reference| = %.3g -> %s\n",
         s.batch, s.heads, s.grid_t, s.grid_h, s.grid_w, s.head_dim, 100.0 * density, nabla_variant_last(ctx),
         max_err, pass ? "PASS" : "FAIL");

  nabla_mask_release(mask);
  for (int i = 0; i < 4; i++) clReleaseMemObject(t[i]);
  nabla_semaphore_release(cl_ready);
  nabla_semaphore_release(cl_done);
  nabla_context_destroy(ctx); /* finishes the queue first */
  vkDestroyFence(v.device, fence, NULL);
  vkDestroySemaphore(v.device, ready, NULL);
  vkDestroySemaphore(v.device, done, NULL);
  for (int i = 0; i < 4; i++) vk_buffer_free(&v, &buf[i]);
  vk_buffer_free(&v, &staging);
  vkDestroyCommandPool(v.device, v.pool, NULL);
  vkDestroyDevice(v.device, NULL);
  vkDestroyInstance(v.instance, NULL);
  for (int j = 0; j < 3; j++) free(x[j]);
  free(row_ptr);
  free(col_idx);
  free(ref);
  return pass ? 0 : 1;
}
