/* The qcow2 format (QEMU docs/interop/qcow2.rst), versions 2 and 3.
 *
 * Guest offsets map through a two-level table (L1 in memory, L2 tables
 * through an LRU cache) to host clusters; every host cluster's use count
 * lives in refcount blocks found through the refcount table. All metadata
 * is written through (no dirty caches), in the order refcount -> L2 -> L1
 * with flush barriers between dependent writes, so a crash at any point
 * leaves at most leaked clusters.
 *
 * Requests run synchronously under the image's lock; the generic layer
 * runs them on worker threads when the device has an event loop. */
#include "block/qcow2.h"
#include "block/block_int.h"

#include "core/log.h"
#include "core/util.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define QCOW2_MAGIC 0x514649fbu
#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define REFT_OFFSET_MASK 0xfffffffffffffe00ULL
#define OFLAG_COPIED (1ULL << 63)
#define OFLAG_COMPRESSED (1ULL << 62)
#define OFLAG_ZERO 1ULL
#define L1E_RESERVED 0x7f000000000001ffULL
#define L2E_RESERVED 0x3f000000000001feULL
#define MAX_L1_BYTES (32 * MiB)
#define MAX_REFTABLE_BYTES (8 * MiB)
#define MAX_BACKING_DEPTH 64
#define MAX_SNAPSHOTS 65536

#define INCOMPAT_DIRTY (1ULL << 0)
#define INCOMPAT_CORRUPT (1ULL << 1)
#define INCOMPAT_DATA_FILE (1ULL << 2)
#define INCOMPAT_COMPRESSION (1ULL << 3)
#define INCOMPAT_EXTL2 (1ULL << 4)
#define INCOMPAT_KNOWN (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2)
#define COMPAT_LAZY_REFCOUNTS (1ULL << 0)

#define EXT_END 0
#define EXT_BACKING_FORMAT 0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_DATA_FILE 0x44415441u

struct qcow2_header {
    uint32_t magic, version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size, cluster_bits;
    uint64_t size;
    uint32_t crypt_method, l1_size;
    uint64_t l1_table_offset, refcount_table_offset;
    uint32_t refcount_table_clusters, nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible, compatible, autoclear;
    uint32_t refcount_order, header_length;
    uint8_t compression_type;
};

struct tcache_entry {
    uint64_t offset; /* host offset of the table; 0 = empty slot */
    uint64_t used;
    uint8_t *data;
};

/* LRU cache of cluster-sized tables (L2 tables, refcount blocks). Writes go
 * straight to the file; the cache only saves reads. */
struct tcache {
    unsigned n;
    uint64_t tick;
    struct tcache_entry *e;
};

struct qcow2 {
    pthread_mutex_t lock;
    struct block_dev *bd;
    int fd;
    struct qcow2_header h;
    uint64_t cs;              /* cluster size */
    unsigned cb;              /* cluster bits */
    bool ext_l2;
    unsigned l2_esz;          /* L2 entry size: 8, or 16 with subclusters */
    unsigned l2_bits;         /* log2 entries per L2 table */
    uint64_t sub_size;        /* subcluster size (= cs without extended L2) */
    uint64_t *l1;             /* host order */
    uint64_t *reftable;       /* host order */
    uint64_t reftable_entries;
    uint64_t rb_entries;      /* refcounts per refcount block */
    unsigned rc_order;
    struct tcache l2c, rbc;
    uint64_t free_hint;       /* first cluster index that might be free */
    uint64_t alloc_end;       /* bytes: everything at or past it is unused */
    uint64_t file_size;
    char *backing_name, *backing_fmt;
    char *feature_names[64][2]; /* [bit][type] names from the feature table; type 0 = incompat */
    struct block_dev *backing;
    uint8_t *wbuf;            /* one cluster: copy-on-write merges */
    uint8_t *cbuf;            /* one cluster: last decompressed cluster */
    uint64_t cbuf_entry;      /* L2 entry cbuf holds, 0 = none */
    uint8_t *zbuf;            /* compressed input */
    uint64_t comp_next;       /* next free byte for packing compressed data, 0 = none */
    z_stream zs;              /* zlib inflate state, once zs_ready */
    bool zs_ready;
    ZSTD_DCtx *zd;            /* zstd decompression state, or NULL */
};

/* Page-aligned cluster buffers: the kernel copies whole pages into them. */
static void *q_buf(uint64_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0)
        die("out of memory (%llu bytes)", (unsigned long long)size);
    return p;
}

