/* The block layer: one interface over byte offsets for raw and qcow2 images
 * (and their backing chains), shared by the VMM's virtio-blk, ember-img and
 * ember-nbd. Requests are asynchronous: block_submit() queues, and done()
 * runs later on the event loop thread given at open (io_uring, with a
 * thread-pool fallback). Opened without a loop, block_submit() completes
 * synchronously before it returns (tools). */
#ifndef EMBER_BLOCK_BLOCK_H
#define EMBER_BLOCK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/evloop.h"

struct block_dev;

struct block_open_opts {
    const char *format;      /* "raw", "qcow2" or NULL to probe (warns for raw) */
    bool readonly;
    struct evloop *loop;     /* NULL: synchronous completion */
    uint64_t l2_cache_size;  /* qcow2: bytes of L2 cache, 0 = default */
    const char *what;        /* how to name the image in messages, e.g. "-drive id=hd0" */
    bool no_barriers;        /* tools: skip flush barriers between metadata writes (like
                                qemu-img's cache=unsafe target); a crash may then corrupt */
    bool no_backing;         /* qcow2: do not open the backing file (reads of unallocated
                                clusters then return zeroes) */
};

enum block_op {
    BLOCK_OP_READ,
    BLOCK_OP_WRITE,
    BLOCK_OP_FLUSH,
    BLOCK_OP_DISCARD,
    BLOCK_OP_WRITE_ZEROES,
};

typedef void block_done_fn(void *opaque, int ret); /* ret 0 or -errno */

struct block_request {
    enum block_op op;
    uint64_t offset;
    uint64_t len;             /* DISCARD / WRITE_ZEROES */
    const struct iovec *iov;  /* READ / WRITE (len is the iov total) */
    int iovcnt;
    bool may_unmap;           /* WRITE_ZEROES */
    block_done_fn *done;
    void *opaque;
};

/* Prints a message naming the file on failure. */
int block_open(const char *filename, const struct block_open_opts *opts, struct block_dev **out);
void block_close(struct block_dev *bd);   /* drains in-flight requests first */
uint64_t block_length(const struct block_dev *bd);
bool block_is_readonly(const struct block_dev *bd);
const char *block_format_name(const struct block_dev *bd);

/* Queue a request. Out-of-range or writes to a read-only device complete
 * with -EINVAL / -EROFS through done(). Returns 0, or -errno if the request
 * could not even be queued (done() is then not called). */
int block_submit(struct block_dev *bd, struct block_request *req);

/* Synchronous conveniences (tools, tests); 0 or -errno. */
int block_pread(struct block_dev *bd, uint64_t offset, void *buf, uint64_t len);
int block_pwrite(struct block_dev *bd, uint64_t offset, const void *buf, uint64_t len);
int block_flush(struct block_dev *bd);

int block_write_zeroes(struct block_dev *bd, uint64_t offset, uint64_t len, bool may_unmap);
int block_discard(struct block_dev *bd, uint64_t offset, uint64_t len);

/* Allocation status of the run starting at offset (at most len bytes); the
 * run's length goes to *pnum. Status bits: */
#define BLOCK_STATUS_DATA 1u      /* bytes are stored (here or in a backing image) */
#define BLOCK_STATUS_ZERO 2u      /* bytes read as zero */
#define BLOCK_STATUS_ALLOCATED 4u /* decided by this image, not its backing chain */
int block_status(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
                 unsigned *status);

/* The backing image, or NULL (qcow2 overlays). */
struct block_dev *block_backing(const struct block_dev *bd);
const char *block_filename(const struct block_dev *bd);

#endif
