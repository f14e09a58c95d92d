/* The raw format: guest bytes are file bytes. Synchronous helpers used by
 * every driver, and the io_uring fast path for raw files on an event loop. */
#include "block/block_int.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define URING_ENTRIES 128
#define ZERO_CHUNK (1u << 20)

/* ---- synchronous file I/O ---- */

/* Copy iov into local, dropping the first `skip` bytes; returns the new count. */
static int iov_copy_skip(struct iovec *local, const struct iovec *iov, int iovcnt, uint64_t skip)
{
    int n = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        local[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
        local[n].iov_len = iov[i].iov_len - skip;
        skip = 0;
        n++;
    }
    return n;
}

static int file_rw_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset, bool write)
{
    if (iovcnt > 1024 || iovcnt < 0)
        return -EINVAL;
    struct iovec local[1024];
    uint64_t total = iov_size(iov, iovcnt), done = 0;
    while (done < total) {
        int n = iov_copy_skip(local, iov, iovcnt, done);
        ssize_t r = write ? pwritev(fd, local, n, (off_t)(offset + done))
                          : preadv(fd, local, n, (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0) {
            if (write)
                return -EIO;
            /* Past the end of the file reads as zeroes (a file shorter than
             * its image claims, or truncated under us). */
            for (int i = 0; i < n; i++)
                memset(local[i].iov_base, 0, local[i].iov_len);
            return 0;
        }
        done += (uint64_t)r;
    }
    return 0;
}

int file_preadv_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    return file_rw_full(fd, iov, iovcnt, offset, false);
}

int file_pwritev_full(int fd, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    return file_rw_full(fd, iov, iovcnt, offset, true);
}

static int file_write_zero_buffers(int fd, uint64_t offset, uint64_t len)
{
    void *zero = xzalloc(ZERO_CHUNK);
    int ret = 0;
    while (len && ret == 0) {
        uint64_t n = MIN(len, ZERO_CHUNK);
        ret = pwrite_full(fd, zero, n, offset);
        offset += n;
        len -= n;
    }
    free(zero);
    return ret;
}

int file_write_zeroes(int fd, uint64_t offset, uint64_t len, bool may_unmap)
{
    if (len == 0)
        return 0;
    if (may_unmap && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                               (off_t)len) == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)offset, (off_t)len) == 0)
        return 0;
    return file_write_zero_buffers(fd, offset, len);
}

int file_discard(int fd, uint64_t offset, uint64_t len)
{
    if (len == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) < 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    return 0; /* discard is a hint: unsupported is fine */
}

int file_run_sync(int fd, const struct block_request *req, bool no_barriers)
{
    switch (req->op) {
    case BLOCK_OP_READ:
        return file_preadv_full(fd, req->iov, req->iovcnt, req->offset);
    case BLOCK_OP_WRITE:
        return file_pwritev_full(fd, req->iov, req->iovcnt, req->offset);
    case BLOCK_OP_FLUSH:
        if (no_barriers)
            return 0;
        return fdatasync(fd) < 0 ? -errno : 0;
    case BLOCK_OP_DISCARD:
        return file_discard(fd, req->offset, req->len);
    case BLOCK_OP_WRITE_ZEROES:
        return file_write_zeroes(fd, req->offset, req->len, req->may_unmap);
    }
    return -EINVAL;
}

static int raw_run_sync(struct block_dev *bd, const struct block_request *req)
{
    return file_run_sync(bd->fd, req, false);
}

static int raw_block_status(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
                            unsigned *status)
{
    /* Holes in sparse files read as zeroes. */
    off_t data = lseek(bd->fd, (off_t)offset, SEEK_DATA);
    if (data < 0 && errno == ENXIO) {
        *pnum = len;
        *status = BLOCK_STATUS_ZERO | BLOCK_STATUS_ALLOCATED;
        return 0;
    }
    if (data < 0) {
        *pnum = len;
        *status = BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED;
        return 0;
    }
    if ((uint64_t)data > offset) {
        *pnum = MIN(len, (uint64_t)data - offset);
        *status = BLOCK_STATUS_ZERO | BLOCK_STATUS_ALLOCATED;
        return 0;
    }
    off_t hole = lseek(bd->fd, (off_t)offset, SEEK_HOLE);
    if (hole < 0 || (uint64_t)hole <= offset)
        *pnum = len;
    else
        *pnum = MIN(len, (uint64_t)hole - offset);
    *status = BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED;
    return 0;
}

const struct block_driver block_driver_raw = {
    .name = "raw",
    .run_sync = raw_run_sync,
    .block_status = raw_block_status,
};

/* ---- io_uring ---- */

struct uring_req {
    struct block_request req;
    struct uring_req *next;
};

struct block_uring {
    struct io_uring ring;
    int efd;
    pthread_mutex_t lock;   /* submissions come from any thread */
    unsigned inflight;
    struct uring_req *pending, **pending_tail;
};

