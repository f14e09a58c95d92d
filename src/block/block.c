/* The generic block layer: opening and format probing, request checks, and
 * the three ways a request completes: synchronously (no event loop),
 * through io_uring (raw files, file.c), or on a small pool of worker
 * threads whose results are handed back to the loop thread. */
#include "block/block_int.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define POOL_THREADS 4
#define BLOCK_MAX_IOV 1024

/* ---- iovec helpers ---- */

uint64_t iov_size(const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

void iov_to_buf(const struct iovec *iov, int iovcnt, uint64_t skip, void *buf, uint64_t len)
{
    uint8_t *p = buf;
    for (int i = 0; i < iovcnt && len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        uint64_t n = MIN(iov[i].iov_len - skip, len);
        memcpy(p, (uint8_t *)iov[i].iov_base + skip, n);
        p += n;
        len -= n;
        skip = 0;
    }
}

void iov_from_buf(const struct iovec *iov, int iovcnt, uint64_t skip, const void *buf, uint64_t len)
{
    const uint8_t *p = buf;
    for (int i = 0; i < iovcnt && len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        uint64_t n = MIN(iov[i].iov_len - skip, len);
        memcpy((uint8_t *)iov[i].iov_base + skip, p, n);
        p += n;
        len -= n;
        skip = 0;
    }
}

/* ---- worker-thread pool ---- */

struct pool_job {
    struct block_dev *bd;
    struct block_request req;
    int ret;
    struct pool_job *next;
};

/* The loop-thread call that runs finished jobs' callbacks. It owns only
 * this small object, so a close can disarm it instead of waiting for it. */
struct pool_kick {
    _Atomic(struct block_pool *) pool;
};

struct block_pool {
    pthread_t threads[POOL_THREADS];
    int nthreads;
    struct evloop *loop;
    pthread_mutex_t lock;
    pthread_cond_t work_cond;  /* a job was queued, or stop */
    pthread_cond_t idle_cond;  /* busy dropped to zero */
    struct pool_job *head, **tail;      /* queued */
    struct pool_job *done_head, **done_tail; /* finished, callbacks not yet run */
    struct pool_kick *kick;             /* armed when done list is non-empty */
    unsigned busy;             /* queued + running */
    bool stop;
};

static void pool_run_done(struct block_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    struct pool_job *job = pool->done_head;
    pool->done_head = NULL;
    pool->done_tail = &pool->done_head;
    pthread_mutex_unlock(&pool->lock);
    while (job) {
        struct pool_job *next = job->next;
        job->req.done(job->req.opaque, job->ret);
        free(job);
        job = next;
    }
}

static void pool_on_kick(void *opaque)
{
    struct pool_kick *kick = opaque;
    struct block_pool *pool = atomic_exchange(&kick->pool, NULL);
    if (pool) {
        pthread_mutex_lock(&pool->lock);
        if (pool->kick == kick)
            pool->kick = NULL;
        pthread_mutex_unlock(&pool->lock);
        pool_run_done(pool);
    }
    free(kick);
}

static void *pool_worker(void *opaque)
{
    struct block_pool *pool = opaque;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stop)
            pthread_cond_wait(&pool->work_cond, &pool->lock);
        if (!pool->head)
            break;
        struct pool_job *job = pool->head;
        pool->head = job->next;
        if (!pool->head)
            pool->tail = &pool->head;
        pthread_mutex_unlock(&pool->lock);

        struct block_dev *bd = job->bd;
        job->ret = bd->drv->run_sync(bd, &job->req);

        pthread_mutex_lock(&pool->lock);
        job->next = NULL;
        *pool->done_tail = job;
        pool->done_tail = &job->next;
        if (!pool->kick) {
            pool->kick = xzalloc(sizeof(*pool->kick));
            atomic_store(&pool->kick->pool, pool);
            evloop_call(pool->loop, pool_on_kick, pool->kick);
        }
        if (--pool->busy == 0)
            pthread_cond_broadcast(&pool->idle_cond);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static struct block_pool *pool_get(struct block_dev *bd)
{
    pthread_mutex_lock(&bd->pool_lock);
    if (!bd->pool) {
        struct block_pool *pool = xzalloc(sizeof(*pool));
        pthread_mutex_init(&pool->lock, NULL);
        pthread_cond_init(&pool->work_cond, NULL);
        pthread_cond_init(&pool->idle_cond, NULL);
        pool->tail = &pool->head;
        pool->done_tail = &pool->done_head;
        pool->loop = bd->loop;
        for (int i = 0; i < POOL_THREADS; i++) {
            if (pthread_create(&pool->threads[i], NULL, pool_worker, pool) != 0)
                break;
            pool->nthreads++;
        }
        if (pool->nthreads == 0) {
            log_error("%s: cannot start block worker threads", bd->what);
            free(pool);
            pool = NULL;
        }
        bd->pool = pool;
    }
    pthread_mutex_unlock(&bd->pool_lock);
    return bd->pool;
}

static int pool_submit(struct block_dev *bd, const struct block_request *req)
{
    struct block_pool *pool = pool_get(bd);
    if (!pool)
        return -EAGAIN;
    struct pool_job *job = xzalloc(sizeof(*job));
    job->bd = bd;
    job->req = *req;
    pthread_mutex_lock(&pool->lock);
    *pool->tail = job;
    pool->tail = &job->next;
    pool->busy++;
    pthread_cond_signal(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

/* Waits for queued jobs, runs the callbacks still owed, stops the threads.
 * Call on the loop thread or once the loop no longer runs. */
static void pool_free(struct block_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    while (pool->busy)
        pthread_cond_wait(&pool->idle_cond, &pool->lock);
    pool->stop = true;
    if (pool->kick)
        atomic_store(&pool->kick->pool, NULL);
    pool->kick = NULL;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pool_run_done(pool);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->idle_cond);
    free(pool);
}

/* ---- request checks ---- */

static const uint8_t qcow2_magic[4] = { 'Q', 'F', 'I', 0xfb };

/* 0 if the request may run, else the -errno it completes with. */
static int block_check_request(struct block_dev *bd, const struct block_request *req)
{
    uint64_t len, end;
    switch (req->op) {
    case BLOCK_OP_READ:
    case BLOCK_OP_WRITE:
        if (req->iovcnt < 0 || req->iovcnt > BLOCK_MAX_IOV || (req->iovcnt && !req->iov))
            return -EINVAL;
        len = iov_size(req->iov, req->iovcnt);
        break;
    case BLOCK_OP_DISCARD:
    case BLOCK_OP_WRITE_ZEROES:
        len = req->len;
        break;
    case BLOCK_OP_FLUSH:
        return 0;
    default:
        return -EINVAL;
    }
    if (add_overflows(req->offset, len, &end) || end > bd->length)
        return -EINVAL;
    if (req->op == BLOCK_OP_READ)
        return 0;
    if (bd->readonly)
        return -EROFS;
    /* A guessed raw format must not let the guest turn the image into
     * something that probes as another format next time. */
    if (bd->probed_raw && req->op == BLOCK_OP_WRITE && req->offset == 0 && len >= 4) {
        uint8_t head[4];
        iov_to_buf(req->iov, req->iovcnt, 0, head, 4);
        if (memcmp(head, qcow2_magic, 4) == 0) {
            log_error("%s: refusing to write a qcow2 header into an image whose raw format was "
                      "only guessed", bd->what);
            return -EPERM;
        }
    }
    return 0;
}

struct deferred_error {
    block_done_fn *done;
    void *opaque;
    int ret;
};

static void deferred_error_run(void *opaque)
{
    struct deferred_error *d = opaque;
    d->done(d->opaque, d->ret);
    free(d);
}

int block_submit(struct block_dev *bd, struct block_request *req)
{
    if (!req || !req->done)
        return -EINVAL;
    int ret = block_check_request(bd, req);
    if (!bd->loop) {
        if (ret == 0)
            ret = bd->drv->run_sync(bd, req);
        req->done(req->opaque, ret);
        return 0;
    }
    if (ret < 0) {
        /* Completions always come from the loop, never from inside submit. */
        struct deferred_error *d = xzalloc(sizeof(*d));
        d->done = req->done;
        d->opaque = req->opaque;
        d->ret = ret;
        evloop_call(bd->loop, deferred_error_run, d);
        return 0;
    }
    if (bd->uring && (req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE ||
                      req->op == BLOCK_OP_FLUSH))
        return block_uring_submit(bd, req);
    return pool_submit(bd, req);
}

/* ---- synchronous conveniences ---- */

static void sync_done(void *opaque, int ret)
{
    *(int *)opaque = ret;
}

static int block_run_now(struct block_dev *bd, struct block_request *req)
{
    int ret = block_check_request(bd, req);
    if (ret == 0)
        ret = bd->drv->run_sync(bd, req);
    return ret;
}

int block_pread(struct block_dev *bd, uint64_t offset, void *buf, uint64_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    int ret = 0;
    struct block_request req = { .op = BLOCK_OP_READ, .offset = offset, .iov = &iov,
                                 .iovcnt = 1, .done = sync_done, .opaque = &ret };
    return block_run_now(bd, &req);
}

int block_pwrite(struct block_dev *bd, uint64_t offset, const void *buf, uint64_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    int ret = 0;
    struct block_request req = { .op = BLOCK_OP_WRITE, .offset = offset, .iov = &iov,
                                 .iovcnt = 1, .done = sync_done, .opaque = &ret };
    return block_run_now(bd, &req);
}

int block_flush(struct block_dev *bd)
{
    struct block_request req = { .op = BLOCK_OP_FLUSH };
    return block_run_now(bd, &req);
}

int block_write_zeroes(struct block_dev *bd, uint64_t offset, uint64_t len, bool may_unmap)
{
    struct block_request req = { .op = BLOCK_OP_WRITE_ZEROES, .offset = offset, .len = len,
                                 .may_unmap = may_unmap };
    return block_run_now(bd, &req);
}

int block_discard(struct block_dev *bd, uint64_t offset, uint64_t len)
{
    struct block_request req = { .op = BLOCK_OP_DISCARD, .offset = offset, .len = len };
    return block_run_now(bd, &req);
}

int block_status(struct block_dev *bd, uint64_t offset, uint64_t len, uint64_t *pnum,
                 unsigned *status)
{
    uint64_t end;
    if (add_overflows(offset, len, &end) || end > bd->length || len == 0)
        return -EINVAL;
    if (bd->drv->block_status)
        return bd->drv->block_status(bd, offset, len, pnum, status);
    *pnum = len;
    *status = BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED;
    return 0;
}

/* ---- open / close ---- */

uint64_t block_length(const struct block_dev *bd)
{
    return bd->length;
}

bool block_is_readonly(const struct block_dev *bd)
{
    return bd->readonly;
}

const char *block_format_name(const struct block_dev *bd)
{
    return bd->drv->name;
}

const char *block_filename(const struct block_dev *bd)
{
    return bd->filename;
}

static int block_file_size(int fd, const char *what, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return log_fail(-errno, "%s: cannot stat: %s", what, strerror(errno));
    if (S_ISREG(st.st_mode)) {
        *size = (uint64_t)st.st_size;
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t n;
        if (ioctl(fd, BLKGETSIZE64, &n) < 0)
            return log_fail(-errno, "%s: cannot get block device size: %s", what,
                            strerror(errno));
        *size = n;
        return 0;
    }
    return log_fail(-EINVAL, "%s: not a regular file or block device", what);
}

int block_open_chain(const char *filename, const struct block_open_opts *opts,
                     const struct block_chain *chain, struct block_dev **out)
{
    static const struct block_open_opts defaults;
    if (!opts)
        opts = &defaults;
    *out = NULL;
    const char *what = opts->what ? opts->what : filename;
    if (!filename || !*filename)
        return log_fail(-EINVAL, "%s: no image file name given", opts->what ? opts->what : "block");
    if (opts->format && strcmp(opts->format, "raw") != 0 && strcmp(opts->format, "qcow2") != 0)
        return log_fail(-EINVAL, "%s: unknown image format '%s' (supported: raw, qcow2)", what,
                        opts->format);

    int fd = open(filename, (opts->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return log_fail(-errno, "%s: cannot open%s: %s", what,
                        opts->readonly ? "" : " for writing", strerror(errno));

    struct block_dev *bd = xzalloc(sizeof(*bd));
    bd->fd = fd;
    bd->filename = xstrdup(filename);
    bd->what = xasprintf("'%s'", what);
    bd->readonly = opts->readonly;
    bd->no_barriers = opts->no_barriers;
    bd->loop = opts->loop;
    pthread_mutex_init(&bd->pool_lock, NULL);

    uint64_t size = 0;
    int ret = block_file_size(fd, bd->what, &size);
    if (ret < 0)
        goto fail;

    uint8_t head[512];
    memset(head, 0, sizeof(head));
    ssize_t n = pread(fd, head, sizeof(head), 0);
    if (n < 0) {
        ret = log_fail(-errno, "%s: cannot read: %s", bd->what, strerror(errno));
        goto fail;
    }
    bool is_qcow2 = qcow2_probe(head, (size_t)n);
    const char *format = opts->format;
    if (!format) {
        format = is_qcow2 ? "qcow2" : "raw";
        if (!is_qcow2) {
            bd->probed_raw = true;
            log_warn("image format was not given for %s; guessed raw. Writes to block 0 that "
                     "would make it look like another format are refused; give format=raw "
                     "explicitly to lift that restriction", bd->what);
        }
    }
    if (strcmp(format, "qcow2") == 0) {
        ret = qcow2_open(bd, opts, chain);
        if (ret < 0)
            goto fail;
    } else {
        bd->drv = &block_driver_raw;
        bd->length = size;
        if (bd->loop && !getenv("EMBER_BLOCK_NO_URING"))
            block_uring_open(bd); /* on failure requests go to the thread pool */
    }
    *out = bd;
    return 0;

fail:
    close(fd);
    pthread_mutex_destroy(&bd->pool_lock);
    free(bd->filename);
    free(bd->what);
    free(bd);
    return ret;
}

int block_open(const char *filename, const struct block_open_opts *opts, struct block_dev **out)
{
    return block_open_chain(filename, opts, NULL, out);
}

void block_close(struct block_dev *bd)
{
    if (!bd)
        return;
    if (bd->uring)
        block_uring_close(bd);
    pool_free(bd->pool);
    bd->pool = NULL;
    if (bd->drv->close)
        bd->drv->close(bd);
    close(bd->fd);
    pthread_mutex_destroy(&bd->pool_lock);
    free(bd->filename);
    free(bd->what);
    free(bd);
}
