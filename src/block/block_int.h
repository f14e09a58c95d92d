/* Internal interface between the generic block layer (block.c) and the
 * format drivers (raw in file.c, qcow2 in qcow2.c). Not for use outside
 * src/block/ and its tests. */
#ifndef EMBER_BLOCK_BLOCK_INT_H
#define EMBER_BLOCK_BLOCK_INT_H

#include "block/block.h"

#include <pthread.h>
#include <stdatomic.h>

struct block_driver {
    const char *name;
    /* Perform one request synchronously (any thread); 0 or -errno.
     * The generic layer has already range- and read-only-checked it. */
    int (*run_sync)(struct block_dev *bd, const struct block_request *req);
    void (*close)(struct block_dev *bd);
    /* Optional: allocation status of [offset, offset+len): sets *pnum to the
     * length of the run starting at offset with the same status. */
    int (*block_status)(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
                        unsigned *status);
};

struct block_uring;
struct block_pool;

struct block_dev {
    const struct block_driver *drv;
    char *filename;
    char *what;              /* name used in messages */
    int fd;                  /* the image file */
    uint64_t length;         /* virtual size in bytes */
    bool readonly;
    bool probed_raw;         /* format guessed: refuse writes that would make it look like qcow2 */
    bool no_barriers;
    struct evloop *loop;
    struct block_uring *uring;   /* raw files with a loop, when io_uring works */
    struct block_pool *pool;     /* worker threads, created on first use */
    pthread_mutex_t pool_lock;
    void *opaque;                /* driver state */
};

/* The raw driver; file.c */
extern const struct block_driver block_driver_raw;
int file_run_sync(int fd, const struct block_request *req, bool no_barriers);
int file_preadv_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset);
int file_pwritev_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset);
int file_write_zeroes(int fd, uint64_t offset, uint64_t len, bool may_unmap);
int file_discard(int fd, uint64_t offset, uint64_t len);

/* io_uring path for raw files; file.c */
int block_uring_open(struct block_dev *bd);
void block_uring_close(struct block_dev *bd);
int block_uring_submit(struct block_dev *bd, struct block_request *req);

/* The qcow2 driver; qcow2.c. chain: real paths of the images above this one
 * (loop detection), depth: how deep in a backing chain. */
struct block_chain {
    const char *realpath;
    const struct block_chain *up;
    int depth;
};
int qcow2_open(struct block_dev *bd, const struct block_open_opts *opts,
               const struct block_chain *chain);
bool qcow2_probe(const uint8_t *buf, size_t len);

/* Open with loop detection for backing chains; block.c */
int block_open_chain(const char *filename, const struct block_open_opts *opts,
                     const struct block_chain *chain, struct block_dev **out);

/* Helpers: total bytes of an iovec; copy between iovec and flat buffer. */
uint64_t iov_size(const struct iovec *iov, int iovcnt);
void iov_to_buf(const struct iovec *iov, int iovcnt, uint64_t skip, void *buf, uint64_t len);
void iov_from_buf(const struct iovec *iov, int iovcnt, uint64_t skip, const void *buf, uint64_t len);

#endif
