/* Small utilities: allocation that never returns NULL, checked number and
 * size parsing, alignment and container helpers. */
#ifndef EMBER_CORE_UTIL_H
#define EMBER_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a)-1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a)-1)) == 0)
#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)

/* Allocation failure aborts with a message: the VMM cannot run degraded. */
void *xmalloc(size_t size);
void *xzalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse "512", "64K", "128M", "2G", "1T" (binary units; bare number = default_unit
 * multiplier). Returns 0 or -EINVAL / -ERANGE. */
int parse_size(const char *s, uint64_t default_unit, uint64_t *out);
/* Parse an unsigned integer (decimal or 0x hex) that must be <= max. */
int parse_u64(const char *s, uint64_t max, uint64_t *out);
/* "on"/"off"/"yes"/"no"/"true"/"false"/"1"/"0". */
int parse_bool(const char *s, bool *out);

/* Retry on EINTR; short reads/writes continue until done, EOF or error. */
int read_full(int fd, void *buf, size_t len);   /* 0, -errno, or -EIO on early EOF */
int write_full(int fd, const void *buf, size_t len);
int pread_full(int fd, void *buf, size_t len, uint64_t off);
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

static inline uint16_t ld16(const void *p) { uint16_t v; __builtin_memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const void *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
static inline uint64_t ld64(const void *p) { uint64_t v; __builtin_memcpy(&v, p, 8); return v; }
static inline void st16(void *p, uint16_t v) { __builtin_memcpy(p, &v, 2); }
static inline void st32(void *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static inline void st64(void *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }

/* Checked add: true if a + b overflows. */
static inline bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum)
{
    return __builtin_add_overflow(a, b, sum);
}

#endif