/* Caller holds the lock and has checked there is room in the ring. */
static void uring_queue_one(struct block_dev *bd, struct uring_req *ur)
{
    struct block_uring *u = bd->uring;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    const struct block_request *req = &ur->req;
    switch (req->op) {
    case BLOCK_OP_READ:
        io_uring_prep_readv(sqe, bd->fd, req->iov, (unsigned)req->iovcnt, req->offset);
        break;
    case BLOCK_OP_WRITE:
        io_uring_prep_writev(sqe, bd->fd, req->iov, (unsigned)req->iovcnt, req->offset);
        break;
    default:
        io_uring_prep_fsync(sqe, bd->fd, IORING_FSYNC_DATASYNC);
        break;
    }
    io_uring_sqe_set_data(sqe, ur);
    u->inflight++;
}

static void uring_submit_pending_locked(struct block_dev *bd)
{
    struct block_uring *u = bd->uring;
    bool queued = false;
    while (u->pending && u->inflight < URING_ENTRIES) {
        struct uring_req *ur = u->pending;
        u->pending = ur->next;
        if (!u->pending)
            u->pending_tail = &u->pending;
        uring_queue_one(bd, ur);
        queued = true;
    }
    if (queued) {
        int r;
        do
            r = io_uring_submit(&u->ring);
        while (r == -EINTR || r == -EAGAIN);
        if (r < 0)
            log_error("%s: io_uring submit failed: %s", bd->what, strerror(-r));
    }
}

int block_uring_submit(struct block_dev *bd, struct block_request *req)
{
    struct block_uring *u = bd->uring;
    struct uring_req *ur = xzalloc(sizeof(*ur));
    ur->req = *req;
    pthread_mutex_lock(&u->lock);
    *u->pending_tail = ur;
    u->pending_tail = &ur->next;
    uring_submit_pending_locked(bd);
    pthread_mutex_unlock(&u->lock);
    return 0;
}

/* A short read or write finishes synchronously (rare: signals, EOF). */
static int uring_finish(struct block_dev *bd, struct uring_req *ur, int res)
{
    const struct block_request *req = &ur->req;
    if (res < 0)
        return res;
    if (req->op != BLOCK_OP_READ && req->op != BLOCK_OP_WRITE)
        return 0;
    uint64_t total = iov_size(req->iov, req->iovcnt);
    if ((uint64_t)res >= total)
        return 0;
    struct iovec local[1024];
    int n = iov_copy_skip(local, req->iov, req->iovcnt, (uint64_t)res);
    return req->op == BLOCK_OP_READ ? file_preadv_full(bd->fd, local, n, req->offset + res)
                                    : file_pwritev_full(bd->fd, local, n, req->offset + res);
}

/* Collect finished requests and run their callbacks outside the lock (a
 * callback may submit again). wait: block until all in flight are done. */
static void uring_reap(struct block_dev *bd, bool wait)
{
    struct block_uring *u = bd->uring;
    for (;;) {
        struct uring_req *done[64];
        int res[64], n = 0;
        pthread_mutex_lock(&u->lock);
        while (n < 64) {
            struct io_uring_cqe *cqe;
            int r = io_uring_peek_cqe(&u->ring, &cqe);
            if (r < 0 && wait && u->inflight && n == 0)
                r = io_uring_wait_cqe(&u->ring, &cqe);
            if (r < 0)
                break;
            done[n] = io_uring_cqe_get_data(cqe);
            res[n] = cqe->res;
            io_uring_cqe_seen(&u->ring, cqe);
            u->inflight--;
            n++;
        }
        uring_submit_pending_locked(bd);
        bool more = wait && (u->inflight || u->pending);
        pthread_mutex_unlock(&u->lock);
        for (int i = 0; i < n; i++) {
            int ret = uring_finish(bd, done[i], res[i]);
            done[i]->req.done(done[i]->req.opaque, ret);
            free(done[i]);
        }
        if (n == 0 && !more)
            return;
    }
}

static void uring_on_event(void *opaque, uint32_t events)
{
    struct block_dev *bd = opaque;
    uint64_t v;
    if (read(bd->uring->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("%s: io_uring eventfd read failed: %s", bd->what, strerror(errno));
    uring_reap(bd, false);
}

int block_uring_open(struct block_dev *bd)
{
    struct block_uring *u = xzalloc(sizeof(*u));
    int ret = io_uring_queue_init(URING_ENTRIES, &u->ring, 0);
    if (ret < 0) {
        log_debug("%s: io_uring unavailable (%s); using worker threads", bd->what,
                  strerror(-ret));
        free(u);
        return ret;
    }
    u->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->efd < 0 || io_uring_register_eventfd(&u->ring, u->efd) < 0) {
        ret = -errno;
        goto fail;
    }
    pthread_mutex_init(&u->lock, NULL);
    u->pending_tail = &u->pending;
    bd->uring = u;
    ret = evloop_add_fd(bd->loop, u->efd, EPOLLIN, uring_on_event, bd);
    if (ret < 0) {
        bd->uring = NULL;
        pthread_mutex_destroy(&u->lock);
        goto fail;
    }
    return 0;
fail:
    if (u->efd >= 0)
        close(u->efd);
    io_uring_queue_exit(&u->ring);
    free(u);
    return ret;
}

void block_uring_close(struct block_dev *bd)
{
    struct block_uring *u = bd->uring;
    uring_reap(bd, true);
    evloop_del_fd(bd->loop, u->efd);
    close(u->efd);
    io_uring_queue_exit(&u->ring);
    pthread_mutex_destroy(&u->lock);
    free(u);
    bd->uring = NULL;
}
