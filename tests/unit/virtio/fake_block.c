#include "fake_block.h"

#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- block ---- */

struct block_dev *fake_block_new(uint64_t len, bool readonly)
{
    struct block_dev *bd = xzalloc(sizeof(*bd));
    bd->data = xzalloc(len);
    bd->len = len;
    bd->readonly = readonly;
    return bd;
}

void fake_block_free(struct block_dev *bd)
{
    free(bd->data);
    free(bd);
}

uint64_t block_length(const struct block_dev *bd) { return bd->len; }
bool block_is_readonly(const struct block_dev *bd) { return bd->readonly; }

static int block_execute(struct block_dev *bd, struct block_request *req)
{
    uint64_t len = req->len;
    if (req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE) {
        len = 0;
        for (int i = 0; i < req->iovcnt; i++)
            len += req->iov[i].iov_len;
    }
    if (req->op == BLOCK_OP_FLUSH) {
        bd->flushes++;
        return 0;
    }
    if (req->offset > bd->len || len > bd->len - req->offset)
        return -EINVAL;
    if (req->op != BLOCK_OP_READ && bd->readonly)
        return -EROFS;
    uint64_t off = req->offset;
    switch (req->op) {
    case BLOCK_OP_READ:
        for (int i = 0; i < req->iovcnt; off += req->iov[i].iov_len, i++)
            memcpy(req->iov[i].iov_base, bd->data + off, req->iov[i].iov_len);
        return 0;
    case BLOCK_OP_WRITE:
        for (int i = 0; i < req->iovcnt; off += req->iov[i].iov_len, i++)
            memcpy(bd->data + off, req->iov[i].iov_base, req->iov[i].iov_len);
        return 0;
    case BLOCK_OP_DISCARD:
        bd->discards++;
        memset(bd->data + off, 0, len);
        return 0;
    case BLOCK_OP_WRITE_ZEROES:
        bd->write_zeroes++;
        memset(bd->data + off, 0, len);
        return 0;
    default:
        return -EINVAL;
    }
}

int block_submit(struct block_dev *bd, struct block_request *req)
{
    bd->submits++;
    if (bd->deferred) {
        if (bd->npending >= ARRAY_SIZE(bd->pending))
            return -EBUSY;
        /* Run the I/O now (the buffers must be valid at submit), complete later. */
        bd->pending_ret[bd->npending] = block_execute(bd, req);
        bd->pending[bd->npending++] = req;
        return 0;
    }
    req->done(req->opaque, block_execute(bd, req));
    return 0;
}

void fake_block_complete_all(struct block_dev *bd)
{
    unsigned n = bd->npending;
    bd->npending = 0;
    for (unsigned i = 0; i < n; i++)
        bd->pending[i]->done(bd->pending[i]->opaque, bd->pending_ret[i]);
}
