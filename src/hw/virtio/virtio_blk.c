/* virtio-blk (virtio 1.2, 5.2): requests are parsed and checked here, then
 * handed to the block layer asynchronously; the completion writes the
 * status byte and puts the request in the used ring. */
#include "virtio_devices.h"
#include "virtio_pci.h"

#include "block/block.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BLK_DEVICE_TYPE 2
#define BLK_QUEUE_SIZE 256
#define BLK_SECTOR 512ULL
#define BLK_SIZE_MAX (1u << 20)
#define BLK_MAX_DISCARD_SECTORS (1u << 22)

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Configuration layout (5.2.4). */
#define CFG_CAPACITY 0
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX 12
#define CFG_BLK_SIZE 20
#define CFG_NUM_QUEUES 34
#define CFG_MAX_DISCARD_SECTORS 36
#define CFG_MAX_DISCARD_SEG 40
#define CFG_DISCARD_ALIGNMENT 44
#define CFG_MAX_WRITE_ZEROES_SECTORS 48
#define CFG_MAX_WRITE_ZEROES_SEG 52
#define CFG_WRITE_ZEROES_MAY_UNMAP 56
#define CFG_SIZE 60

/* Request types and status values (5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

#define REQ_HEADER 16
#define REQ_SEGMENT 16

struct virtio_blk {
    struct virtio_dev *vdev;
    struct block_dev *bd;
    uint64_t capacity; /* sectors */
    bool readonly;
    bool submitting;   /* inside block_submit(): completions defer the interrupt */
    char serial[VIRTIO_BLK_ID_BYTES];
};

struct blk_req {
    struct virtio_blk *blk;
    struct virtq_elem *elem;
    unsigned q;
    uint32_t epoch;
    uint32_t data_len; /* bytes written to the driver's buffers on success */
    struct block_request br;
    struct iovec iov[];
};

/* Write the status byte (the last writable byte) and hand the request back. */
static void blk_finish(struct virtio_blk *blk, unsigned q, struct virtq_elem *e, uint8_t status,
                       uint32_t data_len)
{
    virtq_iov_from_buf(e->in, e->nr_in, e->in_len - 1, &status, 1);
    virtq_push(virtio_dev_queue(blk->vdev, q), e, data_len + 1);
    if (!blk->submitting)
        virtio_dev_notify(blk->vdev, q);
}

static void blk_done(void *opaque, int ret)
{
    struct blk_req *req = opaque;
    struct virtio_blk *blk = req->blk;
    virtio_dev_lock(blk->vdev);
    /* A request from before a device reset must not touch the new rings. */
    if (req->epoch == virtio_dev_epoch(blk->vdev) && virtio_dev_running(blk->vdev)) {
        if (ret < 0)
            log_debug("%s: request failed: %d", virtio_dev_name(blk->vdev), ret);
        uint8_t status = ret == 0                ? VIRTIO_BLK_S_OK
                         : ret == -EOPNOTSUPP ? VIRTIO_BLK_S_UNSUPP
                                              : VIRTIO_BLK_S_IOERR;
        blk_finish(blk, req->q, req->elem, status, ret < 0 ? 0 : req->data_len);
    } else {
        virtq_elem_free(req->elem);
    }
    virtio_dev_unlock(blk->vdev);
    free(req);
}

static void blk_submit(struct virtio_blk *blk, struct blk_req *req)
{
    req->br.done = blk_done;
    req->br.opaque = req;
    blk->submitting = true;
    int r = block_submit(blk->bd, &req->br);
    blk->submitting = false;
    if (r < 0) /* not queued: done() will not run */
        blk_done(req, r);
}

static struct blk_req *req_new(struct virtio_blk *blk, unsigned q, struct virtq_elem *e,
                               unsigned nr_iov)
{
    struct blk_req *req = xzalloc(sizeof(*req) + nr_iov * sizeof(struct iovec));
    req->blk = blk;
    req->elem = e;
    req->q = q;
    req->epoch = virtio_dev_epoch(blk->vdev);
    return req;
}

/* Is [sector, sector + bytes/512) on the disk, bytes a whole number of sectors? */
static bool range_ok(const struct virtio_blk *blk, uint64_t sector, uint64_t bytes)
{
    return bytes % BLK_SECTOR == 0 && sector <= blk->capacity &&
           bytes / BLK_SECTOR <= blk->capacity - sector;
}

