/*
 * npy.c — NumPy .npy reader and atomic writer (see npy.h for the contract).
 *
 * File layout (numpy/lib/format.py): magic "\x93NUMPY", major, minor, header length
 * (uint16 LE for 1.0, uint32 LE for 2.0/3.0), then a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and a final
 * '\n' so the data starts at a multiple of 64 bytes, then the raw C-order data.
 */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64
#define NPY_MAX_HEADER (1u << 20)   /* sanity bound: real headers are < 200 bytes */

typedef struct {
  npy_dtype dtype;
  const char *descr;
  size_t size;
} npy_dtype_entry;

static const npy_dtype_entry npy_dtypes[] = {
  {NPY_F32, "<f4", 4}, {NPY_F16, "<f2", 2}, {NPY_U16, "<u2", 2},
  {NPY_U8, "|u1", 1},  {NPY_I32, "<i4", 4},
};
#define NPY_DTYPE_COUNT (sizeof npy_dtypes / sizeof npy_dtypes[0])

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...) {
  if (!err || err_len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

const char *npy_dtype_descr(npy_dtype dtype) {
  for (size_t i = 0; i < NPY_DTYPE_COUNT; i++)
    if (npy_dtypes[i].dtype == dtype) return npy_dtypes[i].descr;
  return "?";
}

size_t npy_dtype_size(npy_dtype dtype) {
  for (size_t i = 0; i < NPY_DTYPE_COUNT; i++)
    if (npy_dtypes[i].dtype == dtype) return npy_dtypes[i].size;
  return 0;
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  return *(const uint8_t *)&one == 1;
}

/* Byte-swaps elements in place; only used on big-endian hosts (files are little-endian). */
static void swap_bytes(void *data, size_t count, size_t size) {
  uint8_t *p = data;
  for (size_t i = 0; i < count; i++, p += size)
    for (size_t a = 0, b = size - 1; a < b; a++, b--) {
      uint8_t t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

/* ---- header parsing --------------------------------------------------------------------- */

typedef struct {
  const char *p, *end;
} cursor;

static void skip_space(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int accept_char(cursor *c, char ch) {
  skip_space(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

static int accept_word(cursor *c, const char *word) {
  size_t n = strlen(word);
  skip_space(c);
  if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
    c->p += n;
    return 1;
  }
  return 0;
}

/* A Python string literal in single or double quotes, without escapes. */
static int parse_string(cursor *c, char *buf, size_t len) {
  skip_space(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
  char quote = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != quote) {
    if (*c->p == '\\' || n + 1 >= len) return -1;
    buf[n++] = *c->p++;
  }
  if (c->p >= c->end) return -1;
  c->p++;
  buf[n] = '\0';
  return 0;
}

static int parse_size(cursor *c, size_t *out) {
  skip_space(c);
  if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
  size_t v = 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    size_t digit = (size_t)(*c->p++ - '0');
    if (v > (SIZE_MAX - digit) / 10) return -1;
    v = v * 10 + digit;
  }
  if (c->p < c->end && *c->p == 'L') c->p++;   /* Python 2 longs */
  *out = v;
  return 0;
}

/* "(a, b, c)", "(a,)" or "()". */
static int parse_shape(cursor *c, npy_array *out, char *err, size_t err_len) {
  if (!accept_char(c, '(')) goto bad;
  out->ndim = 0;
  while (!accept_char(c, ')')) {
    if (out->ndim == NPY_MAX_DIMS) {
      set_err(err, err_len, "more than %d dimensions", NPY_MAX_DIMS);
      return -1;
    }
    if (parse_size(c, &out->shape[out->ndim]) != 0) goto bad;
    out->ndim++;
    if (!accept_char(c, ',')) {
      if (!accept_char(c, ')')) goto bad;
      break;
    }
  }
  return 0;
bad:
  set_err(err, err_len, "malformed 'shape' in the header");
  return -1;
}

static int parse_descr(cursor *c, npy_array *out, char *err, size_t err_len) {
  char descr[32];
  if (parse_string(c, descr, sizeof descr) != 0) {
    set_err(err, err_len, "malformed 'descr' in the header");
    return -1;
  }
  /* Byte order is irrelevant for one-byte types: numpy may write '|u1' or '<u1'. */
  int any_order = descr[0] == '|' || descr[0] == '<' || descr[0] == '>' || descr[0] == '=';
  for (size_t i = 0; i < NPY_DTYPE_COUNT; i++)
    if (strcmp(descr, npy_dtypes[i].descr) == 0 ||
        (npy_dtypes[i].size == 1 && any_order && strcmp(descr + 1, npy_dtypes[i].descr + 1) == 0)) {
      out->dtype = npy_dtypes[i].dtype;
      return 0;
    }
  if (descr[0] == '>') {
    set_err(err, err_len, "big-endian dtype '%s' is not supported (convert with .astype('<%s'))",
            descr, descr + 1);
    return -1;
  }
  set_err(err, err_len, "unsupported dtype '%s'", descr); /* callers say what they take */
  return NPY_EDTYPE;
}

static int parse_fortran(cursor *c, char *err, size_t err_len) {
  if (accept_word(c, "False")) return 0;
  if (accept_word(c, "True")) {
    set_err(err, err_len,
            "Fortran-order arrays are not supported (save np.ascontiguousarray(x) instead)");
    return -1;
  }
  set_err(err, err_len, "malformed 'fortran_order' in the header");
  return -1;
}

static int parse_entry(cursor *c, npy_array *out, unsigned *seen, char *err, size_t err_len) {
  char key[32];
  if (parse_string(c, key, sizeof key) != 0 || !accept_char(c, ':')) {
    set_err(err, err_len, "malformed header dictionary");
    return -1;
  }
  if (strcmp(key, "descr") == 0) {
    *seen |= 1u;
    return parse_descr(c, out, err, err_len);
  }
  if (strcmp(key, "fortran_order") == 0) {
    *seen |= 2u;
    return parse_fortran(c, err, err_len);
  }
  if (strcmp(key, "shape") == 0) {
    *seen |= 4u;
    return parse_shape(c, out, err, err_len);
  }
  set_err(err, err_len, "unexpected key '%s' in the header", key);
  return -1;
}

static int element_count(npy_array *a, char *err, size_t err_len) {
  size_t count = 1, size = npy_dtype_size(a->dtype);
  for (int i = 0; i < a->ndim; i++) {
    if (a->shape[i] != 0 && count > SIZE_MAX / size / a->shape[i]) {
      set_err(err, err_len, "shape too large");
      return -1;
    }
    count *= a->shape[i];
  }
  a->count = count;
  return 0;
}

int npy_parse_header(const char *text, size_t len, npy_array *out, char *err, size_t err_len) {
  cursor c = {text, text + len};
  unsigned seen = 0;
  if (!accept_char(&c, '{')) {
    set_err(err, err_len, "header is not a dictionary");
    return -1;
  }
  while (!accept_char(&c, '}')) {
    const int rc = parse_entry(&c, out, &seen, err, err_len);
    if (rc != 0) return rc; /* -1 or NPY_EDTYPE */
    if (!accept_char(&c, ',')) {
      if (!accept_char(&c, '}')) {
        set_err(err, err_len, "malformed header dictionary");
        return -1;
      }
      break;
    }
  }
  if (seen != 7u) {
    set_err(err, err_len, "header lacks %s", !(seen & 1u) ? "'descr'"
                                             : !(seen & 2u) ? "'fortran_order'" : "'shape'");
    return -1;
  }
  return element_count(out, err, err_len);
}

/* ---- reading ---------------------------------------------------------------------------- */

/* Reads the prelude and header text; leaves the stream at the first data byte. */
static int read_header(FILE *f, npy_array *out, char *err, size_t err_len) {
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
    set_err(err, err_len, "not a .npy file (bad magic)");
    return -1;
  }
  int major = pre[6];
  size_t len;
  if (major == 1) {
    if (fread(pre + 8, 1, 2, f) != 2) goto truncated;
    len = (size_t)pre[8] | (size_t)pre[9] << 8;
  } else if (major == 2 || major == 3) {
    if (fread(pre + 8, 1, 4, f) != 4) goto truncated;
    len = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  } else {
    set_err(err, err_len, "unsupported .npy format version %d.%d", major, pre[7]);
    return -1;
  }
  if (len > NPY_MAX_HEADER) {
    set_err(err, err_len, "header length %zu is implausible", len);
    return -1;
  }
  char *text = malloc(len + 1);
  if (!text) {
    set_err(err, err_len, "out of memory");
    return -1;
  }
  int rc = -1;
  if (fread(text, 1, len, f) != len) {
    free(text);
    goto truncated;
  }
  rc = npy_parse_header(text, len, out, err, err_len);
  free(text);
  return rc;
truncated:
  set_err(err, err_len, "truncated header");
  return -1;
}

/* How many data bytes the file holds after the header: the rest of a regular file, or
 * SIZE_MAX for a stream (pipe, device) whose length is unknown. */
static int data_bytes_left(FILE *f, size_t *out) {
  struct stat sb;
  long at = ftell(f);
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || at < 0) {
    *out = SIZE_MAX;
    return 0;
  }
  if ((uint64_t)sb.st_size < (uint64_t)at) return -1;
  *out = (uint64_t)sb.st_size - (uint64_t)at > SIZE_MAX ? SIZE_MAX : (size_t)(sb.st_size - at);
  return 0;
}

int npy_open(const char *path, npy_reader *r, char *err, size_t err_len) {
  memset(r, 0, sizeof *r);
  r->file = fopen(path, "rb");
  if (!r->file) {
    set_err(err, err_len, "cannot open: %s", strerror(errno));
    return -1;
  }
  int rc = read_header(r->file, &r->array, err, err_len);
  size_t left = 0, bytes = r->array.count * npy_dtype_size(r->array.dtype);
  if (rc == 0 && data_bytes_left(r->file, &left) != 0) {
    set_err(err, err_len, "read error");
    rc = -1;
  }
  /* The header's claim against the file's real size, before anything is allocated for it. */
  if (rc == 0 && left != SIZE_MAX && left < bytes) {
    set_err(err, err_len, "truncated data: the header's shape needs %zu bytes, the file holds %zu", bytes, left);
    rc = -1;
  } else if (rc == 0 && left != SIZE_MAX && left > bytes) {
    set_err(err, err_len, "data is longer than the header's shape says (%zu bytes, the file holds %zu)", bytes, left);
    rc = -1;
  }
  if (rc != 0) npy_close(r);
  return rc;
}

/* Reads `bytes` from a stream of unknown length in chunks, so that a false claim fails at the
 * stream's end having allocated little more than what was really there. */
#define NPY_STREAM_CHUNK ((size_t)64 << 20)
static int read_stream(FILE *f, size_t bytes, void **out, size_t *got) {
  unsigned char *buf = NULL;
  size_t have = 0;
  *got = 0;
  while (have < bytes) {
    size_t step = bytes - have < NPY_STREAM_CHUNK ? bytes - have : NPY_STREAM_CHUNK;
    unsigned char *grown = realloc(buf, have + step);
    if (!grown) {
      free(buf);
      return -1;
    }
    buf = grown;
    size_t n = fread(buf + have, 1, step, f);
    have += n;
    if (n < step) break;
  }
  if (!buf) buf = malloc(1);
  if (!buf) return -1;
  *out = buf;
  *got = have;
  return 0;
}

int npy_read_data(npy_reader *r, npy_array *out, char *err, size_t err_len) {
  int rc = -1;
  size_t bytes = r->array.count * npy_dtype_size(r->array.dtype), got = 0;
  memset(out, 0, sizeof *out);
  if (!r->file) {
    set_err(err, err_len, "no open file");
    return -1;
  }
  *out = r->array;
  if (read_stream(r->file, bytes, &out->data, &got) != 0) {
    set_err(err, err_len, "out of memory for %zu bytes", bytes);
    goto done;
  }
  if (got != bytes) {
    set_err(err, err_len, "truncated data: expected %zu bytes, found %zu", bytes, got);
    goto done;
  }
  if (fgetc(r->file) != EOF) {
    set_err(err, err_len, "data is longer than the header's shape says");
    goto done;
  }
  if (ferror(r->file)) {
    set_err(err, err_len, "read error");
    goto done;
  }
  if (!host_is_little_endian()) swap_bytes(out->data, out->count, npy_dtype_size(out->dtype));
  rc = 0;
done:
  if (rc != 0) npy_free(out);
  npy_close(r);
  return rc;
}

void npy_close(npy_reader *r) {
  if (r->file) fclose(r->file);
  memset(r, 0, sizeof *r);
}

int npy_read(const char *path, npy_array *out, char *err, size_t err_len) {
  npy_reader r;
  memset(out, 0, sizeof *out);
  const int rc = npy_open(path, &r, err, err_len);
  return rc != 0 ? rc : npy_read_data(&r, out, err, err_len);
}

void npy_free(npy_array *array) {
  if (!array) return;
  free(array->data);
  memset(array, 0, sizeof *array);
}

/* ---- writing ---------------------------------------------------------------------------- */

/* Formats the full header (prelude + dict + padding + '\n') into a malloc'd buffer. */
static char *format_header(npy_dtype dtype, int ndim, const size_t *shape, size_t *out_len) {
  char dims[NPY_MAX_DIMS * 24 + 8] = "";
  size_t used = 0;
  for (int i = 0; i < ndim; i++)
    used += (size_t)snprintf(dims + used, sizeof dims - used, "%s%zu", i ? ", " : "", shape[i]);
  if (ndim == 1) snprintf(dims + used, sizeof dims - used, ",");
  char dict[sizeof dims + 96];
  int dict_len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                          npy_dtype_descr(dtype), dims);
  size_t prelude = 10, total = prelude + (size_t)dict_len + 1;
  if ((total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN - prelude > 65535) prelude = 12;
  total = (prelude + (size_t)dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  char *h = malloc(total);
  if (!h) return NULL;
  size_t len = total - prelude;   /* dict + padding + '\n' */
  memcpy(h, NPY_MAGIC, NPY_MAGIC_LEN);
  h[6] = prelude == 10 ? 1 : 2;
  h[7] = 0;
  for (size_t i = 0; i < prelude - 8; i++) h[8 + i] = (char)(len >> (8 * i) & 0xff);
  memcpy(h + prelude, dict, (size_t)dict_len);
  memset(h + prelude + dict_len, ' ', len - (size_t)dict_len - 1);
  h[total - 1] = '\n';
  *out_len = total;
  return h;
}

/* Creates "<path>.tmp.<pid>.<n>" exclusively; returns the fd and the malloc'd name. */
static int create_temp(const char *path, char **name_out, char *err, size_t err_len) {
  size_t cap = strlen(path) + 48;
  char *name = malloc(cap);
  if (!name) {
    set_err(err, err_len, "out of memory");
    return -1;
  }
  for (int n = 0; n < 1000; n++) {
    snprintf(name, cap, "%s.tmp.%ld.%d", path, (long)getpid(), n);
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd >= 0) {
      *name_out = name;
      return fd;
    }
    if (errno != EEXIST) break;
  }
  set_err(err, err_len, "cannot create a file next to %s: %s", path, strerror(errno));
  free(name);
  return -1;
}

static int write_all(int fd, const void *data, size_t bytes) {
  const char *p = data;
  while (bytes > 0) {
    ssize_t n = write(fd, p, bytes > (1u << 30) ? (1u << 30) : bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    bytes -= (size_t)n;
  }
  return 0;
}

/* Writes the data, byte-swapping through a bounce buffer on big-endian hosts. */
static int write_data(int fd, npy_dtype dtype, size_t count, const void *data) {
  size_t size = npy_dtype_size(dtype);
  if (host_is_little_endian() || size == 1) return write_all(fd, data, count * size);
  enum { CHUNK = 1 << 16 };
  uint8_t buf[CHUNK];
  const uint8_t *p = data;
  for (size_t done = 0; done < count;) {
    size_t n = count - done < CHUNK / size ? count - done : CHUNK / size;
    memcpy(buf, p + done * size, n * size);
    swap_bytes(buf, n, size);
    if (write_all(fd, buf, n * size) != 0) return -1;
    done += n;
  }
  return 0;
}

static int validate_write(npy_dtype dtype, int ndim, const size_t *shape, const void *data,
                          size_t *count, char *err, size_t err_len) {
  if (npy_dtype_size(dtype) == 0 || ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape)) {
    set_err(err, err_len, "invalid dtype or shape");
    return -1;
  }
  npy_array a = {.dtype = dtype, .ndim = ndim};
  for (int i = 0; i < ndim; i++) a.shape[i] = shape[i];
  if (element_count(&a, err, err_len) != 0) return -1;
  if (a.count > 0 && !data) {
    set_err(err, err_len, "no data");
    return -1;
  }
  *count = a.count;
  return 0;
}

int npy_write_temp(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
                   const void *data, char **temp_path, char *err, size_t err_len) {
  *temp_path = NULL;
  size_t count, header_len;
  if (validate_write(dtype, ndim, shape, data, &count, err, err_len) != 0) return -1;
  char *header = format_header(dtype, ndim, shape, &header_len);
  char *name = NULL;
  int fd = -1, rc = -1;
  if (!header) {
    set_err(err, err_len, "out of memory");
    goto done;
  }
  fd = create_temp(path, &name, err, err_len);
  if (fd < 0) goto done;
  if (write_all(fd, header, header_len) != 0 || write_data(fd, dtype, count, data) != 0) {
    set_err(err, err_len, "write failed: %s", strerror(errno));
    goto done;
  }
  int closed = close(fd);
  fd = -1;
  if (closed != 0) {
    set_err(err, err_len, "write failed: %s", strerror(errno));
    goto done;
  }
  rc = 0;
done:
  if (fd >= 0) close(fd);
  if (rc != 0 && name) unlink(name);
  if (rc == 0) *temp_path = name;
  else free(name);
  free(header);
  return rc;
}

int npy_write(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
              const void *data, char *err, size_t err_len) {
  char *temp = NULL;
  if (npy_write_temp(path, dtype, ndim, shape, data, &temp, err, err_len) != 0) return -1;
  int rc = 0;
  if (rename(temp, path) != 0) {
    set_err(err, err_len, "cannot rename into place: %s", strerror(errno));
    unlink(temp);
    rc = -1;
  }
  free(temp);
  return rc;
}
