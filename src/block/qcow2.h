/* qcow2 beyond the generic block interface: creation, consistency checks
 * and the details ember-img reports. Used by ember-img and the tests. */
#ifndef EMBER_BLOCK_QCOW2_H
#define EMBER_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

enum qcow2_prealloc { QCOW2_PREALLOC_OFF, QCOW2_PREALLOC_METADATA, QCOW2_PREALLOC_FALLOC,
                      QCOW2_PREALLOC_FULL };

struct qcow2_create_opts {
    uint64_t size;               /* bytes; rounded up to 512 */
    uint32_t cluster_size;       /* 0 = 64 KiB */
    int version;                 /* 2 (compat=0.10) or 3 (compat=1.1, default when 0) */
    bool lazy_refcounts;
    bool extended_l2;
    int compression_type;        /* 0 zlib, 1 zstd */
    uint32_t refcount_bits;      /* 0 = 16 */
    enum qcow2_prealloc prealloc;
    const char *backing_file;    /* stored as given */
    const char *backing_fmt;     /* NULL: no backing-format extension */
};

/* Creates (truncating) filename. Prints a message naming it on failure. */
int qcow2_create(const char *filename, const struct qcow2_create_opts *opts);

struct qcow2_info {
    int version;
    uint32_t cluster_size;
    uint32_t refcount_bits;
    bool lazy_refcounts, extended_l2, corrupt, dirty;
    int compression_type;
    const char *backing_file;    /* as stored in the header, or NULL */
    const char *backing_fmt;     /* from the extension, or NULL */
    uint32_t nb_snapshots;
};
/* bd must be a qcow2 device; pointers stay valid until block_close. */
void qcow2_get_info(struct block_dev *bd, struct qcow2_info *info);

struct qcow2_check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
    uint64_t image_end_offset;
};
enum { QCOW2_FIX_LEAKS = 1, QCOW2_FIX_ERRORS = 2 };
/* Recounts every reference and compares with the stored refcounts; with
 * fix flags rewrites them. Prints one line per problem. 0 or -errno when the
 * check itself could not complete. */
int qcow2_check(struct block_dev *bd, int fix, struct qcow2_check_result *res);

/* Store one guest cluster compressed (offset cluster-aligned, len the
 * cluster size or the image's tail). Falls back to a plain write when the
 * data does not compress. */
int qcow2_write_compressed(struct block_dev *bd, uint64_t offset, const void *buf, uint64_t len);
/* The same in two steps, so callers can compress on several threads:
 * qcow2_compress() is thread-safe and touches no image state (dst holds a
 * cluster; -ENOSPC: not worth compressing, write it plainly instead). */
int qcow2_compress(const struct block_dev *bd, const void *src, uint64_t len, void *dst,
                   uint64_t *clen);
int qcow2_write_precompressed(struct block_dev *bd, uint64_t offset, const void *cdata,
                              uint64_t clen);
uint32_t qcow2_cluster_size(const struct block_dev *bd);

/* Where guest bytes live: for map --output=json. *host is 0 when not stored
 * in this file. Returns the run length like block_status. */
int qcow2_map(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
              unsigned *status, uint64_t *host);

/* Validate a header (first cluster of a file): 0 or -EINVAL with a message
 * naming `what`. Exposed for unit tests and fuzzing. */
int qcow2_validate_header(const uint8_t *buf, uint64_t buf_len, uint64_t file_size,
                          const char *what);

struct qcow2_snapshot {
    char *id, *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec, vm_state_size;
    uint64_t icount;            /* UINT64_MAX when the image does not record it */
    uint64_t l1_offset;
    uint32_t l1_size;
};
/* The internal snapshot table, validated. Free with qcow2_snapshots_free. */
int qcow2_snapshots_read(struct block_dev *bd, struct qcow2_snapshot **out, uint32_t *n);
void qcow2_snapshots_free(struct qcow2_snapshot *s, uint32_t n);

/* Internal snapshots (qemu-img snapshot -c/-d/-a). name matches a tag or an ID. */
int qcow2_snapshot_create(struct block_dev *bd, const char *name);
int qcow2_snapshot_delete(struct block_dev *bd, const char *name);
int qcow2_snapshot_apply(struct block_dev *bd, const char *name);

/* Empty the image: every cluster reads from the backing file again (commit). */
int qcow2_make_empty(struct block_dev *bd);

/* Change the backing file name/format recorded in the header (rebase -u, amend). */
int qcow2_set_backing(struct block_dev *bd, const char *backing_file, const char *backing_fmt);
/* Grow the virtual size (resize). */
int qcow2_grow(struct block_dev *bd, uint64_t new_size);
/* Shrink the virtual size (resize --shrink): clusters past the new end are
 * freed, as qemu-img does. Refused for images with internal snapshots. */
int qcow2_shrink(struct block_dev *bd, uint64_t new_size);

/* amend: change the compat level (2 or 3; 0 keeps it) and lazy refcounts
 * (-1 keeps it). Downgrading to v2 writes out zero clusters first and is
 * refused for what v2 cannot express (refcount_bits other than 16, extended
 * L2, zstd compression). Messages name the image. */
struct qcow2_amend_opts {
    int version;
    int lazy_refcounts;
};
int qcow2_amend(struct block_dev *bd, const struct qcow2_amend_opts *o);

#endif