static uint8_t blk_rw(struct virtio_blk *blk, unsigned q, struct virtq_elem *e, bool write,
                      uint64_t sector)
{
    /* Data follows the header (writes) or precedes the status byte (reads). */
    const struct iovec *src = write ? e->out : e->in;
    unsigned cnt = write ? e->nr_out : e->nr_in;
    uint64_t skip = write ? REQ_HEADER : 0;
    uint64_t len = write ? e->out_len - REQ_HEADER : e->in_len - 1;

    if (write && blk->readonly)
        return VIRTIO_BLK_S_IOERR;
    if (!range_ok(blk, sector, len))
        return VIRTIO_BLK_S_IOERR;
    if (len == 0) {
        blk_finish(blk, q, e, VIRTIO_BLK_S_OK, 0);
        return VIRTIO_BLK_S_OK;
    }
    struct blk_req *req = req_new(blk, q, e, cnt);
    int n = virtq_iov_slice(src, cnt, skip, len, req->iov, cnt);
    if (n < 0) { /* cannot happen: len was computed from these iovecs */
        free(req);
        return VIRTIO_BLK_S_IOERR;
    }
    req->br.op = write ? BLOCK_OP_WRITE : BLOCK_OP_READ;
    req->br.offset = sector * BLK_SECTOR;
    req->br.iov = req->iov;
    req->br.iovcnt = n;
    req->data_len = write ? 0 : (uint32_t)len;
    blk_submit(blk, req);
    return VIRTIO_BLK_S_OK;
}

static uint8_t blk_discard(struct virtio_blk *blk, unsigned q, struct virtq_elem *e,
                           bool zeroes)
{
    uint8_t seg[REQ_SEGMENT];
    if (blk->readonly)
        return VIRTIO_BLK_S_IOERR;
    /* We advertise one segment per request. */
    if (e->out_len - REQ_HEADER != REQ_SEGMENT)
        return VIRTIO_BLK_S_IOERR;
    virtq_iov_to_buf(e->out, e->nr_out, REQ_HEADER, seg, sizeof(seg));
    uint64_t sector = ld64(seg);
    uint32_t nr = ld32(seg + 8), flags = ld32(seg + 12);
    if (flags & ~(uint32_t)(zeroes ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0))
        return VIRTIO_BLK_S_UNSUPP;
    if (nr > BLK_MAX_DISCARD_SECTORS || !range_ok(blk, sector, (uint64_t)nr * BLK_SECTOR))
        return VIRTIO_BLK_S_IOERR;
    struct blk_req *req = req_new(blk, q, e, 0);
    req->br.op = zeroes ? BLOCK_OP_WRITE_ZEROES : BLOCK_OP_DISCARD;
    req->br.offset = sector * BLK_SECTOR;
    req->br.len = (uint64_t)nr * BLK_SECTOR;
    req->br.may_unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    blk_submit(blk, req);
    return VIRTIO_BLK_S_OK;
}

/* Returns the status for requests answered at once; VIRTIO_BLK_S_OK means
 * the request was handed on (or finished) and e is no longer ours. */