static uint64_t DIV_ROUND_UP_U64(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

static char *xstrndup_safe(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *r = xmalloc(n + 1);
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

static uint64_t *xmemdup_l1(const uint64_t *l1, uint64_t n)
{
    uint64_t *r = xcalloc(n ? n : 1, 8);
    memcpy(r, l1, n * 8);
    return r;
}

static struct qcow2 *Q(const struct block_dev *bd)
{
    return bd->opaque;
}

/* ---------------------------------------------------------------- basics */

static int q_fail(struct qcow2 *q, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int q_fail(struct qcow2 *q, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("%s: %s", q->bd->what, msg);
    return err;
}

static int q_corrupt(struct qcow2 *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int q_corrupt(struct qcow2 *q, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("%s: corrupt image: %s", q->bd->what, msg);
    return -EIO;
}

static int q_pwrite(struct qcow2 *q, const void *buf, uint64_t len, uint64_t off)
{
    int ret = pwrite_full(q->fd, buf, len, off);
    if (ret < 0)
        return q_fail(q, ret, "write of %llu bytes at offset %llu failed: %s",
                      (unsigned long long)len, (unsigned long long)off, strerror(-ret));
    if (off + len > q->file_size)
        q->file_size = off + len;
    if (off + len > q->alloc_end)
        q->alloc_end = ALIGN_UP(off + len, q->cs);
    return 0;
}

static int q_pread(struct qcow2 *q, void *buf, uint64_t len, uint64_t off)
{
    struct iovec iov = { buf, len };
    int ret = file_preadv_full(q->fd, &iov, 1, off);
    if (ret < 0)
        return q_fail(q, ret, "read of %llu bytes at offset %llu failed: %s",
                      (unsigned long long)len, (unsigned long long)off, strerror(-ret));
    return 0;
}

/* Orders dependent metadata writes. */
static int q_barrier(struct qcow2 *q)
{
    if (q->bd->no_barriers)
        return 0;
    if (fdatasync(q->fd) < 0)
        return q_fail(q, -errno, "flush failed: %s", strerror(errno));
    return 0;
}

/* ---------------------------------------------------------------- table cache */

static void tcache_init(struct tcache *c, unsigned n, uint64_t cs)
{
    c->n = n;
    c->e = xcalloc(n, sizeof(*c->e));
    for (unsigned i = 0; i < n; i++)
        c->e[i].data = q_buf(cs);
}

static void tcache_free(struct tcache *c)
{
    for (unsigned i = 0; i < c->n; i++)
        free(c->e[i].data);
    free(c->e);
    c->e = NULL;
}

static int tcache_get(struct qcow2 *q, struct tcache *c, uint64_t off, uint8_t **out)
{
    struct tcache_entry *victim = &c->e[0];
    for (unsigned i = 0; i < c->n; i++) {
        if (c->e[i].offset == off) {
            c->e[i].used = ++c->tick;
            *out = c->e[i].data;
            return 0;
        }
        if (c->e[i].used < victim->used)
            victim = &c->e[i];
    }
    victim->offset = 0;
    int ret = q_pread(q, victim->data, q->cs, off);
    if (ret < 0)
        return ret;
    victim->offset = off;
    victim->used = ++c->tick;
    *out = victim->data;
    return 0;
}

/* Put a freshly written table in the cache without reading it back. */
static void tcache_put(struct tcache *c, uint64_t off, const uint8_t *data, uint64_t cs)
{
    struct tcache_entry *victim = &c->e[0];
    for (unsigned i = 0; i < c->n; i++) {
        if (c->e[i].offset == off) {
            victim = &c->e[i];
            break;
        }
        if (c->e[i].used < victim->used)
            victim = &c->e[i];
    }
    memcpy(victim->data, data, cs);
    victim->offset = off;
    victim->used = ++c->tick;
}

static void tcache_drop(struct tcache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->e[i].offset == off) {
            c->e[i].offset = 0;
            c->e[i].used = 0;
        }
}

/* ---------------------------------------------------------------- refcounts */

static uint64_t rc_get_entry(const uint8_t *blk, unsigned order, uint64_t i)
{
    switch (order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << order;
        uint64_t bit = i * bits;
        return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 3: return blk[i];
    case 4: return be16toh(ld16(blk + 2 * i));
    case 5: return be32toh(ld32(blk + 4 * i));
    default: return be64toh(ld64(blk + 8 * i));
    }
}

/* Sets entry i; returns the byte range of the block that changed. */
static void rc_set_entry(uint8_t *blk, unsigned order, uint64_t i, uint64_t v, uint64_t *boff,
                         uint64_t *blen)
{
    switch (order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << order;
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
        *boff = bit / 8;
        *blen = 1;
        return;
    }
    case 3: blk[i] = (uint8_t)v; *boff = i; *blen = 1; return;
    case 4: st16(blk + 2 * i, htobe16((uint16_t)v)); *boff = 2 * i; *blen = 2; return;
    case 5: st32(blk + 4 * i, htobe32((uint32_t)v)); *boff = 4 * i; *blen = 4; return;
    default: st64(blk + 8 * i, htobe64(v)); *boff = 8 * i; *blen = 8; return;
    }
}

static uint64_t rc_max(const struct qcow2 *q)
{
    return q->rc_order == 6 ? UINT64_MAX : (1ULL << (1u << q->rc_order)) - 1;
}

static int rb_offset(struct qcow2 *q, uint64_t rbi, uint64_t *off)
{
    *off = 0;
    if (rbi >= q->reftable_entries)
        return 0;
    uint64_t e = q->reftable[rbi];
    if (e & ~REFT_OFFSET_MASK)
        return q_corrupt(q, "refcount table entry %llu has reserved bits set",
                         (unsigned long long)rbi);
    if ((e & REFT_OFFSET_MASK) & (q->cs - 1))
        return q_corrupt(q, "refcount block %llu at unaligned offset 0x%llx",
                         (unsigned long long)rbi, (unsigned long long)e);
    *off = e & REFT_OFFSET_MASK;
    return 0;
}

static int rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *rc)
{
    uint64_t off;
    int ret = rb_offset(q, cluster / q->rb_entries, &off);
    *rc = 0;
    if (ret < 0 || off == 0)
        return ret;
    uint8_t *blk;
    ret = tcache_get(q, &q->rbc, off, &blk);
    if (ret < 0)
        return ret;
    *rc = rc_get_entry(blk, q->rc_order, cluster % q->rb_entries);
    return 0;
}

static int rc_set(struct qcow2 *q, uint64_t cluster, uint64_t v);

/* A new refcount block for range rbi, placed inside that range so that it
 * counts itself, avoiding `exclude` (a cluster the caller is about to use). */
static int rb_alloc(struct qcow2 *q, uint64_t rbi, uint64_t exclude)
{
    uint64_t start = rbi * q->rb_entries, end = start + q->rb_entries;
    uint64_t cand = MAX(start, q->alloc_end / q->cs);
    if (cand >= end)
        cand = start;
    while (cand == exclude || cand == 0)
        cand++;
    if (cand >= end)
        return q_fail(q, -ENOSPC, "no room for a refcount block");
    uint8_t *blk = xzalloc(q->cs);
    uint64_t boff, blen;
    rc_set_entry(blk, q->rc_order, cand - start, 1, &boff, &blen);
    int ret = q_pwrite(q, blk, q->cs, cand * q->cs);
    if (ret == 0)
        ret = q_barrier(q);
    if (ret == 0) {
        uint64_t be = htobe64(cand * q->cs);
        ret = q_pwrite(q, &be, 8, q->h.refcount_table_offset + rbi * 8);
    }
    if (ret == 0) {
        q->reftable[rbi] = cand * q->cs;
        tcache_put(&q->rbc, cand * q->cs, blk, q->cs);
        ret = q_barrier(q);
    }
    free(blk);
    return ret;
}

static bool rb_missing(struct qcow2 *q, uint64_t rbi)
{
    return rbi >= q->reftable_entries || (q->reftable[rbi] & REFT_OFFSET_MASK) == 0;
}

/* The refcount table cannot index `cluster`: write a bigger one past the end
 * of the file, together with the refcount blocks that count it. */
static int reftable_grow(struct qcow2 *q, uint64_t cluster)
{
    uint64_t E = q->rb_entries, cs = q->cs;
    uint64_t A = MAX(q->alloc_end / cs, cluster + 1);
    uint64_t T = MAX((uint64_t)q->h.refcount_table_clusters * 2, 1), nb = 0;
    for (int iter = 0;; iter++) {
        if (iter > 1000)
            return q_fail(q, -EIO, "cannot lay out a larger refcount table");
        uint64_t area_end = A + T + nb;
        uint64_t max_rbi = MAX((area_end - 1) / E, cluster / E);
        if (T * cs / 8 <= max_rbi) {
            T = (max_rbi + 1) * 8 / cs + 1;
            continue;
        }
        uint64_t m = 0;
        for (uint64_t r = A / E; r <= (area_end - 1) / E; r++)
            m += rb_missing(q, r);
        if (cluster / E < A / E || cluster / E > (area_end - 1) / E)
            m += rb_missing(q, cluster / E);
        if (m == nb)
            break;
        nb = m;
    }
    if (T * cs > MAX_REFTABLE_BYTES)
        return q_fail(q, -EFBIG, "refcount table would exceed %llu MiB",
                      (unsigned long long)(MAX_REFTABLE_BYTES / MiB));
    uint64_t area_end = A + T + nb, new_entries = T * cs / 8;
    uint64_t *nt = xcalloc(new_entries, 8);
    memcpy(nt, q->reftable, q->reftable_entries * 8);
    uint64_t *new_rbi = xcalloc(nb + 1, 8), j = 0;
    for (uint64_t r = MIN(A / E, cluster / E); r <= MAX((area_end - 1) / E, cluster / E); r++) {
        bool wanted = (r >= A / E && r <= (area_end - 1) / E) || r == cluster / E;
        if (wanted && rb_missing(q, r) && j < nb) {
            new_rbi[j] = r;
            nt[r] = (A + T + j) * cs;
            j++;
        }
    }
    int ret = 0;
    uint8_t *blk = xmalloc(cs);
    for (uint64_t k = 0; k < j && ret == 0; k++) {
        memset(blk, 0, cs);
        uint64_t r = new_rbi[k], boff, blen;
        for (uint64_t x = MAX(A, r * E); x < MIN(area_end, (r + 1) * E); x++)
            rc_set_entry(blk, q->rc_order, x - r * E, 1, &boff, &blen);
        ret = q_pwrite(q, blk, cs, nt[r]);
    }
    /* Area clusters counted by blocks that already exist. */
    for (uint64_t x = A; x < area_end && ret == 0; x++)
        if (!rb_missing(q, x / E))
            ret = rc_set(q, x, 1);
    uint8_t *tbl = xmalloc(T * cs);
    for (uint64_t i = 0; i < new_entries; i++)
        st64(tbl + 8 * i, htobe64(nt[i]));
    if (ret == 0)
        ret = q_pwrite(q, tbl, T * cs, A * cs);
    if (ret == 0)
        ret = q_barrier(q);
    if (ret == 0) {
        uint8_t hdr[12];
        st64(hdr, htobe64(A * cs));
        st32(hdr + 8, htobe32((uint32_t)T));
        ret = q_pwrite(q, hdr, 12, 48);
    }
    if (ret == 0)
        ret = q_barrier(q);
    free(tbl);
    free(blk);
    free(new_rbi);
    if (ret < 0) {
        free(nt);
        return ret;
    }
    uint64_t old_off = q->h.refcount_table_offset, old_clusters = q->h.refcount_table_clusters;
    free(q->reftable);
    q->reftable = nt;
    q->reftable_entries = new_entries;
    q->h.refcount_table_offset = A * cs;
    q->h.refcount_table_clusters = (uint32_t)T;
    if (q->alloc_end < area_end * cs)
        q->alloc_end = area_end * cs;
    for (uint64_t c = old_off / cs; c < old_off / cs + old_clusters && ret == 0; c++)
        ret = rc_set(q, c, 0);
    if (old_off / cs < q->free_hint)
        q->free_hint = old_off / cs;
    return ret;
}

static int rc_set(struct qcow2 *q, uint64_t cluster, uint64_t v)
{
    if (v > rc_max(q))
        return q_fail(q, -ERANGE, "refcount of cluster %llu would overflow %u bits",
                      (unsigned long long)cluster, 1u << q->rc_order);
    uint64_t rbi = cluster / q->rb_entries, off;
    int ret;
    if (rbi >= q->reftable_entries && (ret = reftable_grow(q, cluster)) < 0)
        return ret;
    if ((ret = rb_offset(q, rbi, &off)) < 0)
        return ret;
    if (off == 0) {
        if ((ret = rb_alloc(q, rbi, cluster)) < 0)
            return ret;
        off = q->reftable[rbi];
    }
    if (off < q->cs || off >= q->alloc_end)
        return q_corrupt(q, "refcount block at 0x%llx lies outside the file",
                         (unsigned long long)off);
    uint8_t *blk;
    if ((ret = tcache_get(q, &q->rbc, off, &blk)) < 0)
        return ret;
    uint64_t boff, blen;
    rc_set_entry(blk, q->rc_order, cluster % q->rb_entries, v, &boff, &blen);
    return q_pwrite(q, blk + boff, blen, off + boff);
}

static int rc_add(struct qcow2 *q, uint64_t cluster, int delta)
{
    uint64_t rc;
    int ret = rc_get(q, cluster, &rc);
    if (ret < 0)
        return ret;
    if (delta < 0 && rc == 0)
        return q_corrupt(q, "freeing cluster %llu whose refcount is already 0",
                         (unsigned long long)cluster);
    uint64_t nv = delta < 0 ? rc - 1 : rc + 1;
    if ((ret = rc_set(q, cluster, nv)) < 0)
        return ret;
    if (nv == 0) {
        if (q->comp_next && q->comp_next / q->cs == cluster)
            q->comp_next = 0; /* the packing cluster may be reused for anything now */
        tcache_drop(&q->l2c, cluster * q->cs);
        tcache_drop(&q->rbc, cluster * q->cs);
        if (cluster < q->free_hint)
            q->free_hint = cluster;
    }
    return 0;
}

/* Set the refcounts of clusters [first, first + n) to v with one write per
 * refcount block (those missing are made by rc_set, one cluster at a time). */
static int rc_set_run(struct qcow2 *q, uint64_t first, uint64_t n, uint64_t v)
{
    uint64_t c = first, end = first + n;
    while (c < end) {
        uint64_t rbi = c / q->rb_entries, stop = MIN(end, (rbi + 1) * q->rb_entries), off = 0;
        int ret = rb_offset(q, rbi, &off);
        if (ret < 0)
            return ret;
        if (off == 0 || v > rc_max(q)) {
            for (; c < stop; c++)
                if ((ret = rc_set(q, c, v)) < 0)
                    return ret;
            continue;
        }
        if (off < q->cs || off >= q->alloc_end)
            return q_corrupt(q, "refcount block at 0x%llx lies outside the file",
                             (unsigned long long)off);
        uint8_t *blk;
        if ((ret = tcache_get(q, &q->rbc, off, &blk)) < 0)
            return ret;
        uint64_t lo = UINT64_MAX, hi = 0, boff, blen;
        for (; c < stop; c++) {
            rc_set_entry(blk, q->rc_order, c % q->rb_entries, v, &boff, &blen);
            lo = MIN(lo, boff);
            hi = MAX(hi, boff + blen);
        }
        if ((ret = q_pwrite(q, blk + lo, hi - lo, off + lo)) < 0)
            return ret;
    }
    return 0;
}

/* One free cluster with its refcount set to 1 (not yet flushed). */
static int cluster_alloc_nobarrier(struct qcow2 *q, uint64_t *off)
{
    uint64_t c = MAX(q->free_hint, 1);
    for (;; c++) {
        if (c >= q->alloc_end / q->cs)
            break; /* everything past the end is free */
        uint64_t rc;
        int ret = rc_get(q, c, &rc);
        if (ret < 0)
            return ret;
        if (rc == 0)
            break;
    }
    if (c > (L2E_OFFSET_MASK >> q->cb))
        return q_fail(q, -ENOSPC, "image file would exceed the largest qcow2 offset");
    q->free_hint = c + 1;
    int ret = rc_set(q, c, 1);
    if (ret < 0)
        return ret;
    if (q->alloc_end < (c + 1) * q->cs)
        q->alloc_end = (c + 1) * q->cs;
    *off = c * q->cs;
    return 0;
}

/* One free cluster, its refcount set to 1 and made durable. */
static int cluster_alloc(struct qcow2 *q, uint64_t *off)
{
    int ret = cluster_alloc_nobarrier(q, off);
    return ret < 0 ? ret : q_barrier(q);
}

/* ---------------------------------------------------------------- L1 / L2 */

struct l2_slot {
    uint64_t table_off;  /* host offset of the L2 table, 0 = none */
    uint8_t *table;      /* cached table, NULL when none */
    uint64_t index;
    uint64_t entry, bitmap;
};

static uint64_t l1_index(const struct qcow2 *q, uint64_t gofs)
{
    return gofs >> (q->cb + q->l2_bits);
}

static uint64_t l2_index(const struct qcow2 *q, uint64_t gofs)
{
    return (gofs >> q->cb) & ((1ULL << q->l2_bits) - 1);
}

static int l1_entry_table(struct qcow2 *q, uint64_t l1i, uint64_t *table_off)
{
    *table_off = 0;
    if (l1i >= q->h.l1_size)
        return q_corrupt(q, "guest offset beyond the L1 table");
    uint64_t e = q->l1[l1i];
    if (e & L1E_RESERVED)
        return q_corrupt(q, "L1 entry %llu has reserved bits set", (unsigned long long)l1i);
    *table_off = e & L1E_OFFSET_MASK;
    if (*table_off & (q->cs - 1))
        return q_corrupt(q, "L2 table at unaligned offset 0x%llx",
                         (unsigned long long)*table_off);
    return 0;
}

static int l2_entry_check(struct qcow2 *q, uint64_t e, uint64_t bm)
{
    if (e & OFLAG_COMPRESSED) {
        if (q->ext_l2 && bm)
            return q_corrupt(q, "compressed cluster with a subcluster bitmap");
        return 0;
    }
    uint64_t reserved = L2E_RESERVED | (q->ext_l2 ? OFLAG_ZERO : 0);
    if (e & reserved)
        return q_corrupt(q, "L2 entry 0x%llx has reserved bits set", (unsigned long long)e);
    uint64_t host = e & L2E_OFFSET_MASK;
    if (host & (q->cs - 1))
        return q_corrupt(q, "data cluster at unaligned offset 0x%llx",
                         (unsigned long long)host);
    if (q->ext_l2) {
        if ((bm & (bm >> 32)) & 0xffffffffu)
            return q_corrupt(q, "subcluster marked both allocated and zero");
        if (!host && (bm & 0xffffffffu))
            return q_corrupt(q, "allocated subclusters in an unallocated cluster");
    }
    return 0;
}

static void l2_read_slot(struct qcow2 *q, struct l2_slot *s)
{
    const uint8_t *p = s->table + s->index * q->l2_esz;
    s->entry = be64toh(ld64(p));
    s->bitmap = q->ext_l2 ? be64toh(ld64(p + 8)) : 0;
}

/* Look up the L2 entry for gofs without allocating anything. */
static int l2_lookup(struct qcow2 *q, uint64_t gofs, struct l2_slot *s)
{
    memset(s, 0, sizeof(*s));
    s->index = l2_index(q, gofs);
    int ret = l1_entry_table(q, l1_index(q, gofs), &s->table_off);
    if (ret < 0 || !s->table_off)
        return ret;
    if ((ret = tcache_get(q, &q->l2c, s->table_off, &s->table)) < 0)
        return ret;
    l2_read_slot(q, s);
    return l2_entry_check(q, s->entry, s->bitmap);
}

/* Same, but make sure the L2 table exists and is ours alone (refcount 1),
 * allocating or copying it first. */
static int l2_lookup_for_write(struct qcow2 *q, uint64_t gofs, struct l2_slot *s)
{
    uint64_t l1i = l1_index(q, gofs), old;
    int ret = l1_entry_table(q, l1i, &old);
    if (ret < 0)
        return ret;
    if (old && (q->l1[l1i] & OFLAG_COPIED) && (old < q->cs || old >= q->alloc_end))
        return q_corrupt(q, "L2 table at 0x%llx lies %s", (unsigned long long)old,
                         old < q->cs ? "in the image header" : "past the end of the file");
    if (!old || !(q->l1[l1i] & OFLAG_COPIED)) {
        uint64_t noff;
        if ((ret = cluster_alloc(q, &noff)) < 0)
            return ret;
        uint8_t *tbl;
        if (old) {
            if ((ret = tcache_get(q, &q->l2c, old, &tbl)) < 0)
                return ret;
            memcpy(q->wbuf, tbl, q->cs);
        } else {
            memset(q->wbuf, 0, q->cs);
        }
        if ((ret = q_pwrite(q, q->wbuf, q->cs, noff)) < 0 || (ret = q_barrier(q)) < 0)
            return ret;
        tcache_put(&q->l2c, noff, q->wbuf, q->cs);
        uint64_t be = htobe64(noff | OFLAG_COPIED);
        if ((ret = q_pwrite(q, &be, 8, q->h.l1_table_offset + l1i * 8)) < 0)
            return ret;
        q->l1[l1i] = noff | OFLAG_COPIED;
        if (old) {
            if ((ret = q_barrier(q)) < 0 || (ret = rc_add(q, old / q->cs, -1)) < 0)
                return ret;
        }
    }
    return l2_lookup(q, gofs, s);
}

/* Entry `index` of a cached L2 table, in memory only. */
static void l2_set_entry(struct qcow2 *q, uint8_t *table, uint64_t index, uint64_t entry,
                         uint64_t bitmap)
{
    uint8_t *p = table + index * q->l2_esz;
    st64(p, htobe64(entry));
    if (q->ext_l2)
        st64(p + 8, htobe64(bitmap));
}

static int l2_write_slot(struct qcow2 *q, struct l2_slot *s, uint64_t entry, uint64_t bitmap)
{
    l2_set_entry(q, s->table, s->index, entry, bitmap);
    s->entry = entry;
    s->bitmap = bitmap;
    return q_pwrite(q, s->table + s->index * q->l2_esz, q->l2_esz,
                    s->table_off + s->index * q->l2_esz);
}

/* ---------------------------------------------------------------- compression */

static void compressed_range(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
    unsigned x = 62 - (q->cb - 8);
    *off = e & ((1ULL << x) - 1);
    uint64_t nsec = ((e & ~OFLAG_COMPRESSED) >> x) + 1;
    *len = nsec * 512 - (*off & 511);
}

static int decompress_cluster(struct qcow2 *q, uint64_t e)
{
    if (q->cbuf_entry == e)
        return 0;
    uint64_t off, len;
    compressed_range(q, e, &off, &len);
    len = MIN(len, 2 * q->cs);
    int ret = q_pread(q, q->zbuf, len, off);
    if (ret < 0)
        return ret;
    q->cbuf_entry = 0;
    /* One decompression context per image, reset for each cluster. */
    if (q->h.compression_type == 0) {
        z_stream *z = &q->zs;
        if (!q->zs_ready) {
            memset(z, 0, sizeof(*z));
            if (inflateInit2(z, -12) != Z_OK)
                return q_fail(q, -ENOMEM, "cannot start zlib");
            q->zs_ready = true;
        } else if (inflateReset(z) != Z_OK) {
            return q_fail(q, -EIO, "cannot reset zlib");
        }
        z->next_in = q->zbuf;
        z->avail_in = (uInt)len;
        z->next_out = q->cbuf;
        z->avail_out = (uInt)q->cs;
        int zr = inflate(z, Z_FINISH);
        bool ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && z->avail_out == 0;
        if (!ok)
            return q_corrupt(q, "compressed cluster at 0x%llx does not inflate",
                             (unsigned long long)off);
    } else {
        if (!q->zd && !(q->zd = ZSTD_createDCtx()))
            return q_fail(q, -ENOMEM, "cannot start zstd");
        ZSTD_DCtx *d = q->zd;
        ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
        ZSTD_inBuffer in = { q->zbuf, len, 0 };
        ZSTD_outBuffer out = { q->cbuf, q->cs, 0 };
        size_t zr = 0;
        while (out.pos < out.size && in.pos < in.size) {
            zr = ZSTD_decompressStream(d, &out, &in);
            if (ZSTD_isError(zr) || (zr == 0 && out.pos < out.size))
                break;
        }
        if (out.pos != out.size || ZSTD_isError(zr))
            return q_corrupt(q, "compressed cluster at 0x%llx does not decompress",
                             (unsigned long long)off);
    }
    q->cbuf_entry = e;
    return 0;
}

static int compressed_release(struct qcow2 *q, uint64_t e)
{
    uint64_t off, len;
    compressed_range(q, e, &off, &len);
    uint64_t start = off & ~511ULL, end = (off & ~511ULL) + len + (off & 511);
    for (uint64_t c = start / q->cs; c <= (end - 1) / q->cs; c++) {
        int ret = rc_add(q, c, -1);
        if (ret < 0)
            return ret;
    }
    if (q->cbuf_entry == e)
        q->cbuf_entry = 0;
    return 0;
}

/* ---------------------------------------------------------------- read path */

enum sub_kind { SUB_BACKING, SUB_ZERO, SUB_DATA, SUB_COMPRESSED };

static enum sub_kind sub_classify(const struct qcow2 *q, const struct l2_slot *s, unsigned sub)
{
    uint64_t e = s->entry;
    if (e & OFLAG_COMPRESSED)
        return SUB_COMPRESSED;
    if (q->ext_l2) {
        if (s->bitmap & (1ULL << sub))
            return SUB_DATA;
        if (s->bitmap & (1ULL << (32 + sub)))
            return SUB_ZERO;
        return SUB_BACKING;
    }
    if (q->h.version >= 3 && (e & OFLAG_ZERO))
        return SUB_ZERO;
    return (e & L2E_OFFSET_MASK) ? SUB_DATA : SUB_BACKING;
}

static int iov_slice(struct iovec *dst, const struct iovec *iov, int iovcnt, uint64_t skip,
                     uint64_t len)
{
    int n = 0;
    for (int i = 0; i < iovcnt && len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        uint64_t take = MIN(iov[i].iov_len - skip, len);
        dst[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
        dst[n].iov_len = take;
        n++;
        len -= take;
        skip = 0;
    }
    return n;
}

static void iov_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
}

static int backing_readv(struct qcow2 *q, uint64_t gofs, const struct iovec *iov, int iovcnt,
                         uint64_t len)
{
    uint64_t blen = q->backing ? block_length(q->backing) : 0;
    uint64_t have = gofs < blen ? MIN(len, blen - gofs) : 0;
    if (have) {
        struct iovec part[1024];
        int n = iov_slice(part, iov, iovcnt, 0, have);
        struct block_request r = { .op = BLOCK_OP_READ, .offset = gofs, .iov = part, .iovcnt = n };
        int ret = q->backing->drv->run_sync(q->backing, &r);
        if (ret < 0)
            return ret;
    }
    if (have < len) {
        struct iovec rest[1024];
        int n = iov_slice(rest, iov, iovcnt, have, len - have);
        iov_zero(rest, n);
    }
    return 0;
}

/* A read of plain data at guest offset cur (host cluster host) may go on
 * into the next guest clusters while they are plain data clusters stored
 * contiguously after it. Grows *chunk (at most `left` bytes in all). */
static int data_run_extend(struct qcow2 *q, uint64_t cur, uint64_t host, uint64_t left,
                           uint64_t *chunk)
{
    if (q->ext_l2)
        return 0;
    uint64_t next = (cur & ~(q->cs - 1)) + q->cs;
    while (*chunk < left && *chunk < 64 * q->cs) {
        struct l2_slot s;
        int ret = l2_lookup(q, next, &s);
        if (ret < 0)
            return ret;
        host += q->cs;
        if (sub_classify(q, &s, 0) != SUB_DATA || (s.entry & L2E_OFFSET_MASK) != host)
            return 0;
        *chunk += MIN(q->cs, left - *chunk);
        next += q->cs;
    }
    return 0;
}

static int q_readv(struct qcow2 *q, uint64_t gofs, const struct iovec *iov, int iovcnt,
                   uint64_t len)
{
    struct iovec part[1024];
    uint64_t done = 0;
    while (done < len) {
        uint64_t cur = gofs + done, in = cur & (q->cs - 1);
        struct l2_slot s;
        int ret = l2_lookup(q, cur, &s);
        if (ret < 0)
            return ret;
        unsigned sub = (unsigned)(in / q->sub_size);
        enum sub_kind kind = sub_classify(q, &s, sub);
        uint64_t chunk = MIN(len - done, (q->ext_l2 && kind != SUB_COMPRESSED)
                                             ? q->sub_size - (in & (q->sub_size - 1))
                                             : q->cs - in);
        int n = iov_slice(part, iov, iovcnt, done, chunk);
        switch (kind) {
        case SUB_ZERO:
            iov_zero(part, n);
            break;
        case SUB_BACKING:
            ret = backing_readv(q, cur, part, n, chunk);
            break;
        case SUB_DATA:
            /* Following clusters stored right after this one: one read. */
            if ((ret = data_run_extend(q, cur, s.entry & L2E_OFFSET_MASK, len - done, &chunk)) < 0)
                break;
            n = iov_slice(part, iov, iovcnt, done, chunk);
            ret = file_preadv_full(q->fd, part, n, (s.entry & L2E_OFFSET_MASK) + in);
            if (ret < 0)
                q_fail(q, ret, "read failed: %s", strerror(-ret));
            break;
        case SUB_COMPRESSED:
            ret = decompress_cluster(q, s.entry);
            if (ret == 0)
                iov_from_buf(part, n, 0, q->cbuf + in, chunk);
            break;
        }
        if (ret < 0)
            return ret;
        done += chunk;
    }
    return 0;
}

/* ---------------------------------------------------------------- write path */

static int q_read_buf(struct qcow2 *q, uint64_t gofs, void *buf, uint64_t len)
{
    struct iovec iov = { buf, len };
    return q_readv(q, gofs, &iov, 1, len);
}

/* Release what an L2 entry pointed to, after the new entry is durable. */
static int entry_release(struct qcow2 *q, uint64_t e)
{
    int ret = q_barrier(q);
    if (ret < 0)
        return ret;
    if (e & OFLAG_COMPRESSED)
        return compressed_release(q, e);
    if (e & L2E_OFFSET_MASK)
        return rc_add(q, (e & L2E_OFFSET_MASK) / q->cs, -1);
    return 0;
}

static uint64_t sub_mask(unsigned first, unsigned last_excl)
{
    uint64_t m = 0;
    for (unsigned i = first; i < last_excl; i++)
        m |= 1ULL << i;
    return m;
}

/* L2 updates of one write request, applied together so that one flush
 * orders all their new refcounts and data before the entries that point at
 * them (refcount -> data -> barrier -> L2 -> barrier -> release old). */
#define WBATCH_MAX 64
struct wbatch {
    int n;
    bool need_barrier;
    struct {
        uint64_t gofs, entry, bitmap, old;
        bool release;
    } u[WBATCH_MAX];
};

/* Drop a reference; a data cluster nobody uses any more is also punched
 * out of the file so the space returns to the host. */
static int release_entry_nobarrier(struct qcow2 *q, uint64_t e)
{
    if (e & OFLAG_COMPRESSED)
        return compressed_release(q, e);
    uint64_t host = e & L2E_OFFSET_MASK, rc;
    if (!host)
        return 0;
    int ret = rc_add(q, host / q->cs, -1);
    if (ret == 0 && rc_get(q, host / q->cs, &rc) == 0 && rc == 0)
        file_discard(q->fd, host, q->cs);
    return ret;
}

static int wbatch_flush(struct qcow2 *q, struct wbatch *w)
{
    int ret = 0;
    bool release = false;
    if (w->n == 0)
        return 0;
    if (w->need_barrier && (ret = q_barrier(q)) < 0)
        goto out;
    /* Entries of consecutive clusters in one L2 table: one write. */
    for (int i = 0, j; i < w->n && ret == 0; i = j) {
        struct l2_slot s;
        if ((ret = l2_lookup(q, w->u[i].gofs, &s)) < 0)
            break;
        for (j = i; j < w->n; j++) {
            if (j > i && (w->u[j].gofs != w->u[j - 1].gofs + q->cs ||
                          l1_index(q, w->u[j].gofs) != l1_index(q, w->u[i].gofs)))
                break;
            l2_set_entry(q, s.table, s.index + (uint64_t)(j - i), w->u[j].entry, w->u[j].bitmap);
            release |= w->u[j].release;
        }
        ret = q_pwrite(q, s.table + s.index * q->l2_esz, (uint64_t)(j - i) * q->l2_esz,
                       s.table_off + s.index * q->l2_esz);
    }
    if (ret == 0 && release)
        ret = q_barrier(q);
    for (int i = 0; i < w->n && ret == 0; i++)
        if (w->u[i].release)
            ret = release_entry_nobarrier(q, w->u[i].old);
out:
    w->n = 0;
    w->need_barrier = false;
    return ret;
}

/* Write [gofs, gofs+n) inside one cluster; L2 changes go to the batch. */
static int write_in_cluster(struct qcow2 *q, struct wbatch *w, uint64_t gofs,
                            const struct iovec *iov, int iovcnt, uint64_t n)
{
    uint64_t cl = gofs & ~(q->cs - 1), a = gofs - cl, b = a + n;
    struct l2_slot s;
    int ret = l2_lookup_for_write(q, gofs, &s);
    if (ret < 0)
        return ret;
    uint64_t e = s.entry, host = e & L2E_OFFSET_MASK;
    bool compressed = e & OFLAG_COMPRESSED;
    bool owned = !compressed && host && (e & OFLAG_COPIED);
    if (owned && (host < q->cs || host >= q->alloc_end))
        return q_corrupt(q, "L2 entry points %s (0x%llx)",
                         host < q->cs ? "into the image header" : "past the end of the file",
                         (unsigned long long)host);

    /* Fast path: our own plain data cluster. */
    if (owned && !q->ext_l2 && !(q->h.version >= 3 && (e & OFLAG_ZERO))) {
        ret = file_pwritev_full(q->fd, iov, iovcnt, host + a);
        if (ret < 0)
            return q_fail(q, ret, "write failed: %s", strerror(-ret));
        if (host + b > q->file_size)
            q->file_size = host + b;
        return 0;
    }

    uint64_t A = 0, B = q->cs;
    bool whole_cow = !owned && (compressed || host);
    if (q->ext_l2 && !whole_cow) {
        A = ALIGN_DOWN(a, q->sub_size);
        B = ALIGN_UP(b, q->sub_size);
    }
    /* Current contents around the new bytes, through the old mapping. */
    if (a != A || b != B) {
        if ((ret = q_read_buf(q, cl + A, q->wbuf + A, B - A)) < 0)
            return ret;
    }
    iov_to_buf(iov, iovcnt, 0, q->wbuf + a, n);

    uint64_t target = owned ? host : 0;
    if (!owned) {
        if ((ret = cluster_alloc_nobarrier(q, &target)) < 0)
            return ret;
        w->need_barrier = true;
    }
    if ((ret = q_pwrite(q, q->wbuf + A, B - A, target + A)) < 0)
        return ret;

    uint64_t nbm = 0;
    if (q->ext_l2) {
        if (whole_cow) {
            nbm = 0xffffffffULL;
        } else {
            uint64_t m = sub_mask((unsigned)(A / q->sub_size), (unsigned)(B / q->sub_size));
            nbm = (s.bitmap | m) & ~(m << 32);
        }
    }
    w->u[w->n].gofs = cl;
    w->u[w->n].entry = target | OFLAG_COPIED;
    w->u[w->n].bitmap = nbm;
    w->u[w->n].old = e;
    w->u[w->n].release = !owned && (compressed || host);
    if (++w->n == WBATCH_MAX)
        return wbatch_flush(q, w);
    return 0;
}

static int cluster_alloc_contiguous(struct qcow2 *q, uint64_t n, uint64_t *off);

/* How many whole clusters from gofs on (at most max, inside one L2 table)
 * store nothing yet, so that a write may place them anywhere. */
static int fresh_clusters(struct qcow2 *q, uint64_t gofs, uint64_t max, uint64_t *count)
{
    *count = 0;
    max = MIN(max, (1ULL << q->l2_bits) - l2_index(q, gofs));
    for (uint64_t k = 0; k < max; k++) {
        struct l2_slot s;
        int ret = l2_lookup(q, gofs + k * q->cs, &s);
        if (ret < 0)
            return ret;
        if ((s.entry & OFLAG_COMPRESSED) || (s.entry & L2E_OFFSET_MASK))
            break;
        (*count)++;
    }
    return 0;
}

/* A write covering two or more whole clusters that store nothing yet:
 * allocate them contiguously and write the data straight from the caller's
 * buffers in one go. *written: clusters done (0: take the per-cluster path). */
static int write_fresh_run(struct qcow2 *q, struct wbatch *w, uint64_t gofs,
                           const struct iovec *iov, int iovcnt, uint64_t max, uint64_t *written)
{
    struct l2_slot s;
    uint64_t k, host;
    *written = 0;
    if (q->ext_l2)
        return 0;
    if (w->n > WBATCH_MAX - 2) {
        int ret = wbatch_flush(q, w);
        if (ret < 0)
            return ret;
    }
    max = MIN(max, (uint64_t)(WBATCH_MAX - w->n));
    int ret = l2_lookup_for_write(q, gofs, &s);
    if (ret < 0 || (ret = fresh_clusters(q, gofs, max, &k)) < 0 || k < 2)
        return ret;
    if ((ret = cluster_alloc_contiguous(q, k, &host)) < 0)
        return ret;
    struct iovec part[1024];
    int n = iov_slice(part, iov, iovcnt, 0, k * q->cs);
    if ((ret = file_pwritev_full(q->fd, part, n, host)) < 0)
        return q_fail(q, ret, "write failed: %s", strerror(-ret));
    if (host + k * q->cs > q->file_size)
        q->file_size = host + k * q->cs;
    for (uint64_t i = 0; i < k; i++) {
        w->u[w->n].gofs = gofs + i * q->cs;
        w->u[w->n].entry = (host + i * q->cs) | OFLAG_COPIED;
        w->u[w->n].bitmap = 0;
        w->u[w->n].old = 0;
        w->u[w->n].release = false; /* nothing was stored there */
        w->n++;
    }
    w->need_barrier = true;
    *written = k;
    return 0;
}

static int q_writev(struct qcow2 *q, uint64_t gofs, const struct iovec *iov, int iovcnt,
                    uint64_t len)
{
    struct iovec part[1024];
    struct wbatch w;
    uint64_t done = 0;
    w.n = 0;
    w.need_barrier = false;
    while (done < len) {
        uint64_t cur = gofs + done, chunk = MIN(len - done, q->cs - (cur & (q->cs - 1)));
        if (!(cur & (q->cs - 1)) && len - done >= 2 * q->cs) {
            uint64_t k;
            int n = iov_slice(part, iov, iovcnt, done, len - done);
            int ret = write_fresh_run(q, &w, cur, part, n, (len - done) / q->cs, &k);
            if (ret < 0) {
                wbatch_flush(q, &w);
                return ret;
            }
            if (k) {
                done += k * q->cs;
                continue;
            }
        }
        int n = iov_slice(part, iov, iovcnt, done, chunk);
        int ret = write_in_cluster(q, &w, cur, part, n, chunk);
        if (ret < 0) {
            wbatch_flush(q, &w); /* keep what was written consistent */
            return ret;
        }
        done += chunk;
    }
    return wbatch_flush(q, &w);
}

static int write_zero_bytes(struct qcow2 *q, uint64_t gofs, uint64_t len)
{
    static const uint8_t zero[4096];
    while (len) {
        uint64_t n = MIN(len, sizeof(zero));
        struct iovec iov = { (void *)zero, n };
        int ret = q_writev(q, gofs, &iov, 1, n);
        if (ret < 0)
            return ret;
        gofs += n;
        len -= n;
    }
    return 0;
}

/* Whole cluster becomes zeroes (zero_mode) or unallocated (discard). */
static int clear_cluster(struct qcow2 *q, struct wbatch *w, uint64_t gofs, bool zero_mode,
                         bool may_unmap)
{
    struct l2_slot s;
    int ret = l2_lookup(q, gofs, &s);
    if (ret < 0)
        return ret;
    if (!s.table && !zero_mode)
        return 0; /* nothing allocated; discard has nothing to do */
    bool v3 = q->h.version >= 3;
    bool has_backing = q->backing != NULL || q->backing_name != NULL;
    if (!v3 && zero_mode && has_backing)
        return write_zero_bytes(q, gofs, q->cs);
    if ((ret = l2_lookup_for_write(q, gofs, &s)) < 0)
        return ret;
    uint64_t e = s.entry, host = e & L2E_OFFSET_MASK;
    bool owned = !(e & OFLAG_COMPRESSED) && host && (e & OFLAG_COPIED);
    bool keep = zero_mode && !may_unmap && owned && v3; /* v2 has no zero flag */
    uint64_t ne, nbm = 0;
    if (q->ext_l2) {
        ne = keep ? e : 0;
        nbm = (zero_mode || has_backing) ? 0xffffffffULL << 32 : 0;
    } else if (v3) {
        ne = keep ? (e | OFLAG_ZERO) : ((zero_mode || has_backing) ? OFLAG_ZERO : 0);
    } else {
        ne = 0;
    }
    if (ne == e && nbm == s.bitmap)
        return 0;
    w->u[w->n].gofs = gofs;
    w->u[w->n].entry = ne;
    w->u[w->n].bitmap = nbm;
    w->u[w->n].old = e;
    w->u[w->n].release = !keep && ((e & OFLAG_COMPRESSED) || host);
    if (++w->n == WBATCH_MAX)
        return wbatch_flush(q, w);
    return 0;
}

static int q_zero_or_discard(struct qcow2 *q, uint64_t gofs, uint64_t len, bool zero_mode,
                             bool may_unmap)
{
    struct wbatch w;
    w.n = 0;
    w.need_barrier = false;
    while (len) {
        uint64_t in = gofs & (q->cs - 1), chunk = MIN(len, q->cs - in);
        int ret;
        if (in == 0 && (chunk == q->cs || gofs + chunk == q->bd->length))
            ret = clear_cluster(q, &w, gofs, zero_mode, may_unmap);
        else
            ret = zero_mode ? write_zero_bytes(q, gofs, chunk) : 0;
        if (ret < 0) {
            wbatch_flush(q, &w);
            return ret;
        }
        gofs += chunk;
        len -= chunk;
    }
    return wbatch_flush(q, &w);
}

/* ---------------------------------------------------------------- driver ops */

static int qcow2_run_sync(struct block_dev *bd, const struct block_request *req)
{
    struct qcow2 *q = Q(bd);
    int ret = 0;
    pthread_mutex_lock(&q->lock);
    switch (req->op) {
    case BLOCK_OP_READ:
        ret = q_readv(q, req->offset, req->iov, req->iovcnt, iov_size(req->iov, req->iovcnt));
        break;
    case BLOCK_OP_WRITE:
        ret = q_writev(q, req->offset, req->iov, req->iovcnt, iov_size(req->iov, req->iovcnt));
        break;
    case BLOCK_OP_FLUSH:
        if (!bd->readonly && fdatasync(q->fd) < 0)
            ret = q_fail(q, -errno, "flush failed: %s", strerror(errno));
        break;
    case BLOCK_OP_DISCARD:
        ret = q_zero_or_discard(q, req->offset, req->len, false, true);
        break;
    case BLOCK_OP_WRITE_ZEROES:
        ret = q_zero_or_discard(q, req->offset, req->len, true, req->may_unmap);
        break;
    }
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int q_map_locked(struct qcow2 *q, uint64_t offset, uint64_t len, uint64_t *pnum,
                        unsigned *status, uint64_t *host)
{
    uint64_t done = 0;
    unsigned first = 0;
    uint64_t first_host = 0;
    while (done < len) {
        uint64_t cur = offset + done, in = cur & (q->cs - 1);
        struct l2_slot s;
        int ret = l2_lookup(q, cur, &s);
        if (ret < 0)
            return ret;
        unsigned sub = (unsigned)(in / q->sub_size);
        enum sub_kind kind = sub_classify(q, &s, sub);
        uint64_t chunk = MIN(len - done, (q->ext_l2 && kind != SUB_COMPRESSED)
                                             ? q->sub_size - (in & (q->sub_size - 1))
                                             : q->cs - in);
        unsigned st = 0;
        uint64_t h = 0;
        switch (kind) {
        case SUB_ZERO: st = BLOCK_STATUS_ZERO | BLOCK_STATUS_ALLOCATED; break;
        case SUB_DATA:
            st = BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED;
            h = (s.entry & L2E_OFFSET_MASK) + in;
            break;
        case SUB_COMPRESSED: st = BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED; break;
        case SUB_BACKING:
            st = BLOCK_STATUS_ZERO;
            if (q->backing && cur < block_length(q->backing)) {
                /* What the chain below says, without claiming it as ours. */
                uint64_t bnum;
                unsigned bst;
                chunk = MIN(chunk, block_length(q->backing) - cur);
                ret = block_status(q->backing, cur, chunk, &bnum, &bst);
                if (ret < 0)
                    return ret;
                chunk = bnum;
                st = bst & ~BLOCK_STATUS_ALLOCATED;
            }
            break;
        }
        if (done == 0) {
            first = st;
            first_host = h;
        } else if (st != first || (first_host && h != first_host + done) || (!first_host && h)) {
            break;
        }
        done += chunk;
    }
    *pnum = done;
    *status = first;
    if (host)
        *host = first_host;
    return 0;
}

static int qcow2_block_status(struct block_dev *bd, uint64_t offset, uint64_t len,
                              uint64_t *pnum, unsigned *status)
{
    struct qcow2 *q = Q(bd);
    pthread_mutex_lock(&q->lock);
    int ret = q_map_locked(q, offset, len, pnum, status, NULL);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

int qcow2_map(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
              unsigned *status, uint64_t *host)
{
    struct qcow2 *q = Q(bd);
    uint64_t end;
    if (add_overflows(offset, len, &end) || end > bd->length || len == 0)
        return -EINVAL;
    pthread_mutex_lock(&q->lock);
    int ret = q_map_locked(q, offset, len, pnum, status, host);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static void qcow2_close(struct block_dev *bd)
{
    struct qcow2 *q = Q(bd);
    if (!q)
        return;
    if (q->backing)
        block_close(q->backing);
    tcache_free(&q->l2c);
    tcache_free(&q->rbc);
    free(q->l1);
    free(q->reftable);
    free(q->backing_name);
    free(q->backing_fmt);
    for (int i = 0; i < 64; i++)
        for (int t = 0; t < 2; t++)
            free(q->feature_names[i][t]);
    free(q->wbuf);
    free(q->cbuf);
    free(q->zbuf);
    if (q->zs_ready)
        inflateEnd(&q->zs);
    ZSTD_freeDCtx(q->zd);
    pthread_mutex_destroy(&q->lock);
    free(q);
    bd->opaque = NULL;
}

static const struct block_driver block_driver_qcow2 = {
    .name = "qcow2",
    .run_sync = qcow2_run_sync,
    .close = qcow2_close,
    .block_status = qcow2_block_status,
};

struct block_dev *block_backing(const struct block_dev *bd)
{
    if (bd->drv != &block_driver_qcow2)
        return NULL;
    return Q(bd)->backing;
}

uint32_t qcow2_cluster_size(const struct block_dev *bd)
{
    return bd->drv == &block_driver_qcow2 ? (uint32_t)Q(bd)->cs : 0;
}

/* ---------------------------------------------------------------- header */

bool qcow2_probe(const uint8_t *buf, size_t len)
{
    return len >= 8 && be32toh(ld32(buf)) == QCOW2_MAGIC &&
           (be32toh(ld32(buf + 4)) == 2 || be32toh(ld32(buf + 4)) == 3);
}

static void header_decode(const uint8_t *b, uint64_t blen, struct qcow2_header *h)
{
    memset(h, 0, sizeof(*h));
    h->magic = be32toh(ld32(b + 0));
    h->version = be32toh(ld32(b + 4));
    h->backing_file_offset = be64toh(ld64(b + 8));
    h->backing_file_size = be32toh(ld32(b + 16));
    h->cluster_bits = be32toh(ld32(b + 20));
    h->size = be64toh(ld64(b + 24));
    h->crypt_method = be32toh(ld32(b + 32));
    h->l1_size = be32toh(ld32(b + 36));
    h->l1_table_offset = be64toh(ld64(b + 40));
    h->refcount_table_offset = be64toh(ld64(b + 48));
    h->refcount_table_clusters = be32toh(ld32(b + 56));
    h->nb_snapshots = be32toh(ld32(b + 60));
    h->snapshots_offset = be64toh(ld64(b + 64));
    if (h->version >= 3 && blen >= 104) {
        h->incompatible = be64toh(ld64(b + 72));
        h->compatible = be64toh(ld64(b + 80));
        h->autoclear = be64toh(ld64(b + 88));
        h->refcount_order = be32toh(ld32(b + 96));
        h->header_length = be32toh(ld32(b + 100));
        if (h->header_length > 104 && blen > 104)
            h->compression_type = b[104];
    } else {
        h->refcount_order = 4;
        h->header_length = 72;
    }
}

/* Is [off, off+len) cluster-aligned and inside the file? */
static bool range_ok(uint64_t off, uint64_t len, uint64_t cs, uint64_t file_size)
{
    uint64_t end;
    return (off & (cs - 1)) == 0 && !add_overflows(off, len, &end) && end <= file_size;
}

int qcow2_validate_header(const uint8_t *b, uint64_t blen, uint64_t file_size, const char *what)
{
    if (blen < 72)
        return log_fail(-EINVAL, "%s: too short for a qcow2 header", what);
    struct qcow2_header h;
    header_decode(b, blen, &h);
    if (h.magic != QCOW2_MAGIC)
        return log_fail(-EINVAL, "%s: not a qcow2 image (bad magic)", what);
    if (h.version != 2 && h.version != 3)
        return log_fail(-ENOTSUP, "%s: unsupported qcow2 version %u", what, h.version);
    if (h.cluster_bits < 9 || h.cluster_bits > 21)
        return log_fail(-EINVAL, "%s: cluster size 2^%u is outside 512 B..2 MiB", what,
                        h.cluster_bits);
    uint64_t cs = 1ULL << h.cluster_bits;
    if (h.version == 3) {
        if (blen < 104)
            return log_fail(-EINVAL, "%s: too short for a qcow2 v3 header", what);
        if (h.header_length < 104 || h.header_length > cs || h.header_length > blen)
            return log_fail(-EINVAL, "%s: invalid header length %u", what, h.header_length);
        if (h.refcount_order > 6)
            return log_fail(-EINVAL, "%s: refcount order %u is above 6", what, h.refcount_order);
    }
    if (h.crypt_method)
        return log_fail(-ENOTSUP, "%s: encrypted qcow2 images are not supported", what);
    if (h.backing_file_offset) {
        uint64_t end;
        if (h.backing_file_size > 1023 ||
            add_overflows(h.backing_file_offset, h.backing_file_size, &end) || end > cs ||
            end > blen)
            return log_fail(-EINVAL, "%s: backing file name lies outside the header cluster",
                            what);
    }
    if (h.size > (1ULL << 62))
        return log_fail(-EINVAL, "%s: virtual size %llu is too large", what,
                        (unsigned long long)h.size);
    unsigned esz = (h.incompatible & INCOMPAT_EXTL2) ? 16 : 8;
    if ((h.incompatible & INCOMPAT_EXTL2) && h.cluster_bits < 14)
        return log_fail(-EINVAL, "%s: extended L2 entries need clusters of at least 16 KiB", what);
    uint64_t l2_entries = cs / esz;
    uint64_t needed = DIV_ROUND_UP_U64(h.size, cs * l2_entries);
    if ((uint64_t)h.l1_size * 8 > MAX_L1_BYTES)
        return log_fail(-EFBIG, "%s: L1 table of %u entries is too large", what, h.l1_size);
    if (h.l1_size < needed)
        return log_fail(-EINVAL, "%s: L1 table of %u entries is too small for the virtual size",
                        what, h.l1_size);
    if (h.l1_size && !range_ok(h.l1_table_offset, (uint64_t)h.l1_size * 8, cs, file_size))
        return log_fail(-EINVAL, "%s: L1 table offset 0x%llx is invalid or past the end of the file",
                        what, (unsigned long long)h.l1_table_offset);
    if (h.refcount_table_clusters == 0 ||
        (uint64_t)h.refcount_table_clusters * cs > MAX_REFTABLE_BYTES)
        return log_fail(-EINVAL, "%s: refcount table of %u clusters is invalid", what,
                        h.refcount_table_clusters);
    if (!range_ok(h.refcount_table_offset, (uint64_t)h.refcount_table_clusters * cs, cs,
                  file_size) || h.refcount_table_offset == 0)
        return log_fail(-EINVAL,
                        "%s: refcount table offset 0x%llx is invalid or past the end of the file",
                        what, (unsigned long long)h.refcount_table_offset);
    if (h.nb_snapshots > MAX_SNAPSHOTS)
        return log_fail(-EINVAL, "%s: too many snapshots (%u)", what, h.nb_snapshots);
    if (h.nb_snapshots && !range_ok(h.snapshots_offset, 40ULL * h.nb_snapshots, cs, file_size))
        return log_fail(-EINVAL, "%s: snapshot table offset 0x%llx is invalid", what,
                        (unsigned long long)h.snapshots_offset);
    return 0;
}

static char *feature_name(struct qcow2 *q, int type, int bit)
{
    return q->feature_names[bit][type];
}

/* Header extensions: backing format, feature names, external data file. */
static int header_parse_extensions(struct qcow2 *q, const uint8_t *b, uint64_t blen)
{
    uint64_t off = q->h.header_length;
    uint64_t limit = MIN(blen, q->cs);
    if (q->h.backing_file_offset && q->h.backing_file_offset >= off)
        limit = MIN(limit, q->h.backing_file_offset);
    while (off + 8 <= limit) {
        uint32_t type = be32toh(ld32(b + off)), len = be32toh(ld32(b + off + 4));
        off += 8;
        if (type == EXT_END)
            return 0;
        if (len > limit - off)
            return log_fail(-EINVAL, "%s: header extension 0x%08x overruns the header",
                            q->bd->what, type);
        const uint8_t *d = b + off;
        switch (type) {
        case EXT_BACKING_FORMAT:
            if (len == 0 || len > 16)
                return log_fail(-EINVAL, "%s: invalid backing format extension", q->bd->what);
            free(q->backing_fmt);
            q->backing_fmt = xzalloc(len + 1);
            memcpy(q->backing_fmt, d, len);
            break;
        case EXT_FEATURE_TABLE:
            for (uint32_t i = 0; i + 48 <= len; i += 48) {
                unsigned t = d[i], bit = d[i + 1];
                if (t <= 1 && bit < 64 && !q->feature_names[bit][t])
                    q->feature_names[bit][t] = xstrndup_safe((const char *)d + i + 2, 46);
            }
            break;
        case EXT_DATA_FILE:
            return log_fail(-ENOTSUP, "%s: images with an external data file are not supported",
                            q->bd->what);
        default:
            break; /* unknown extensions are ignored, as the spec allows */
        }
        off += ALIGN_UP((uint64_t)len, 8);
    }
    return 0;
}

/* ---------------------------------------------------------------- consistency check */

struct check_ctx {
    struct qcow2 *q;
    uint32_t *ref;
    uint64_t nclusters;
    struct qcow2_check_result *res;
    uint8_t *l2buf;
    bool quiet;     /* no per-problem lines (repair of a dirty image at open) */
};

static void check_say(const struct check_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void check_say(const struct check_ctx *c, const char *fmt, ...)
{
    if (c->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void check_ref(struct check_ctx *c, uint64_t off, uint64_t len, const char *what)
{
    if (len == 0)
        return;
    uint64_t first = off / c->q->cs, last = (off + len - 1) / c->q->cs;
    for (uint64_t k = first; k <= last; k++) {
        if (k >= c->nclusters) {
            check_say(c, "ERROR %s at offset 0x%llx is past the end of the image file\n",
                    what, (unsigned long long)(k * c->q->cs));
            c->res->corruptions++;
            return;
        }
        if (c->ref[k] < UINT32_MAX)
            c->ref[k]++;
    }
}

static int check_l1(struct check_ctx *c, const uint64_t *l1, uint64_t l1_size, bool active)
{
    struct qcow2 *q = c->q;
    uint64_t entries = 1ULL << q->l2_bits, last_host = 0;
    /* Walk each L2 table once per L1 table: hostile images may point many
     * L1 entries at one table (the duplicate references still count). */
    uint8_t *walked = xzalloc(c->nclusters);
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK;
        if (e & L1E_RESERVED) {
            check_say(c, "ERROR L1 entry %llu has reserved bits set\n", (unsigned long long)i);
            c->res->corruptions++;
        }
        if (!off)
            continue;
        if (off & (q->cs - 1)) {
            check_say(c, "ERROR L2 table %llu at unaligned offset 0x%llx\n",
                    (unsigned long long)i, (unsigned long long)off);
            c->res->corruptions++;
            continue;
        }
        check_ref(c, off, q->cs, "L2 table");
        if (off >= q->file_size || walked[off / q->cs])
            continue;
        walked[off / q->cs] = 1;
        last_host = 0; /* contiguity is judged within one L2 table */
        if (q_pread(q, c->l2buf, q->cs, off) < 0) {
            c->res->check_errors++;
            continue;
        }
        for (uint64_t j = 0; j < entries; j++) {
            const uint8_t *p = c->l2buf + j * q->l2_esz;
            uint64_t l2e = be64toh(ld64(p)), bm = q->ext_l2 ? be64toh(ld64(p + 8)) : 0;
            uint64_t reserved = L2E_RESERVED | (q->ext_l2 ? OFLAG_ZERO : 0);
            if (l2e & OFLAG_COMPRESSED) {
                uint64_t coff, clen;
                compressed_range(q, l2e, &coff, &clen);
                check_ref(c, coff & ~511ULL, clen + (coff & 511), "compressed cluster");
                if (active) {
                    c->res->allocated_clusters++;
                    c->res->compressed_clusters++;
                    c->res->fragmented_clusters++; /* as qemu-img counts them */
                }
                continue;
            }
            uint64_t host = l2e & L2E_OFFSET_MASK;
            if (host & (q->cs - 1)) {
                /* Counted all the same, over the cluster-sized range it names
                 * (as qemu-img does, so both report the same overlaps). */
                check_say(c, "ERROR offset=%llx: Data cluster is not properly aligned; L2 entry "
                          "corrupted.\n", (unsigned long long)host);
                c->res->corruptions++;
            } else if ((l2e & reserved) || (q->ext_l2 && ((bm & (bm >> 32)) & 0xffffffffu))) {
                check_say(c, "ERROR invalid L2 entry 0x%llx (table %llu, index %llu)\n",
                        (unsigned long long)l2e, (unsigned long long)i, (unsigned long long)j);
                c->res->corruptions++;
                continue;
            }
            if (!host)
                continue;
            check_ref(c, host, q->cs, "data cluster");
            if (active) {
                c->res->allocated_clusters++;
                if (last_host && host != last_host + q->cs)
                    c->res->fragmented_clusters++;
                last_host = host;
            }
        }
    }
    free(walked);
    return 0;
}

static int check_snapshots(struct check_ctx *c)
{
    struct qcow2 *q = c->q;
    uint64_t off = q->h.snapshots_offset;
    uint8_t *walked = xzalloc(c->nclusters);
    for (uint32_t i = 0; i < q->h.nb_snapshots; i++) {
        uint8_t hdr[40];
        if (off + 40 > q->file_size || q_pread(q, hdr, 40, off) < 0) {
            check_say(c, "ERROR snapshot table is truncated\n");
            c->res->corruptions++;
            free(walked);
            return 0;
        }
        uint64_t l1_off = be64toh(ld64(hdr)), l1_size = be32toh(ld32(hdr + 8));
        uint64_t id_len = be16toh(ld16(hdr + 12)), name_len = be16toh(ld16(hdr + 14));
        uint64_t extra = be32toh(ld32(hdr + 36));
        off = ALIGN_UP(off + 40 + extra + id_len + name_len, 8);
        if (l1_size * 8 > MAX_L1_BYTES || !range_ok(l1_off, l1_size * 8, q->cs, q->file_size)) {
            check_say(c, "ERROR snapshot %u has an invalid L1 table\n", i);
            c->res->corruptions++;
            continue;
        }
        check_ref(c, l1_off, l1_size * 8, "snapshot L1 table");
        if (l1_size == 0 || walked[l1_off / q->cs])
            continue; /* the same table listed twice: counted, not walked again */
        walked[l1_off / q->cs] = 1;
        uint64_t *l1 = xcalloc(l1_size ? l1_size : 1, 8);
        if (q_pread(q, l1, l1_size * 8, l1_off) == 0) {
            for (uint64_t k = 0; k < l1_size; k++)
                l1[k] = be64toh(l1[k]);
            check_l1(c, l1, l1_size, false);
        } else {
            c->res->check_errors++;
        }
        free(l1);
    }
    if (q->h.nb_snapshots)
        check_ref(c, q->h.snapshots_offset, off - q->h.snapshots_offset, "snapshot table");
    free(walked);
    return 0;
}

/* Each refcount block must be referenced exactly once: by the table. */
static void check_refblock_refs(struct check_ctx *c)
{
    struct qcow2 *q = c->q;
    for (uint64_t r = 0; r < q->reftable_entries; r++) {
        uint64_t off = q->reftable[r] & REFT_OFFSET_MASK, k = off / q->cs;
        if (!off || (off & (q->cs - 1)) || k >= c->nclusters || c->ref[k] == 1)
            continue;
        check_say(c, "ERROR refcount block %llu refcount=%u\n", (unsigned long long)r, c->ref[k]);
        c->res->corruptions++;
    }
}

/* COPIED flags of the active tables must say "stored refcount is exactly 1"
 * (qemu-img counts each mismatch as a corruption, repaired with -r all). */
static void check_copied_flag(struct check_ctx *c, uint64_t entry, uint64_t host, bool fix,
                              const char *what, uint64_t where, bool *repair, uint64_t *fixed)
{
    uint64_t rc;
    *repair = false;
    if (rc_get(c->q, host / c->q->cs, &rc) < 0) {
        c->res->check_errors++;
        return;
    }
    if ((rc == 1) == ((entry & OFLAG_COPIED) != 0))
        return;
    if (what[0] == 'L')
        check_say(c, "%s OFLAG_COPIED L2 cluster: l1_index=%llu l1_entry=%llx refcount=%llu\n",
                  fix ? "Repairing" : "ERROR", (unsigned long long)where,
                  (unsigned long long)entry, (unsigned long long)rc);
    else
        check_say(c, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu\n",
                  fix ? "Repairing" : "ERROR", (unsigned long long)entry, (unsigned long long)rc);
    *fixed = rc == 1 ? (entry | OFLAG_COPIED) : (entry & ~OFLAG_COPIED);
    if (fix)
        c->res->corruptions_fixed++;
    else
        c->res->corruptions++;
    *repair = fix;
}

static void check_copied_flags(struct check_ctx *c, int fix_flags)
{
    struct qcow2 *q = c->q;
    bool fix = fix_flags & QCOW2_FIX_ERRORS, repair;
    uint64_t fixed;
    for (uint64_t i = 0; i < q->h.l1_size; i++) {
        uint64_t e = q->l1[i], toff = e & L1E_OFFSET_MASK;
        if (!toff || (e & L1E_RESERVED) || (toff & (q->cs - 1)))
            continue;
        check_copied_flag(c, e, toff, fix, "L2 cluster", i, &repair, &fixed);
        if (repair) {
            uint64_t be = htobe64(fixed);
            if (q_pwrite(q, &be, 8, q->h.l1_table_offset + i * 8) == 0)
                q->l1[i] = fixed;
            else
                c->res->check_errors++;
        }
        if (toff >= q->file_size)
            continue; /* reported while counting */
        if (q_pread(q, c->l2buf, q->cs, toff) < 0) {
            c->res->check_errors++;
            continue;
        }
        bool dirty = false;
        for (uint64_t j = 0; j < (1ULL << q->l2_bits); j++) {
            uint8_t *p = c->l2buf + j * q->l2_esz;
            uint64_t l2e = be64toh(ld64(p)), host = l2e & L2E_OFFSET_MASK;
            if ((l2e & OFLAG_COMPRESSED) || !host || (host & (q->cs - 1)))
                continue;
            check_copied_flag(c, l2e, host, fix, "data cluster", l2e, &repair, &fixed);
            if (repair) {
                st64(p, htobe64(fixed));
                dirty = true;
            }
        }
        if (dirty) {
            if (q_pwrite(q, c->l2buf, q->cs, toff) < 0)
                c->res->check_errors++;
            tcache_drop(&q->l2c, toff);
        }
    }
}

static int check_locked(struct qcow2 *q, int fix, struct qcow2_check_result *res, bool quiet)
{
    memset(res, 0, sizeof(*res));
    struct check_ctx c = { .q = q, .res = res, .quiet = quiet };
    c.nclusters = DIV_ROUND_UP_U64(MAX(q->file_size, 1), q->cs);
    if (c.nclusters > (1ULL << 31))
        return q_fail(q, -EFBIG, "image file has too many clusters to check");
    c.ref = calloc(c.nclusters, sizeof(uint32_t));
    if (!c.ref)
        return q_fail(q, -ENOMEM, "not enough memory to check the image");
    c.l2buf = xmalloc(q->cs);
    res->total_clusters = DIV_ROUND_UP_U64(q->bd->length, q->cs);

    check_ref(&c, 0, q->cs, "header");
    check_ref(&c, q->h.l1_table_offset, (uint64_t)q->h.l1_size * 8, "L1 table");
    check_l1(&c, q->l1, q->h.l1_size, true);
    check_ref(&c, q->h.refcount_table_offset, (uint64_t)q->h.refcount_table_clusters * q->cs,
              "refcount table");
    for (uint64_t r = 0; r < q->reftable_entries; r++) {
        uint64_t off = q->reftable[r] & REFT_OFFSET_MASK;
        if (!off)
            continue;
        if ((q->reftable[r] & ~REFT_OFFSET_MASK) || (off & (q->cs - 1))) {
            check_say(&c, "ERROR refcount block %llu has an invalid offset\n",
                    (unsigned long long)r);
            res->corruptions++;
            continue;
        }
        check_ref(&c, off, q->cs, "refcount block");
    }
    check_snapshots(&c);
    check_refblock_refs(&c);

    /* Compare stored and counted refcounts, one refcount block at a time. */
    uint8_t *seen = xzalloc(c.nclusters);
    for (uint64_t r = 0; r < q->reftable_entries; r++) {
        uint64_t first = r * q->rb_entries, off = q->reftable[r] & REFT_OFFSET_MASK;
        bool valid = off && !(q->reftable[r] & ~REFT_OFFSET_MASK) && !(off & (q->cs - 1)) &&
                     off / q->cs < c.nclusters && !seen[off / q->cs];
        if (valid)
            seen[off / q->cs] = 1;
        if (first >= c.nclusters)
            break;
        /* Like qemu-img, refcounts stored for clusters past the end of the
         * file are not looked at. */
        for (uint64_t k = first; k < MIN(first + q->rb_entries, c.nclusters); k++) {
            uint64_t want = c.ref[k], stored = 0;
            if (valid && rc_get(q, k, &stored) < 0) {
                res->check_errors++;
                break;
            }
            if (stored == want)
                continue;
            bool leak = stored > want;
            check_say(&c, "%s cluster %llu refcount=%llu reference=%llu\n",
                    leak ? (fix & QCOW2_FIX_LEAKS ? "Repairing" : "Leaked")
                         : (fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR"),
                    (unsigned long long)k, (unsigned long long)stored, (unsigned long long)want);
            if (leak)
                res->leaks++;
            else
                res->corruptions++;
            if ((leak && (fix & QCOW2_FIX_LEAKS)) || (!leak && (fix & QCOW2_FIX_ERRORS))) {
                if (rc_set(q, k, MIN(want, rc_max(q))) == 0) {
                    if (leak)
                        res->leaks_fixed++;
                    else
                        res->corruptions_fixed++;
                    if (want == 0 && k < q->free_hint)
                        q->free_hint = k;
                } else {
                    res->check_errors++;
                }
            }
        }
    }
    /* Clusters in use past the refcount table's reach. */
    for (uint64_t k = q->reftable_entries * q->rb_entries; k < c.nclusters; k++) {
        if (!c.ref[k])
            continue;
        check_say(&c, "%s cluster %llu refcount=0 reference=%u\n",
                fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR", (unsigned long long)k, c.ref[k]);
        res->corruptions++;
        if ((fix & QCOW2_FIX_ERRORS) && rc_set(q, k, c.ref[k]) == 0)
            res->corruptions_fixed++;
    }
    free(seen);
    check_copied_flags(&c, fix);
    /* Image end: one past the last cluster referenced (as qemu-img counts). */
    uint64_t end = 0;
    for (uint64_t k = c.nclusters; k > 0; k--) {
        if (c.ref[k - 1]) {
            end = k;
            break;
        }
    }
    res->image_end_offset = end * q->cs;
    if (fix && (res->leaks_fixed || res->corruptions_fixed))
        q_barrier(q);
    free(c.ref);
    free(c.l2buf);
    return 0;
}

int qcow2_check(struct block_dev *bd, int fix, struct qcow2_check_result *res)
{
    struct qcow2 *q = Q(bd);
    if (fix && bd->readonly)
        return log_fail(-EROFS, "%s: cannot repair an image opened read-only", bd->what);
    pthread_mutex_lock(&q->lock);
    int ret = check_locked(q, fix, res, false);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* ---------------------------------------------------------------- open */

static int header_write_u64(struct qcow2 *q, uint64_t field_off, uint64_t v)
{
    uint64_t be = htobe64(v);
    return q_pwrite(q, &be, 8, field_off);
}

static int open_backing(struct qcow2 *q, const struct block_open_opts *opts,
                        const struct block_chain *chain)
{
    const char *name = q->backing_name;
    if (strstr(name, "://") || strncmp(name, "json:", 5) == 0)
        return log_fail(-ENOTSUP, "%s: backing file '%s' uses a protocol Ember does not support",
                        q->bd->what, name);
    char *path;
    if (name[0] == '/' || !strchr(q->bd->filename, '/')) {
        path = xstrdup(name);
    } else {
        char *dir = xstrdup(q->bd->filename);
        path = xasprintf("%s/%s", dirname(dir), name);
        free(dir);
    }
    char self[PATH_MAX], real[PATH_MAX];
    int depth = chain ? chain->depth + 1 : 1;
    if (!realpath(q->bd->filename, self))
        snprintf(self, sizeof(self), "%s", q->bd->filename);
    if (!realpath(path, real)) {
        int err = -errno;
        log_error("%s: cannot open backing file '%s': %s", q->bd->what, path, strerror(errno));
        free(path);
        return err;
    }
    struct block_chain me = { .realpath = self, .up = chain, .depth = depth };
    for (const struct block_chain *c = &me; c; c = c->up)
        if (strcmp(c->realpath, real) == 0) {
            log_error("%s: backing chain loops back to '%s'", q->bd->what, path);
            free(path);
            return -ELOOP;
        }
    if (depth > MAX_BACKING_DEPTH) {
        log_error("%s: backing chain deeper than %d images", q->bd->what, MAX_BACKING_DEPTH);
        free(path);
        return -ELOOP;
    }
    const char *fmt = q->backing_fmt;
    if (fmt && strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0) {
        log_error("%s: backing file format '%s' is not supported", q->bd->what, fmt);
        free(path);
        return -ENOTSUP;
    }
    if (!fmt) {
        uint8_t head[8] = { 0 };
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (pread(fd, head, sizeof(head), 0) < 0)
                memset(head, 0, sizeof(head));
            close(fd);
        }
        fmt = qcow2_probe(head, sizeof(head)) ? "qcow2" : "raw";
    }
    struct block_open_opts bo = { .format = fmt, .readonly = true,
                                  .l2_cache_size = opts->l2_cache_size, .what = path };
    int ret = block_open_chain(path, &bo, &me, &q->backing);
    if (ret < 0)
        log_error("%s: could not open backing file '%s'", q->bd->what, path);
    free(path);
    return ret;
}

static int refuse_features(struct qcow2 *q)
{
    uint64_t unknown = q->h.incompatible & ~INCOMPAT_KNOWN;
    if (q->h.incompatible & INCOMPAT_DATA_FILE)
        return log_fail(-ENOTSUP, "%s: images with an external data file are not supported",
                        q->bd->what);
    if (!unknown)
        return 0;
    for (int bit = 0; bit < 64; bit++) {
        if (!(unknown & (1ULL << bit)))
            continue;
        const char *name = feature_name(q, 0, bit);
        return log_fail(-ENOTSUP, "%s: unsupported incompatible qcow2 feature bit %d%s%s%s",
                        q->bd->what, bit, name ? " (" : "", name ? name : "", name ? ")" : "");
    }
    return 0;
}

static int qcow2_load_tables(struct qcow2 *q)
{
    uint64_t n = q->h.l1_size;
    q->l1 = xcalloc(n ? n : 1, 8);
    int ret = n ? q_pread(q, q->l1, n * 8, q->h.l1_table_offset) : 0;
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < n; i++)
        q->l1[i] = be64toh(q->l1[i]);
    q->reftable_entries = (uint64_t)q->h.refcount_table_clusters * q->cs / 8;
    q->reftable = xcalloc(q->reftable_entries, 8);
    if ((ret = q_pread(q, q->reftable, q->reftable_entries * 8, q->h.refcount_table_offset)) < 0)
        return ret;
    for (uint64_t i = 0; i < q->reftable_entries; i++)
        q->reftable[i] = be64toh(q->reftable[i]);
    return 0;
}

int qcow2_open(struct block_dev *bd, const struct block_open_opts *opts,
               const struct block_chain *chain)
{
    struct stat st;
    if (fstat(bd->fd, &st) < 0)
        return log_fail(-errno, "%s: cannot stat: %s", bd->what, strerror(errno));
    uint64_t file_size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    if (!S_ISREG(st.st_mode))
        return log_fail(-ENOTSUP, "%s: qcow2 images must be regular files", bd->what);
    uint8_t first[112];
    memset(first, 0, sizeof(first));
    if (pread(bd->fd, first, sizeof(first), 0) < 72)
        return log_fail(-EINVAL, "%s: too short for a qcow2 header", bd->what);
    struct qcow2_header h;
    header_decode(first, sizeof(first), &h);
    if (h.magic != QCOW2_MAGIC)
        return log_fail(-EINVAL, "%s: not a qcow2 image", bd->what);
    if (h.cluster_bits < 9 || h.cluster_bits > 21)
        return log_fail(-EINVAL, "%s: cluster size 2^%u is outside 512 B..2 MiB", bd->what,
                        h.cluster_bits);
    uint64_t cs = 1ULL << h.cluster_bits, hlen = MIN(cs, file_size);
    uint8_t *hbuf = xzalloc(cs);
    if (pread_full(bd->fd, hbuf, hlen, 0) < 0) {
        free(hbuf);
        return log_fail(-EIO, "%s: cannot read the header", bd->what);
    }
    int ret = qcow2_validate_header(hbuf, hlen, file_size, bd->what);
    if (ret < 0) {
        free(hbuf);
        return ret;
    }

    struct qcow2 *q = xzalloc(sizeof(*q));
    pthread_mutex_init(&q->lock, NULL);
    q->bd = bd;
    q->fd = bd->fd;
    header_decode(hbuf, hlen, &q->h);
    q->cs = cs;
    q->cb = q->h.cluster_bits;
    q->ext_l2 = q->h.incompatible & INCOMPAT_EXTL2;
    q->l2_esz = q->ext_l2 ? 16 : 8;
    q->l2_bits = q->cb - (q->ext_l2 ? 4 : 3);
    q->sub_size = q->ext_l2 ? cs / 32 : cs;
    q->rc_order = q->h.refcount_order;
    q->rb_entries = cs * 8 >> q->rc_order;
    q->file_size = file_size;
    q->alloc_end = ALIGN_UP(file_size, cs);
    q->free_hint = 1;
    bd->opaque = q;
    bd->drv = &block_driver_qcow2;
    bd->length = q->h.size;
    unsigned l2n = opts->l2_cache_size ? (unsigned)MIN(MAX(opts->l2_cache_size / cs, 2), 16384)
                                       : (unsigned)MIN(MAX(MiB / cs, 4), 1024);
    tcache_init(&q->l2c, l2n, cs);
    tcache_init(&q->rbc, 8, cs);
    q->wbuf = q_buf(cs);
    q->cbuf = q_buf(cs);
    q->zbuf = q_buf(2 * cs);

    if ((ret = header_parse_extensions(q, hbuf, hlen)) < 0 || (ret = refuse_features(q)) < 0)
        goto fail;
    if (q->h.compression_type > 1) {
        ret = log_fail(-ENOTSUP, "%s: unknown compression type %u", bd->what,
                       q->h.compression_type);
        goto fail;
    }
    if (q->h.compression_type != 0 && !(q->h.incompatible & INCOMPAT_COMPRESSION)) {
        ret = log_fail(-EINVAL, "%s: compression type set without its feature bit", bd->what);
        goto fail;
    }
    if (q->h.backing_file_offset) {
        q->backing_name = xzalloc(q->h.backing_file_size + 1);
        memcpy(q->backing_name, hbuf + q->h.backing_file_offset, q->h.backing_file_size);
        if (strlen(q->backing_name) != q->h.backing_file_size || !q->backing_name[0]) {
            ret = log_fail(-EINVAL, "%s: invalid backing file name", bd->what);
            goto fail;
        }
    }
    if ((q->h.incompatible & INCOMPAT_CORRUPT) && !bd->readonly) {
        log_warn("%s: image is marked corrupt; opening it read-only", bd->what);
        bd->readonly = true;
    }
    if ((ret = qcow2_load_tables(q)) < 0)
        goto fail;
    if (q->backing_name && !opts->no_backing && (ret = open_backing(q, opts, chain)) < 0)
        goto fail;

    if (!bd->readonly && (q->h.incompatible & INCOMPAT_DIRTY)) {
        /* Refcounts may be stale (lazy refcounts): rebuild them before writing. */
        struct qcow2_check_result res;
        log_info("%s: image was not closed cleanly; repairing refcounts", bd->what);
        if ((ret = check_locked(q, QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS, &res, true)) < 0)
            goto fail;
        q_barrier(q);
        q->h.incompatible &= ~INCOMPAT_DIRTY;
        if ((ret = header_write_u64(q, 72, q->h.incompatible)) < 0)
            goto fail;
    }
    if (!bd->readonly && q->h.version >= 3 && q->h.autoclear) {
        /* We maintain none of the autoclear features (bitmaps): drop them. */
        q->h.autoclear = 0;
        if ((ret = header_write_u64(q, 88, 0)) < 0)
            goto fail;
    }
    free(hbuf);
    return 0;
fail:
    free(hbuf);
    qcow2_close(bd);
    bd->drv = NULL;
    return ret;
}

void qcow2_get_info(struct block_dev *bd, struct qcow2_info *info)
{
    struct qcow2 *q = Q(bd);
    memset(info, 0, sizeof(*info));
    info->version = (int)q->h.version;
    info->cluster_size = (uint32_t)q->cs;
    info->refcount_bits = 1u << q->rc_order;
    info->lazy_refcounts = q->h.compatible & COMPAT_LAZY_REFCOUNTS;
    info->extended_l2 = q->ext_l2;
    info->corrupt = q->h.incompatible & INCOMPAT_CORRUPT;
    info->dirty = q->h.incompatible & INCOMPAT_DIRTY;
    info->compression_type = q->h.compression_type;
    info->backing_file = q->backing_name;
    info->backing_fmt = q->backing_fmt;
    info->nb_snapshots = q->h.nb_snapshots;
}

/* ---------------------------------------------------------------- compressed writes */

/* Compression state, one per thread and reused cluster after cluster
 * (setting it up costs about as much as compressing a small cluster). */
struct compress_ctx {
    z_stream z;
    bool z_ready;
    ZSTD_CCtx *zc;
};

static pthread_key_t compress_key;
static pthread_once_t compress_once = PTHREAD_ONCE_INIT;

static void compress_ctx_free(void *opaque)
{
    struct compress_ctx *c = opaque;
    if (c->z_ready)
        deflateEnd(&c->z);
    ZSTD_freeCCtx(c->zc);
    free(c);
}

static void compress_key_init(void)
{
    if (pthread_key_create(&compress_key, compress_ctx_free) != 0)
        die("cannot create a thread key");
}

static struct compress_ctx *compress_ctx_get(void)
{
    pthread_once(&compress_once, compress_key_init);
    struct compress_ctx *c = pthread_getspecific(compress_key);
    if (!c) {
        c = xzalloc(sizeof(*c));
        pthread_setspecific(compress_key, c);
    }
    return c;
}

/* Compress one cluster into dst (capacity cs); -ENOSPC when it would not
 * save at least a sector. Touches no image state: safe from any thread. */
static int compress_into(int ctype, uint64_t cs, const uint8_t *src, uint8_t *dst,
                         uint64_t *out_len)
{
    uint64_t cap = cs - 512;
    struct compress_ctx *c = compress_ctx_get();
    if (ctype == 0) {
        /* Raw deflate with a 4 KiB window, as QEMU reads it. */
        z_stream *z = &c->z;
        if (!c->z_ready) {
            memset(z, 0, sizeof(*z));
            if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                             Z_DEFAULT_STRATEGY) != Z_OK)
                return -ENOMEM;
            c->z_ready = true;
        } else if (deflateReset(z) != Z_OK) {
            return -EIO;
        }
        z->next_in = (Bytef *)src;
        z->avail_in = (uInt)cs;
        z->next_out = dst;
        z->avail_out = (uInt)cap;
        int zr = deflate(z, Z_FINISH);
        *out_len = cap - z->avail_out;
        return zr == Z_STREAM_END ? 0 : -ENOSPC;
    }
    if (!c->zc && !(c->zc = ZSTD_createCCtx()))
        return -ENOMEM;
    size_t r = ZSTD_compressCCtx(c->zc, dst, cap, src, cs, ZSTD_CLEVEL_DEFAULT);
    if (ZSTD_isError(r))
        return -ENOSPC;
    *out_len = r;
    return 0;
}

int qcow2_compress(const struct block_dev *bd, const void *src, uint64_t len, void *dst,
                   uint64_t *clen)
{
    const struct qcow2 *q = Q(bd);
    if (len > q->cs)
        return -EINVAL;
    if (len == q->cs)
        return compress_into(q->h.compression_type, q->cs, src, dst, clen);
    uint8_t *pad = xzalloc(q->cs);
    memcpy(pad, src, len);
    int ret = compress_into(q->h.compression_type, q->cs, pad, dst, clen);
    free(pad);
    return ret;
}

static int write_precompressed_locked(struct qcow2 *q, uint64_t offset, const uint8_t *cdata,
                                      uint64_t clen)
{
    uint64_t pos, pack_rc = 0;
    int ret;
    if (q->comp_next && (ret = rc_get(q, q->comp_next / q->cs, &pack_rc)) < 0)
        return ret;
    /* Pack after the previous compressed cluster while its host cluster
     * has room and its refcount can count one more user. */
    if (q->comp_next && pack_rc > 0 && pack_rc < rc_max(q) &&
        (q->comp_next & (q->cs - 1)) + clen <= q->cs) {
        pos = q->comp_next;
        if ((ret = rc_add(q, pos / q->cs, +1)) < 0 || (ret = q_barrier(q)) < 0)
            return ret;
    } else if ((ret = cluster_alloc(q, &pos)) < 0) {
        return ret;
    }
    if ((ret = q_pwrite(q, cdata, clen, pos)) < 0)
        return ret;
    q->comp_next = ((pos + clen) & (q->cs - 1)) ? pos + clen : 0;
    struct l2_slot s;
    if ((ret = l2_lookup_for_write(q, offset, &s)) < 0)
        return ret;
    unsigned x = 62 - (q->cb - 8);
    uint64_t nsec = ((pos + clen - 1) >> 9) - (pos >> 9);
    uint64_t old = s.entry;
    if ((ret = l2_write_slot(q, &s, OFLAG_COMPRESSED | (nsec << x) | pos, 0)) < 0)
        return ret;
    if ((old & OFLAG_COMPRESSED) || (old & L2E_OFFSET_MASK))
        ret = entry_release(q, old);
    return ret;
}

static int compressed_args_ok(const struct block_dev *bd, uint64_t offset, uint64_t len)
{
    const struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2 || (offset & (q->cs - 1)) || len > q->cs || len == 0 ||
        offset + len > bd->length || (len < q->cs && offset + len != bd->length))
        return -EINVAL;
    return bd->readonly ? -EROFS : 0;
}

int qcow2_write_precompressed(struct block_dev *bd, uint64_t offset, const void *cdata,
                              uint64_t clen)
{
    int ret = compressed_args_ok(bd, offset, MIN(Q(bd)->cs, bd->length - MIN(offset, bd->length)));
    if (ret < 0)
        return ret;
    struct qcow2 *q = Q(bd);
    if (clen == 0 || clen > q->cs - 512)
        return -EINVAL;
    pthread_mutex_lock(&q->lock);
    ret = write_precompressed_locked(q, offset, cdata, clen);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

int qcow2_write_compressed(struct block_dev *bd, uint64_t offset, const void *buf, uint64_t len)
{
    int ret = compressed_args_ok(bd, offset, len);
    if (ret < 0)
        return ret;
    struct qcow2 *q = Q(bd);
    uint8_t *dst = xmalloc(q->cs);
    uint64_t clen = 0;
    ret = qcow2_compress(bd, buf, len, dst, &clen);
    pthread_mutex_lock(&q->lock);
    if (ret < 0) {
        struct iovec iov = { (void *)buf, len };
        ret = q_writev(q, offset, &iov, 1, len);
    } else {
        ret = write_precompressed_locked(q, offset, dst, clen);
    }
    pthread_mutex_unlock(&q->lock);
    free(dst);
    return ret;
}

/* ---------------------------------------------------------------- create */

static void put_feature(uint8_t *p, uint8_t type, uint8_t bit, const char *name)
{
    p[0] = type;
    p[1] = bit;
    strncpy((char *)p + 2, name, 46);
}

/* The feature name table extension (as QEMU writes it) at m + off; returns
 * the offset past it. Needs 392 bytes. */
static uint64_t put_feature_table(uint8_t *m, uint64_t off)
{
    static const struct { uint8_t type, bit; const char *name; } feats[] = {
        { 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
        { 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
        { 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
    };
    st32(m + off, htobe32(EXT_FEATURE_TABLE));
    st32(m + off + 4, htobe32((uint32_t)(48 * ARRAY_SIZE(feats))));
    for (size_t i = 0; i < ARRAY_SIZE(feats); i++)
        put_feature(m + off + 8 + 48 * i, feats[i].type, feats[i].bit, feats[i].name);
    return off + 8 + 48 * ARRAY_SIZE(feats);
}

int qcow2_create(const char *filename, const struct qcow2_create_opts *o)
{
    uint64_t cs = o->cluster_size ? o->cluster_size : 64 * KiB;
    int version = o->version ? o->version : 3;
    uint64_t rbits = o->refcount_bits ? o->refcount_bits : 16;
    if (cs < 512 || cs > 2 * MiB || (cs & (cs - 1)))
        return log_fail(-EINVAL, "%s: cluster size must be a power of two between 512 and 2M",
                        filename);
    if (rbits > 64 || (rbits & (rbits - 1)))
        return log_fail(-EINVAL, "%s: refcount_bits must be a power of two up to 64", filename);
    if (version != 2 && version != 3)
        return log_fail(-EINVAL, "%s: compat must be 0.10 or 1.1", filename);
    if (version == 2 && (rbits != 16 || o->lazy_refcounts || o->extended_l2 ||
                         o->compression_type))
        return log_fail(-EINVAL, "%s: compat=0.10 supports none of lazy_refcounts, extended_l2, "
                        "compression_type=zstd, refcount_bits other than 16", filename);
    if (o->extended_l2 && cs < 16 * KiB)
        return log_fail(-EINVAL, "%s: extended_l2 needs a cluster size of at least 16K", filename);
    if (o->backing_file && strlen(o->backing_file) > 1023)
        return log_fail(-EINVAL, "%s: backing file name is too long", filename);
    if (o->backing_fmt && strlen(o->backing_fmt) > 16)
        return log_fail(-EINVAL, "%s: backing format name is too long", filename);
    if (o->size > (1ULL << 55))
        return log_fail(-EFBIG, "%s: image size is too large", filename);

    uint64_t size = ALIGN_UP(o->size, 512);
    unsigned cb = (unsigned)__builtin_ctzll(cs);
    unsigned order = (unsigned)__builtin_ctzll(rbits);
    uint64_t esz = o->extended_l2 ? 16 : 8;
    uint64_t l1_size = DIV_ROUND_UP_U64(size, cs * (cs / esz));
    if (l1_size * 8 > MAX_L1_BYTES)
        return log_fail(-EFBIG, "%s: image size is too large for this cluster size", filename);
    uint64_t L = DIV_ROUND_UP_U64(l1_size * 8, cs), E = cs * 8 / rbits, T = 1, B = 1;
    for (;;) {
        uint64_t n = 1 + T + B + L;
        uint64_t nb = DIV_ROUND_UP_U64(n, E), nt = DIV_ROUND_UP_U64(nb * 8, cs);
        if (nb == B && nt == T)
            break;
        B = nb;
        T = nt;
    }
    uint64_t N = 1 + T + B + L;
    uint8_t *m = xzalloc(N * cs);
    /* Header. */
    st32(m + 0, htobe32(QCOW2_MAGIC));
    st32(m + 4, htobe32((uint32_t)version));
    st32(m + 20, htobe32(cb));
    st64(m + 24, htobe64(size));
    st32(m + 36, htobe32((uint32_t)l1_size));
    st64(m + 40, htobe64((1 + T + B) * cs));
    st64(m + 48, htobe64(cs));
    st32(m + 56, htobe32((uint32_t)T));
    uint64_t off = 72;
    if (version == 3) {
        uint64_t incompat = (o->extended_l2 ? INCOMPAT_EXTL2 : 0) |
                            (o->compression_type ? INCOMPAT_COMPRESSION : 0);
        st64(m + 72, htobe64(incompat));
        st64(m + 80, htobe64(o->lazy_refcounts ? COMPAT_LAZY_REFCOUNTS : 0));
        st32(m + 96, htobe32(order));
        st32(m + 100, htobe32(112));
        m[104] = (uint8_t)o->compression_type;
        off = 112;
    }
    if (o->backing_fmt) {
        size_t n = strlen(o->backing_fmt);
        st32(m + off, htobe32(EXT_BACKING_FORMAT));
        st32(m + off + 4, htobe32((uint32_t)n));
        memcpy(m + off + 8, o->backing_fmt, n);
        off += 8 + ALIGN_UP(n, 8);
    }
    if (version == 3 && cs >= 4096)
        off = put_feature_table(m, off);
    off += 8; /* end-of-extensions marker (zeroes) */
    if (o->backing_file) {
        size_t n = strlen(o->backing_file);
        if (off + n > cs) {
            free(m);
            return log_fail(-EINVAL, "%s: backing file name does not fit in the header cluster",
                            filename);
        }
        memcpy(m + off, o->backing_file, n);
        st64(m + 8, htobe64(off));
        st32(m + 16, htobe32((uint32_t)n));
    }
    /* Refcount table and blocks: every metadata cluster counted once. */
    for (uint64_t b = 0; b < B; b++)
        st64(m + cs + 8 * b, htobe64((1 + T + b) * cs));
    for (uint64_t c = 0; c < N; c++) {
        uint64_t boff, blen;
        rc_set_entry(m + (1 + T + c / E) * cs, order, c % E, 1, &boff, &blen);
    }
    int fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = -errno;
        free(m);
        return log_fail(err, "%s: cannot create: %s", filename, strerror(-err));
    }
    int ret = pwrite_full(fd, m, N * cs, 0);
    free(m);
    if (ret == 0 && fdatasync(fd) < 0)
        ret = -errno;
    close(fd);
    if (ret < 0)
        return log_fail(ret, "%s: cannot write: %s", filename, strerror(-ret));
    if (o->prealloc == QCOW2_PREALLOC_OFF)
        return 0;

    /* Preallocation: map every guest cluster to a host cluster. */
    struct block_open_opts bo = { .format = "qcow2", .no_barriers = true, .no_backing = true };
    struct block_dev *bd;
    if ((ret = block_open(filename, &bo, &bd)) < 0)
        return ret;
    struct qcow2 *q = Q(bd);
    pthread_mutex_lock(&q->lock);
    for (uint64_t g = 0; g < size && ret == 0; g += cs) {
        struct l2_slot s;
        uint64_t host;
        if ((ret = l2_lookup_for_write(q, g, &s)) < 0 || (ret = cluster_alloc(q, &host)) < 0)
            break;
        ret = l2_write_slot(q, &s, host | OFLAG_COPIED, q->ext_l2 ? 0xffffffffULL : 0);
    }
    uint64_t end = q->alloc_end;
    pthread_mutex_unlock(&q->lock);
    if (ret == 0) {
        if (o->prealloc == QCOW2_PREALLOC_METADATA) {
            if (ftruncate(q->fd, (off_t)end) < 0)
                ret = -errno;
        } else if (o->prealloc == QCOW2_PREALLOC_FALLOC) {
            if (fallocate(q->fd, 0, 0, (off_t)end) < 0 && ftruncate(q->fd, (off_t)end) < 0)
                ret = -errno;
        } else {
            struct stat st2;
            if (fstat(q->fd, &st2) == 0 && (uint64_t)st2.st_size < end)
                ret = file_write_zeroes(q->fd, (uint64_t)st2.st_size,
                                        end - (uint64_t)st2.st_size, false);
            if (ret == 0 && fallocate(q->fd, 0, 0, (off_t)end) < 0 && errno != EOPNOTSUPP)
                ret = -errno;
        }
        if (ret == 0 && fdatasync(q->fd) < 0)
            ret = -errno;
        if (ret < 0)
            log_error("%s: preallocation failed: %s", filename, strerror(-ret));
    }
    block_close(bd);
    return ret;
}

/* ---------------------------------------------------------------- snapshots */

void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t n)
{
    for (uint32_t i = 0; sn && i < n; i++) {
        free(sn[i].id);
        free(sn[i].name);
    }
    free(sn);
}

int qcow2_snapshots_read(struct block_dev *bd, struct qcow2_snapshot **out, uint32_t *n)
{
    struct qcow2 *q = Q(bd);
    *out = NULL;
    *n = 0;
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    pthread_mutex_lock(&q->lock);
    uint32_t count = q->h.nb_snapshots;
    struct qcow2_snapshot *sn = xcalloc(count ? count : 1, sizeof(*sn));
    uint64_t off = q->h.snapshots_offset;
    int ret = 0;
    uint32_t i;
    for (i = 0; i < count; i++) {
        uint8_t hdr[40], extra[24];
        if (off + 40 > q->file_size || (ret = q_pread(q, hdr, 40, off)) < 0) {
            ret = q_corrupt(q, "snapshot table runs past the end of the file");
            break;
        }
        struct qcow2_snapshot *s = &sn[i];
        s->l1_offset = be64toh(ld64(hdr));
        s->l1_size = be32toh(ld32(hdr + 8));
        uint32_t id_len = be16toh(ld16(hdr + 12)), name_len = be16toh(ld16(hdr + 14));
        s->date_sec = be32toh(ld32(hdr + 16));
        s->date_nsec = be32toh(ld32(hdr + 20));
        s->vm_clock_nsec = be64toh(ld64(hdr + 24));
        s->vm_state_size = be32toh(ld32(hdr + 32));
        uint32_t extra_len = be32toh(ld32(hdr + 36));
        s->icount = UINT64_MAX;
        if (extra_len > 1024) {
            ret = q_corrupt(q, "snapshot %u has %u bytes of extra data", i, extra_len);
            break;
        }
        uint64_t end = off + 40 + extra_len + id_len + name_len;
        if (end > q->file_size) {
            ret = q_corrupt(q, "snapshot table runs past the end of the file");
            break;
        }
        memset(extra, 0, sizeof(extra));
        if ((ret = q_pread(q, extra, MIN(extra_len, sizeof(extra)), off + 40)) < 0)
            break;
        if (extra_len >= 8 && be64toh(ld64(extra)))
            s->vm_state_size = be64toh(ld64(extra));
        if (extra_len >= 24)
            s->icount = be64toh(ld64(extra + 16));
        s->id = xzalloc(id_len + 1);
        s->name = xzalloc(name_len + 1);
        if ((ret = q_pread(q, s->id, id_len, off + 40 + extra_len)) < 0 ||
            (ret = q_pread(q, s->name, name_len, off + 40 + extra_len + id_len)) < 0)
            break;
        off = ALIGN_UP(end, 8);
    }
    pthread_mutex_unlock(&q->lock);
    if (ret < 0) {
        qcow2_snapshots_free(sn, count); /* unfilled entries are zeroed */
        return ret;
    }
    *out = sn;
    *n = count;
    return 0;
}

/* Add addend (+1/-1) to the refcount of every L2 table and data cluster an
 * L1 table references. */
static int tree_refcounts(struct qcow2 *q, const uint64_t *l1, uint64_t l1_size, int addend)
{
    uint8_t *tbl = xmalloc(q->cs);
    uint64_t per_table = 1ULL << q->l2_bits;
    int ret = 0;
    for (uint64_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t toff = l1[i] & L1E_OFFSET_MASK;
        if (!toff)
            continue;
        if ((l1[i] & L1E_RESERVED) || (toff & (q->cs - 1))) {
            ret = q_corrupt(q, "invalid L1 entry %llu", (unsigned long long)i);
            break;
        }
        if ((ret = q_pread(q, tbl, q->cs, toff)) < 0)
            break;
        for (uint64_t j = 0; j < per_table && ret == 0; j++) {
            const uint8_t *p = tbl + j * q->l2_esz;
            uint64_t e = be64toh(ld64(p));
            if (e & OFLAG_COMPRESSED) {
                uint64_t off, len;
                compressed_range(q, e, &off, &len);
                uint64_t start = off & ~511ULL, end = start + len + (off & 511);
                for (uint64_t c = start / q->cs; c <= (end - 1) / q->cs && ret == 0; c++)
                    ret = rc_add(q, c, addend);
            } else if (e & L2E_OFFSET_MASK) {
                ret = rc_add(q, (e & L2E_OFFSET_MASK) / q->cs, addend);
            }
        }
        if (ret == 0)
            ret = rc_add(q, toff / q->cs, addend);
    }
    free(tbl);
    return ret;
}

/* COPIED flags of the active tree must say "refcount is exactly 1". */
static int fix_copied_flags(struct qcow2 *q)
{
    uint64_t per_table = 1ULL << q->l2_bits;
    int ret = 0;
    for (uint64_t i = 0; i < q->h.l1_size && ret == 0; i++) {
        uint64_t toff = q->l1[i] & L1E_OFFSET_MASK, rc;
        if (!toff)
            continue;
        if ((ret = rc_get(q, toff / q->cs, &rc)) < 0)
            break;
        uint64_t ne = rc == 1 ? (q->l1[i] | OFLAG_COPIED) : (q->l1[i] & ~OFLAG_COPIED);
        if (ne != q->l1[i]) {
            uint64_t be = htobe64(ne);
            if ((ret = q_pwrite(q, &be, 8, q->h.l1_table_offset + i * 8)) < 0)
                break;
            q->l1[i] = ne;
        }
        uint8_t *tbl;
        for (uint64_t j = 0; j < per_table && ret == 0; j++) {
            if ((ret = tcache_get(q, &q->l2c, toff, &tbl)) < 0)
                break;
            uint8_t *p = tbl + j * q->l2_esz;
            uint64_t e = be64toh(ld64(p));
            if ((e & OFLAG_COMPRESSED) || !(e & L2E_OFFSET_MASK))
                continue;
            if ((ret = rc_get(q, (e & L2E_OFFSET_MASK) / q->cs, &rc)) < 0)
                break;
            uint64_t n2 = rc == 1 ? (e | OFLAG_COPIED) : (e & ~OFLAG_COPIED);
            if (n2 != e) {
                if ((ret = tcache_get(q, &q->l2c, toff, &tbl)) < 0)
                    break;
                p = tbl + j * q->l2_esz;
                st64(p, htobe64(n2));
                ret = q_pwrite(q, p, 8, toff + j * q->l2_esz);
            }
        }
    }
    return ret;
}

/* Raw bytes of the snapshot table (validated by qcow2_snapshots_read). */
static int snapshot_table_bytes(struct qcow2 *q, uint8_t **out, uint64_t *len)
{
    uint64_t off = q->h.snapshots_offset;
    for (uint32_t i = 0; i < q->h.nb_snapshots; i++) {
        uint8_t hdr[40];
        int ret = q_pread(q, hdr, 40, off);
        if (ret < 0)
            return ret;
        off = ALIGN_UP(off + 40 + be32toh(ld32(hdr + 36)) + be16toh(ld16(hdr + 12)) +
                           be16toh(ld16(hdr + 14)), 8);
    }
    *len = off - q->h.snapshots_offset;
    *out = xzalloc(*len + 1);
    return *len ? q_pread(q, *out, *len, q->h.snapshots_offset) : 0;
}

static int cluster_alloc_contiguous(struct qcow2 *q, uint64_t n, uint64_t *off);

/* Write a new snapshot table and point the header at it. */
static int snapshot_table_replace(struct qcow2 *q, const uint8_t *tbl, uint64_t len, uint32_t n)
{
    uint64_t off = 0, old = q->h.snapshots_offset;
    uint64_t old_len = 0;
    uint8_t *old_bytes = NULL;
    int ret = snapshot_table_bytes(q, &old_bytes, &old_len);
    free(old_bytes);
    if (ret < 0)
        return ret;
    if (len && ((ret = cluster_alloc_contiguous(q, DIV_ROUND_UP_U64(len, q->cs), &off)) < 0 ||
                (ret = q_pwrite(q, tbl, len, off)) < 0 || (ret = q_barrier(q)) < 0))
        return ret;
    uint8_t hdr[12];
    st32(hdr, htobe32(n));
    st64(hdr + 4, htobe64(off));
    if ((ret = q_pwrite(q, hdr, 12, 60)) < 0 || (ret = q_barrier(q)) < 0)
        return ret;
    uint32_t old_n = q->h.nb_snapshots;
    q->h.nb_snapshots = n;
    q->h.snapshots_offset = off;
    if (old_n && old_len)
        for (uint64_t c = old / q->cs; c <= (old + old_len - 1) / q->cs && ret == 0; c++)
            ret = rc_add(q, c, -1);
    return ret;
}

static int snapshot_find(struct qcow2_snapshot *sn, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(sn[i].name, name) == 0)
            return (int)i;
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(sn[i].id, name) == 0)
            return (int)i;
    return -1;
}

static int snapshot_load_l1(struct qcow2 *q, const struct qcow2_snapshot *s, uint64_t **l1)
{
    if ((uint64_t)s->l1_size * 8 > MAX_L1_BYTES ||
        !range_ok(s->l1_offset, (uint64_t)s->l1_size * 8, q->cs, q->file_size))
        return q_corrupt(q, "snapshot '%s' has an invalid L1 table", s->name);
    *l1 = xcalloc(s->l1_size ? s->l1_size : 1, 8);
    int ret = s->l1_size ? q_pread(q, *l1, (uint64_t)s->l1_size * 8, s->l1_offset) : 0;
    for (uint32_t i = 0; i < s->l1_size; i++)
        (*l1)[i] = be64toh((*l1)[i]);
    return ret;
}

int qcow2_snapshot_create(struct block_dev *bd, const char *name)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > 65535)
        return log_fail(-EINVAL, "%s: invalid snapshot name", bd->what);
    struct qcow2_snapshot *sn;
    uint32_t n;
    int ret = qcow2_snapshots_read(bd, &sn, &n);
    if (ret < 0)
        return ret;
    if (snapshot_find(sn, n, name) >= 0) {
        qcow2_snapshots_free(sn, n);
        return log_fail(-EEXIST, "%s: a snapshot named '%s' already exists", bd->what, name);
    }
    unsigned long max_id = 0;
    for (uint32_t i = 0; i < n; i++)
        max_id = MAX(max_id, strtoul(sn[i].id, NULL, 10));
    qcow2_snapshots_free(sn, n);
    char id[24];
    snprintf(id, sizeof(id), "%lu", max_id + 1);

    pthread_mutex_lock(&q->lock);
    uint64_t l1_bytes = (uint64_t)q->h.l1_size * 8, l1_off = 0;
    uint8_t *old = NULL, *tbl = NULL;
    uint64_t old_len = 0;
    /* Count the snapshot's references first: a crash after this only leaks. */
    if ((ret = tree_refcounts(q, q->l1, q->h.l1_size, +1)) < 0 || (ret = q_barrier(q)) < 0 ||
        (ret = fix_copied_flags(q)) < 0)
        goto out;
    if (l1_bytes) {
        uint8_t *copy = xmalloc(l1_bytes);
        for (uint32_t i = 0; i < q->h.l1_size; i++)
            st64(copy + 8 * i, htobe64(q->l1[i] & ~OFLAG_COPIED));
        ret = cluster_alloc_contiguous(q, DIV_ROUND_UP_U64(l1_bytes, q->cs), &l1_off);
        if (ret == 0)
            ret = q_pwrite(q, copy, l1_bytes, l1_off);
        free(copy);
        if (ret < 0)
            goto out;
    }
    if ((ret = snapshot_table_bytes(q, &old, &old_len)) < 0)
        goto out;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t elen = ALIGN_UP(40 + 24 + strlen(id) + name_len, 8);
    tbl = xzalloc(old_len + elen);
    memcpy(tbl, old, old_len);
    uint8_t *e = tbl + old_len;
    st64(e, htobe64(l1_off));
    st32(e + 8, htobe32(q->h.l1_size));
    st16(e + 12, htobe16((uint16_t)strlen(id)));
    st16(e + 14, htobe16((uint16_t)name_len));
    st32(e + 16, htobe32((uint32_t)now.tv_sec));
    st32(e + 20, htobe32((uint32_t)now.tv_nsec));
    st32(e + 36, htobe32(24));
    st64(e + 48, htobe64(bd->length)); /* extra: disk size */
    memcpy(e + 64, id, strlen(id));
    memcpy(e + 64 + strlen(id), name, name_len);
    ret = snapshot_table_replace(q, tbl, old_len + elen, q->h.nb_snapshots + 1);
out:
    free(old);
    free(tbl);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* Remove entry idx from the table bytes. */
static uint8_t *snapshot_table_without(struct qcow2 *q, const uint8_t *tbl, uint64_t len, int idx,
                                       uint64_t *new_len)
{
    uint8_t *out = xzalloc(len + 1);
    uint64_t off = 0, w = 0;
    for (uint32_t i = 0; i < q->h.nb_snapshots; i++) {
        const uint8_t *h = tbl + off;
        uint64_t n = ALIGN_UP(40 + be32toh(ld32(h + 36)) + be16toh(ld16(h + 12)) +
                                  be16toh(ld16(h + 14)), 8);
        if ((int)i != idx) {
            memcpy(out + w, h, n);
            w += n;
        }
        off += n;
    }
    *new_len = w;
    return out;
}

/* The snapshot table of a writable qcow2 image and the index of the snapshot
 * called name in it (the caller frees the table), or a negative errno. */
static int snapshot_open_named(struct block_dev *bd, const char *name,
                               struct qcow2_snapshot **sn, uint32_t *n)
{
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    int ret = qcow2_snapshots_read(bd, sn, n);
    if (ret < 0)
        return ret;
    int idx = snapshot_find(*sn, *n, name);
    if (idx < 0) {
        qcow2_snapshots_free(*sn, *n);
        return log_fail(-ENOENT, "%s: no snapshot named '%s'", bd->what, name);
    }
    return idx;
}

int qcow2_snapshot_delete(struct block_dev *bd, const char *name)
{
    struct qcow2 *q = Q(bd);
    struct qcow2_snapshot *sn;
    uint32_t n;
    int idx = snapshot_open_named(bd, name, &sn, &n);
    if (idx < 0)
        return idx;
    int ret = 0;
    struct qcow2_snapshot s = sn[idx];
    pthread_mutex_lock(&q->lock);
    uint64_t *l1 = NULL, len = 0, nlen = 0;
    uint8_t *tbl = NULL, *ntbl = NULL;
    if ((ret = snapshot_load_l1(q, &s, &l1)) < 0 || (ret = snapshot_table_bytes(q, &tbl, &len)) < 0)
        goto out;
    ntbl = snapshot_table_without(q, tbl, len, idx, &nlen);
    /* Drop the table entry first: a crash afterwards only leaks. */
    if ((ret = snapshot_table_replace(q, ntbl, nlen, n - 1)) < 0 ||
        (ret = tree_refcounts(q, l1, s.l1_size, -1)) < 0)
        goto out;
    for (uint64_t c = 0; s.l1_size && c < DIV_ROUND_UP_U64((uint64_t)s.l1_size * 8, q->cs) &&
                         ret == 0; c++)
        ret = rc_add(q, s.l1_offset / q->cs + c, -1);
    if (ret == 0)
        ret = fix_copied_flags(q);
out:
    free(l1);
    free(tbl);
    free(ntbl);
    pthread_mutex_unlock(&q->lock);
    qcow2_snapshots_free(sn, n);
    return ret;
}

int qcow2_snapshot_apply(struct block_dev *bd, const char *name)
{
    struct qcow2 *q = Q(bd);
    struct qcow2_snapshot *sn;
    uint32_t n;
    int idx = snapshot_open_named(bd, name, &sn, &n);
    if (idx < 0)
        return idx;
    int ret = 0;
    struct qcow2_snapshot s = sn[idx];
    pthread_mutex_lock(&q->lock);
    uint64_t *l1 = NULL, *old = NULL;
    if ((ret = snapshot_load_l1(q, &s, &l1)) < 0)
        goto out;
    if (s.l1_size > q->h.l1_size) {
        ret = log_fail(-ENOTSUP, "%s: snapshot '%s' is larger than the image (resize first)",
                       bd->what, name);
        goto out;
    }
    if ((ret = tree_refcounts(q, l1, s.l1_size, +1)) < 0 || (ret = q_barrier(q)) < 0)
        goto out;
    old = xmemdup_l1(q->l1, q->h.l1_size);
    uint8_t *be = xzalloc((uint64_t)q->h.l1_size * 8 + 8);
    for (uint32_t i = 0; i < q->h.l1_size; i++) {
        q->l1[i] = i < s.l1_size ? (l1[i] & ~OFLAG_COPIED) : 0;
        st64(be + 8 * i, htobe64(q->l1[i]));
    }
    ret = q_pwrite(q, be, (uint64_t)q->h.l1_size * 8, q->h.l1_table_offset);
    free(be);
    if (ret == 0)
        ret = q_barrier(q);
    if (ret == 0)
        ret = tree_refcounts(q, old, q->h.l1_size, -1);
    if (ret == 0)
        ret = fix_copied_flags(q);
    q->cbuf_entry = 0;
out:
    free(l1);
    free(old);
    pthread_mutex_unlock(&q->lock);
    qcow2_snapshots_free(sn, n);
    return ret;
}

/* ---------------------------------------------------------------- make empty */

int qcow2_make_empty(struct block_dev *bd)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    pthread_mutex_lock(&q->lock);
    int ret = 0;
    uint64_t per_table = 1ULL << q->l2_bits;
    for (uint64_t l1i = 0; l1i < q->h.l1_size && ret == 0; l1i++) {
        uint64_t toff;
        if ((ret = l1_entry_table(q, l1i, &toff)) < 0 || !toff)
            continue;
        for (uint64_t j = 0; j < per_table && ret == 0; j++) {
            uint64_t gofs = (l1i * per_table + j) << q->cb;
            if (gofs >= bd->length)
                break;
            struct l2_slot s;
            if ((ret = l2_lookup(q, gofs, &s)) < 0)
                break;
            if (!s.entry && !s.bitmap)
                continue;
            uint64_t e = s.entry;
            if ((ret = l2_lookup_for_write(q, gofs, &s)) < 0 ||
                (ret = l2_write_slot(q, &s, 0, 0)) < 0)
                break;
            if ((e & OFLAG_COMPRESSED) || (e & L2E_OFFSET_MASK))
                ret = entry_release(q, e);
        }
    }
    if (ret == 0)
        ret = q_barrier(q);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* ---------------------------------------------------------------- header edits */

int qcow2_set_backing(struct block_dev *bd, const char *backing_file, const char *backing_fmt)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    if ((backing_file && strlen(backing_file) > 1023) || (backing_fmt && strlen(backing_fmt) > 16))
        return log_fail(-EINVAL, "%s: backing file name or format too long", bd->what);
    pthread_mutex_lock(&q->lock);
    uint8_t *old = xzalloc(q->cs), *nb = xzalloc(q->cs);
    int ret = q_pread(q, old, q->cs, 0);
    uint64_t hl = q->h.header_length, off = hl, src = hl;
    memcpy(nb, old, hl);
    if (backing_fmt && backing_file) {
        size_t n = strlen(backing_fmt);
        st32(nb + off, htobe32(EXT_BACKING_FORMAT));
        st32(nb + off + 4, htobe32((uint32_t)n));
        memcpy(nb + off + 8, backing_fmt, n);
        off += 8 + ALIGN_UP(n, 8);
    }
    /* Keep every other extension as it was. */
    while (ret == 0 && src + 8 <= q->cs) {
        uint32_t type = be32toh(ld32(old + src)), len = be32toh(ld32(old + src + 4));
        uint64_t total = 8 + ALIGN_UP((uint64_t)len, 8);
        if (type == EXT_END || src + total > q->cs)
            break;
        if (type != EXT_BACKING_FORMAT) {
            if (off + total > q->cs) {
                ret = -ENOSPC;
                break;
            }
            memcpy(nb + off, old + src, total);
            off += total;
        }
        src += total;
    }
    off += 8;
    uint64_t name_off = 0, name_len = backing_file ? strlen(backing_file) : 0;
    if (ret == 0 && backing_file) {
        if (off + name_len > q->cs)
            ret = -ENOSPC;
        else {
            memcpy(nb + off, backing_file, name_len);
            name_off = off;
        }
    }
    st64(nb + 8, htobe64(name_off));
    st32(nb + 16, htobe32((uint32_t)name_len));
    if (ret == 0)
        ret = q_pwrite(q, nb, q->cs, 0);
    if (ret == 0)
        ret = q_barrier(q);
    if (ret == 0) {
        free(q->backing_name);
        free(q->backing_fmt);
        q->backing_name = backing_file ? xstrdup(backing_file) : NULL;
        q->backing_fmt = backing_file && backing_fmt ? xstrdup(backing_fmt) : NULL;
        q->h.backing_file_offset = name_off;
        q->h.backing_file_size = (uint32_t)name_len;
    } else if (ret == -ENOSPC) {
        log_error("%s: header extensions and backing file name do not fit in the header cluster",
                  bd->what);
    }
    free(old);
    free(nb);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* n contiguous free clusters past the end of the file, counted. */
static int cluster_alloc_contiguous(struct qcow2 *q, uint64_t n, uint64_t *off)
{
    for (int iter = 0; iter < 10000; iter++) {
        uint64_t start = q->alloc_end / q->cs, last = start + n - 1;
        int ret;
        if (last / q->rb_entries >= q->reftable_entries) {
            if ((ret = reftable_grow(q, last)) < 0)
                return ret;
            continue;
        }
        bool placed = false;
        for (uint64_t r = start / q->rb_entries; r <= last / q->rb_entries; r++)
            if (rb_missing(q, r)) {
                if ((ret = rb_alloc(q, r, UINT64_MAX)) < 0)
                    return ret;
                placed = true;
                break;
            }
        if (placed)
            continue;
        if ((ret = rc_set_run(q, start, n, 1)) < 0)
            return ret;
        q->alloc_end = (last + 1) * q->cs;
        *off = start * q->cs;
        return q_barrier(q);
    }
    return q_fail(q, -EIO, "cannot allocate %llu contiguous clusters", (unsigned long long)n);
}

int qcow2_grow(struct block_dev *bd, uint64_t new_size)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    new_size = ALIGN_UP(new_size, 512);
    if (new_size < bd->length)
        return log_fail(-ENOTSUP, "%s: shrinking qcow2 images is not supported", bd->what);
    if (new_size > (1ULL << 55))
        return log_fail(-EFBIG, "%s: new size is too large", bd->what);
    pthread_mutex_lock(&q->lock);
    int ret = 0;
    uint64_t need = DIV_ROUND_UP_U64(new_size, q->cs << q->l2_bits);
    if (need * 8 > MAX_L1_BYTES) {
        ret = log_fail(-EFBIG, "%s: new size needs too large an L1 table", bd->what);
        goto out;
    }
    uint64_t l1_off = q->h.l1_table_offset, l1_size = q->h.l1_size;
    uint64_t old_off = l1_off, old_clusters = DIV_ROUND_UP_U64(l1_size * 8, q->cs);
    if (need > l1_size) {
        uint64_t nclusters = DIV_ROUND_UP_U64(need * 8, q->cs);
        if ((ret = cluster_alloc_contiguous(q, nclusters, &l1_off)) < 0)
            goto out;
        uint8_t *t = xzalloc(nclusters * q->cs);
        for (uint64_t i = 0; i < l1_size; i++)
            st64(t + 8 * i, htobe64(q->l1[i]));
        ret = q_pwrite(q, t, nclusters * q->cs, l1_off);
        free(t);
        if (ret < 0 || (ret = q_barrier(q)) < 0)
            goto out;
        q->l1 = xrealloc(q->l1, need * 8);
        memset(q->l1 + l1_size, 0, (need - l1_size) * 8);
        l1_size = need;
    }
    uint8_t hdr[24];
    st64(hdr, htobe64(new_size));
    st32(hdr + 8, 0);
    st32(hdr + 12, htobe32((uint32_t)l1_size));
    st64(hdr + 16, htobe64(l1_off));
    if ((ret = q_pwrite(q, hdr, 24, 24)) < 0 || (ret = q_barrier(q)) < 0)
        goto out;
    q->h.size = new_size;
    q->h.l1_size = (uint32_t)l1_size;
    q->h.l1_table_offset = l1_off;
    bd->length = new_size;
    if (l1_off != old_off)
        for (uint64_t c = 0; c < old_clusters && ret == 0; c++)
            ret = rc_add(q, old_off / q->cs + c, -1);
out:
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* ---------------------------------------------------------------- shrink */

/* Drop the mapping of guest cluster gofs (refcounts released after the
 * cleared entry is durable). */
static int cluster_unmap(struct qcow2 *q, uint64_t gofs)
{
    struct l2_slot s;
    int ret = l2_lookup(q, gofs, &s);
    if (ret < 0 || !s.table || (!s.entry && !s.bitmap))
        return ret;
    uint64_t e = s.entry;
    if ((ret = l2_lookup_for_write(q, gofs, &s)) < 0 || (ret = l2_write_slot(q, &s, 0, 0)) < 0)
        return ret;
    if ((e & OFLAG_COMPRESSED) || (e & L2E_OFFSET_MASK))
        ret = entry_release(q, e);
    return ret;
}

static int shrink_locked(struct qcow2 *q, uint64_t new_size)
{
    /* The smaller size first: a crash after it only leaks the tail. */
    uint64_t be = htobe64(new_size);
    int ret = q_pwrite(q, &be, 8, 24);
    if (ret < 0 || (ret = q_barrier(q)) < 0)
        return ret;
    uint64_t old_size = q->bd->length;
    q->h.size = new_size;
    q->bd->length = new_size;
    q->cbuf_entry = 0;
    uint64_t span = q->cs << q->l2_bits; /* guest bytes per L2 table */
    uint64_t keep_l1 = DIV_ROUND_UP_U64(new_size, span);
    /* The L2 table the new end falls in: clear the entries past it. */
    uint64_t table_end = MIN(keep_l1 * span, ALIGN_UP(old_size, q->cs));
    for (uint64_t g = ALIGN_UP(new_size, q->cs); g < table_end && ret == 0; g += q->cs)
        ret = cluster_unmap(q, g);
    /* Whole L2 tables past it: unhook each from L1, then free its tree. */
    for (uint64_t i = keep_l1; i < q->h.l1_size && ret == 0; i++) {
        uint64_t e = q->l1[i];
        if (!(e & L1E_OFFSET_MASK))
            continue;
        uint64_t zero = 0;
        if ((ret = q_pwrite(q, &zero, 8, q->h.l1_table_offset + i * 8)) < 0 ||
            (ret = q_barrier(q)) < 0)
            break;
        q->l1[i] = 0;
        tcache_drop(&q->l2c, e & L1E_OFFSET_MASK);
        ret = tree_refcounts(q, &e, 1, -1);
    }
    return ret == 0 ? q_barrier(q) : ret;
}

int qcow2_shrink(struct block_dev *bd, uint64_t new_size)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    new_size = ALIGN_UP(new_size, 512);
    if (new_size > bd->length)
        return qcow2_grow(bd, new_size);
    if (new_size == bd->length)
        return 0;
    if (q->h.nb_snapshots)
        return log_fail(-ENOTSUP, "%s: cannot shrink an image with internal snapshots",
                        bd->what);
    pthread_mutex_lock(&q->lock);
    int ret = shrink_locked(q, new_size);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* ---------------------------------------------------------------- amend */

/* Rebuild the header cluster for `version` from q->h, keeping the backing
 * file name, its format and any extension we do not know. One write. */
static int header_rewrite(struct qcow2 *q, unsigned version)
{
    uint8_t *old = xzalloc(q->cs), *nb = xzalloc(q->cs);
    int ret = q_pread(q, old, MIN(q->cs, q->file_size), 0);
    memcpy(nb, old, 72);
    st32(nb + 4, htobe32(version));
    uint64_t off = 72;
    if (version >= 3) {
        st64(nb + 72, htobe64(q->h.incompatible));
        st64(nb + 80, htobe64(q->h.compatible));
        st64(nb + 88, htobe64(q->h.autoclear));
        st32(nb + 96, htobe32(q->h.refcount_order));
        st32(nb + 100, htobe32(112));
        nb[104] = q->h.compression_type;
        off = 112;
    }
    if (q->backing_name && q->backing_fmt) {
        size_t n = strlen(q->backing_fmt);
        st32(nb + off, htobe32(EXT_BACKING_FORMAT));
        st32(nb + off + 4, htobe32((uint32_t)n));
        memcpy(nb + off + 8, q->backing_fmt, n);
        off += 8 + ALIGN_UP(n, 8);
    }
    if (version >= 3 && q->cs >= 4096)
        off = put_feature_table(nb, off);
    uint64_t src = q->h.header_length, limit = q->cs;
    if (q->h.backing_file_offset > src)
        limit = MIN(limit, q->h.backing_file_offset);
    while (ret == 0 && src + 8 <= limit) {
        uint32_t type = be32toh(ld32(old + src)), len = be32toh(ld32(old + src + 4));
        uint64_t total = 8 + ALIGN_UP((uint64_t)len, 8);
        if (type == EXT_END || src + total > limit)
            break;
        if (type != EXT_BACKING_FORMAT && type != EXT_FEATURE_TABLE) {
            if (off + total + 8 > q->cs)
                ret = -ENOSPC;
            else
                memcpy(nb + off, old + src, total);
            off += total;
        }
        src += total;
    }
    off += 8; /* end of extensions */
    uint64_t name_len = q->backing_name ? strlen(q->backing_name) : 0;
    if (ret == 0 && off + name_len > q->cs)
        ret = -ENOSPC;
    if (ret == 0 && name_len)
        memcpy(nb + off, q->backing_name, name_len);
    st64(nb + 8, htobe64(name_len ? off : 0));
    st32(nb + 16, htobe32((uint32_t)name_len));
    if (ret == -ENOSPC)
        log_error("%s: the header does not fit in one cluster", q->bd->what);
    if (ret == 0)
        ret = q_pwrite(q, nb, q->cs, 0);
    if (ret == 0)
        ret = q_barrier(q);
    if (ret == 0) {
        q->h.version = version;
        q->h.header_length = version >= 3 ? 112 : 72;
        q->h.backing_file_offset = name_len ? off : 0;
        q->h.backing_file_size = (uint32_t)name_len;
    }
    free(old);
    free(nb);
    return ret;
}

/* Does any L2 table of this L1 table hold a zero-flagged entry? */
static int tree_has_zero_flags(struct qcow2 *q, const uint64_t *l1, uint64_t l1_size, bool *found)
{
    uint8_t *tbl = xmalloc(q->cs);
    int ret = 0;
    for (uint64_t i = 0; i < l1_size && ret == 0 && !*found; i++) {
        uint64_t toff = l1[i] & L1E_OFFSET_MASK;
        if (!toff)
            continue;
        if ((ret = q_pread(q, tbl, q->cs, toff)) < 0)
            break;
        for (uint64_t j = 0; j < (1ULL << q->l2_bits); j++) {
            uint64_t e = be64toh(ld64(tbl + j * q->l2_esz));
            if (!(e & OFLAG_COMPRESSED) && (e & OFLAG_ZERO))
                *found = true;
        }
    }
    free(tbl);
    return ret;
}

/* v2 has no zero flag: store zero clusters as real zeroes (or, with no
 * backing file and nothing stored, as unallocated clusters, which read as
 * zeroes there too). */
static int expand_zero_clusters(struct qcow2 *q)
{
    bool has_backing = q->backing || q->backing_name;
    uint64_t per_table = 1ULL << q->l2_bits;
    uint8_t *zero = xzalloc(q->cs);
    int ret = 0;
    for (uint64_t l1i = 0; l1i < q->h.l1_size && ret == 0; l1i++) {
        uint64_t toff;
        if ((ret = l1_entry_table(q, l1i, &toff)) < 0 || !toff)
            continue;
        for (uint64_t j = 0; j < per_table && ret == 0; j++) {
            uint64_t gofs = (l1i * per_table + j) << q->cb;
            if (gofs >= q->bd->length)
                break;
            struct l2_slot s;
            if ((ret = l2_lookup(q, gofs, &s)) < 0)
                break;
            if ((s.entry & OFLAG_COMPRESSED) || !(s.entry & OFLAG_ZERO))
                continue;
            if (has_backing || (s.entry & L2E_OFFSET_MASK)) {
                uint64_t n = MIN(q->cs, q->bd->length - gofs);
                struct iovec iov = { zero, n };
                ret = q_writev(q, gofs, &iov, 1, n);
            } else if ((ret = l2_lookup_for_write(q, gofs, &s)) == 0) {
                ret = l2_write_slot(q, &s, 0, 0);
            }
        }
    }
    free(zero);
    return ret == 0 ? q_barrier(q) : ret;
}

/* What v2 cannot express; sn: the snapshot table, read beforehand. */
static int downgrade_check(struct qcow2 *q, struct qcow2_snapshot *sn, uint32_t n)
{
    if (q->rc_order != 4)
        return log_fail(-ENOTSUP, "%s: compat=0.10 requires refcount_bits=16", q->bd->what);
    if (q->ext_l2)
        return log_fail(-ENOTSUP, "%s: compat=0.10 does not support extended L2 entries",
                        q->bd->what);
    if (q->h.compression_type)
        return log_fail(-ENOTSUP, "%s: compat=0.10 does not support zstd compression",
                        q->bd->what);
    if (q->h.incompatible & ~INCOMPAT_DIRTY)
        return log_fail(-ENOTSUP, "%s: incompatible features 0x%llx have no compat=0.10 form",
                        q->bd->what, (unsigned long long)q->h.incompatible);
    bool found = false;
    int ret = 0;
    for (uint32_t i = 0; i < n && ret == 0 && !found; i++) {
        uint64_t *l1 = NULL;
        if ((ret = snapshot_load_l1(q, &sn[i], &l1)) == 0)
            ret = tree_has_zero_flags(q, l1, sn[i].l1_size, &found);
        free(l1);
    }
    if (ret == 0 && found)
        ret = log_fail(-ENOTSUP, "%s: an internal snapshot holds zero clusters, which "
                       "compat=0.10 cannot express", q->bd->what);
    return ret;
}

static int amend_locked(struct qcow2 *q, const struct qcow2_amend_opts *o,
                        struct qcow2_snapshot *sn, uint32_t nsn)
{
    unsigned version = o->version ? (unsigned)o->version : q->h.version;
    bool lazy = o->lazy_refcounts >= 0 ? o->lazy_refcounts != 0
                                       : (q->h.compatible & COMPAT_LAZY_REFCOUNTS) != 0;
    if (version != 2 && version != 3)
        return log_fail(-EINVAL, "%s: compat must be 0.10 or 1.1", q->bd->what);
    if (version == 2 && lazy)
        return log_fail(-EINVAL, "%s: lazy refcounts require compat=1.1", q->bd->what);
    int ret;
    if (version == 2 && q->h.version == 3) {
        if ((ret = downgrade_check(q, sn, nsn)) < 0 || (ret = expand_zero_clusters(q)) < 0)
            return ret;
        q->h.incompatible = q->h.compatible = q->h.autoclear = 0;
    }
    if (version == 3 && q->h.version == 2) {
        q->h.incompatible = q->h.compatible = q->h.autoclear = 0;
        q->h.refcount_order = 4;
        q->h.compression_type = 0;
    }
    if (version >= 3) {
        if (lazy)
            q->h.compatible |= COMPAT_LAZY_REFCOUNTS;
        else
            q->h.compatible &= ~COMPAT_LAZY_REFCOUNTS;
    }
    return header_rewrite(q, version);
}

int qcow2_amend(struct block_dev *bd, const struct qcow2_amend_opts *o)
{
    struct qcow2 *q = Q(bd);
    if (bd->drv != &block_driver_qcow2)
        return -EINVAL;
    if (bd->readonly)
        return -EROFS;
    struct qcow2_snapshot *sn;
    uint32_t n;
    int ret = qcow2_snapshots_read(bd, &sn, &n);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&q->lock);
    ret = amend_locked(q, o, sn, n);
    pthread_mutex_unlock(&q->lock);
    qcow2_snapshots_free(sn, n);
    return ret;
}
