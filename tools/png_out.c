/* PNG output for `nablacl mask --png`: the library draws the picture, this file encodes it. */
#include "png_out.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef NABLACL_HAVE_PNG
#include <png.h>
#endif

static void set_err(char *err, size_t len, const char *fmt, ...) {
  if (!err || !len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
}

int png_available(void) {
#ifdef NABLACL_HAVE_PNG
  return 1;
#else
  return 0;
#endif
}

int mask_png_temp(const char *path, const nabla_shape *shape, const uint8_t *bitmap, int batch,
                  int head, int cell, char **temp_path, char *err, size_t err_len) {
  int w = 0, h = 0;
  *temp_path = NULL;
  if (nabla_mask_picture(shape, bitmap, batch, head, cell, NULL, 0, &w, &h, err, err_len) != NABLA_OK)
    return -1;
  size_t bytes = (size_t)w * (size_t)h * 3;
  uint8_t *rgb = malloc(bytes);
  if (!rgb) {
    set_err(err, err_len, "out of memory for a %d x %d picture", w, h);
    return -1;
  }
  int rc = -1;
  if (nabla_mask_picture(shape, bitmap, batch, head, cell, rgb, bytes, &w, &h, err, err_len) == NABLA_OK)
    rc = png_write_temp(path, rgb, w, h, temp_path, err, err_len);
  free(rgb);
  return rc;
}

#ifdef NABLACL_HAVE_PNG
/* A file next to `path` that did not exist, opened for writing ("<path>.tmp.<pid>.<n>"). */
static FILE *create_temp(const char *path, char **name_out, char *err, size_t err_len) {
  size_t cap = strlen(path) + 48;
  char *name = malloc(cap);
  if (!name) {
    set_err(err, err_len, "out of memory");
    return NULL;
  }
  for (int n = 0; n < 1000; n++) {
    snprintf(name, cap, "%s.tmp.%ld.%d", path, (long)getpid(), n);
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd >= 0) {
      FILE *f = fdopen(fd, "wb");
      if (f) {
        *name_out = name;
        return f;
      }
      close(fd);
      unlink(name);
      break;
    }
    if (errno != EEXIST) break;
  }
  set_err(err, err_len, "cannot create a file next to %s: %s", path, strerror(errno));
  free(name);
  return NULL;
}

/* libpng reports errors by longjmp; everything it touches is set up before setjmp and the
 * variables read after it are volatile, so the one exit path below frees them. */
int png_write_temp(const char *path, const uint8_t *rgb, int width, int height, char **temp_path,
                   char *err, size_t err_len) {
  *temp_path = NULL;
  if (!rgb || width < 1 || height < 1) {
    set_err(err, err_len, "empty picture");
    return -1;
  }
  char *name = NULL;
  FILE *f = create_temp(path, &name, err, err_len);
  if (!f) return -1;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  volatile int rc = -1;
  if (!png || !info) {
    set_err(err, err_len, "out of memory");
    goto done;
  }
  if (setjmp(png_jmpbuf(png))) {
    set_err(err, err_len, "PNG encoding failed: %s", strerror(errno));
    goto done;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 9);
  png_write_info(png, info);
  for (int y = 0; y < height; y++) png_write_row(png, rgb + (size_t)y * (size_t)width * 3);
  png_write_end(png, info);
  rc = 0;
done:
  png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
  if (fclose(f) != 0 && rc == 0) {
    set_err(err, err_len, "write failed: %s", strerror(errno));
    rc = -1;
  }
  if (rc == 0) {
    *temp_path = name;
  } else {
    unlink(name);
    free(name);
  }
  return rc;
}
#else
int png_write_temp(const char *path, const uint8_t *rgb, int width, int height, char **temp_path,
                   char *err, size_t err_len) {
  (void)path;
  (void)rgb;
  (void)width;
  (void)height;
  *temp_path = NULL;
  set_err(err, err_len, "this nablacl was built without libpng");
  return -1;
}
#endif