static uint8_t blk_dispatch(struct virtio_blk *blk, unsigned q, struct virtq_elem *e,
                            uint32_t type, uint64_t sector)
{
    switch (type) {
    case VIRTIO_BLK_T_IN:
        return blk_rw(blk, q, e, false, sector);
    case VIRTIO_BLK_T_OUT:
        return blk_rw(blk, q, e, true, sector);
    case VIRTIO_BLK_T_FLUSH: {
        struct blk_req *req = req_new(blk, q, e, 0);
        req->br.op = BLOCK_OP_FLUSH;
        blk_submit(blk, req);
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = virtq_iov_from_buf(e->in, e->nr_in, 0, blk->serial,
                                MIN(sizeof(blk->serial), e->in_len - 1));
        blk_finish(blk, q, e, VIRTIO_BLK_S_OK, (uint32_t)n);
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_DISCARD:
        return blk_discard(blk, q, e, false);
    case VIRTIO_BLK_T_WRITE_ZEROES:
        return blk_discard(blk, q, e, true);
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

static void blk_handle(void *opaque, unsigned q, struct virtq_elem *e)
{
    struct virtio_blk *blk = opaque;
    uint8_t hdr[REQ_HEADER];
    /* Without a header or a status byte there is no way to answer. */
    if (e->out_len < REQ_HEADER || e->in_len < 1) {
        virtq_elem_free(e);
        virtio_dev_fail(blk->vdev, "queue %u: request without header or status byte", q);
        return;
    }
    virtq_iov_to_buf(e->out, e->nr_out, 0, hdr, sizeof(hdr));
    uint8_t status = blk_dispatch(blk, q, e, ld32(hdr), ld64(hdr + 8));
    if (status != VIRTIO_BLK_S_OK)
        blk_finish(blk, q, e, status, 0);
}

static void blk_queue_notify(void *opaque, unsigned q)
{
    struct virtio_blk *blk = opaque;
    virtio_dev_process_queue(blk->vdev, q, blk_handle, blk);
}

static void fill_config(struct virtio_blk *blk, unsigned num_queues)
{
    uint8_t *c = virtio_dev_config(blk->vdev);
    st64(c + CFG_CAPACITY, blk->capacity);
    st32(c + CFG_SIZE_MAX, BLK_SIZE_MAX);
    st32(c + CFG_SEG_MAX, BLK_QUEUE_SIZE - 2);
    st32(c + CFG_BLK_SIZE, (uint32_t)BLK_SECTOR);
    st16(c + CFG_NUM_QUEUES, (uint16_t)num_queues);
    st32(c + CFG_MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS);
    st32(c + CFG_MAX_DISCARD_SEG, 1);
    st32(c + CFG_DISCARD_ALIGNMENT, 1);
    st32(c + CFG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DISCARD_SECTORS);
    st32(c + CFG_MAX_WRITE_ZEROES_SEG, 1);
    c[CFG_WRITE_ZEROES_MAY_UNMAP] = 1;
}

struct virtio_dev *virtio_blk_new(const struct virtio_env *env, struct block_dev *bd,
                                  const char *id, const char *serial, unsigned num_queues,
                                  bool readonly)
{
    if (num_queues == 0)
        num_queues = 1;
    if (num_queues > VIRTIO_MAX_QUEUES) {
        log_error("virtio-blk%s%s: num-queues=%u: expected 1 to %u", id ? " " : "",
                  id ? id : "", num_queues, VIRTIO_MAX_QUEUES);
        return NULL;
    }
    struct virtio_blk *blk = xzalloc(sizeof(*blk));
    blk->bd = bd;
    blk->capacity = block_length(bd) / BLK_SECTOR;
    blk->readonly = readonly || block_is_readonly(bd);
    if (serial) /* the ID is not NUL-terminated when it fills all 20 bytes */
        memcpy(blk->serial, serial, MIN(strlen(serial), sizeof(blk->serial)));

    uint64_t features = (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
                        (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH);
    if (num_queues > 1)
        features |= 1ULL << VIRTIO_BLK_F_MQ;
    if (blk->readonly)
        features |= 1ULL << VIRTIO_BLK_F_RO;
    else
        features |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);

    const struct virtio_device_info info = {
        .name = "virtio-blk",
        .device_type = BLK_DEVICE_TYPE,
        .class_base = 0x01, /* mass storage, "SCSI" as QEMU reports it */
        .class_sub = 0x00,
        .features = features,
        .num_queues = num_queues,
        .queue_size = BLK_QUEUE_SIZE,
        .config_size = CFG_SIZE,
        .queue_notify = blk_queue_notify,
        .destroy = free,
    };
    struct virtio_dev *vdev = virtio_dev_new(env, &info, id, blk);
    if (!vdev)
        return NULL; /* blk was freed through info.destroy */
    blk->vdev = vdev;
    fill_config(blk, num_queues);
    return vdev;
}

int virtio_blk_create(const struct virtio_env *env, struct block_dev *bd, const char *id,
                      const char *serial, unsigned num_queues, bool readonly)
{
    return virtio_blk_new(env, bd, id, serial, num_queues, readonly) ? 0 : -ENODEV;
}
