#include "util.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void *check_alloc(void *p, size_t size)
{
    if (!p && size)
        die("out of memory allocating %zu bytes", size);
    return p;
}

void *xmalloc(size_t size) { return check_alloc(malloc(size ? size : 1), size); }
void *xzalloc(size_t size) { return check_alloc(calloc(1, size ? size : 1), size); }
void *xcalloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        die("allocation size overflow (%zu x %zu)", n, size);
    return check_alloc(calloc(n ? n : 1, size ? size : 1), total);
}
void *xrealloc(void *p, size_t size) { return check_alloc(realloc(p, size ? size : 1), size); }
char *xstrdup(const char *s) { return check_alloc(strdup(s), strlen(s) + 1); }

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("out of memory formatting a string");
    return s;
}

int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno == ERANGE || v > max)
        return -ERANGE;
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

int parse_size(const char *s, uint64_t default_unit, uint64_t *out)
{
    if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (end == s)
        return -EINVAL;
    uint64_t mult = default_unit;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'B': mult = 1; break;
        case 'K': mult = KiB; break;
        case 'M': mult = MiB; break;
        case 'G': mult = GiB; break;
        case 'T': mult = 1024 * GiB; break;
        case 'P': mult = 1024 * 1024 * GiB; break;
        default: return -EINVAL;
        }
        end++;
        /* Accept "K", "KB", "KiB" spellings. */
        if (mult != 1 && (*end == 'i' || *end == 'I'))
            end++;
        if (mult != 1 && (*end == 'b' || *end == 'B'))
            end++;
        if (*end)
            return -EINVAL;
    }
    uint64_t r;
    if (__builtin_mul_overflow((uint64_t)v, mult, &r))
        return -ERANGE;
    *out = r;
    return 0;
}

int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}
