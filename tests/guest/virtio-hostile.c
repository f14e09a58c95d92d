/* virtio-blk against a hostile driver: buffers outside guest RAM or
 * straddling its end, absurd lengths, looped and out-of-range descriptor
 * chains, a too-short request header, an out-of-range avail ring entry.
 * The VMM must neither crash nor touch memory outside guest RAM; the device
 * must fail the request (error status) or flag DEVICE_NEEDS_RESET (for
 * buffers in unbacked memory, completing is fine too), and must work again
 * after a reset. The harness checks the disk is unchanged.
 * "ramend=ADDR" (the end of low RAM) comes on the command line. */
#include "guest.h"

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_S_OK 0
#define WAIT_US 1000000
#define HOLE_ADDR 0xbff00000ULL /* below the 32-bit PCI hole, above any RAM we get */

struct blk_req_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

static struct virtio_dev vd;
static struct blk_req_hdr hdr;
static volatile uint8_t status;
static uint8_t data[512] __attribute__((aligned(512)));

/* Writes raw descriptors 0..n-1 exactly as given and makes `head` available. */
static void post_raw(const struct virtq_desc *d, unsigned n, uint16_t head)
{
    struct virtq *q = &vd.q[0];
    for (unsigned i = 0; i < n && i < q->size; i++)
        q->desc[i] = d[i];
    q->avail[2 + q->next_avail % q->size] = head;
    barrier();
    q->next_avail++;
    q->avail[1] = q->next_avail;
    virtq_kick(&vd, 0);
}

/* The device must complete with an error status or set NEEDS_RESET; with
 * lenient, any completion will do (DMA to unbacked addresses may be dropped
 * silently, as real chipsets and QEMU do). Never-completing silently fails. */
static bool refused(const char *what, bool status_reachable, bool lenient)
{
    uint32_t id, len;
    bool done = virtq_get_used(&vd, 0, &id, &len, WAIT_US);
    uint8_t dev_status = virtio_status(&vd);
    if (done) {
        tap_diag("%s: completed, id %u len %u status byte %u device status %x", what, id, len,
                 status, dev_status);
        return lenient || !status_reachable || status != VIRTIO_BLK_S_OK ||
               (dev_status & VIRTIO_STATUS_NEEDS_RESET);
    }
    tap_diag("%s: no completion, device status %x", what, dev_status);
    return dev_status & VIRTIO_STATUS_NEEDS_RESET;
}

static bool recovers(void)
{
    if (!virtio_setup(&vd, 0))
        return false;
    hdr = (struct blk_req_hdr){ .type = VIRTIO_BLK_T_IN, .sector = 0 };
    status = 0xff;
    memset(data, 0, sizeof(data));
    struct virtq_desc chain[3] = {
        { .addr = (uintptr_t)&hdr, .len = sizeof(hdr) },
        { .addr = (uintptr_t)data, .len = 512, .flags = VIRTQ_DESC_F_WRITE },
        { .addr = (uintptr_t)&status, .len = 1, .flags = VIRTQ_DESC_F_WRITE },
    };
    long n = virtio_transfer(&vd, chain, 3, 10000000);
    return n >= 0 && status == VIRTIO_BLK_S_OK && !memcmp(data, "ember sector 0 ", 15);
}

enum abuse { OUTSIDE_RAM, STRADDLES_END, HUGE_LENGTH, LOOPED_CHAIN, NEXT_OUT_OF_RANGE,
             SHORT_HEADER, HEAD_OUT_OF_RANGE, NR_ABUSES };

static const char *const abuse_name[NR_ABUSES] = {
    "read into memory outside guest RAM",
    "read into a buffer straddling the end of RAM",
    "read with a 4 GiB - 512 byte buffer",
    "descriptor chain that loops",
    "descriptor next index beyond the queue",
    "request header of 4 bytes",
    "avail ring entry beyond the queue",
};

static void try_abuse(enum abuse a, uint64_t ramend)
{
    hdr = (struct blk_req_hdr){ .type = VIRTIO_BLK_T_IN, .sector = 0 };
    status = VIRTIO_BLK_S_OK; /* a device that never writes it looks like success: check */
    struct virtq_desc d[3] = {
        { .addr = (uintptr_t)&hdr, .len = sizeof(hdr), .flags = VIRTQ_DESC_F_NEXT, .next = 1 },
        { .addr = (uintptr_t)data, .len = 512,
          .flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, .next = 2 },
        { .addr = (uintptr_t)&status, .len = 1, .flags = VIRTQ_DESC_F_WRITE },
    };
    bool status_reachable = true, lenient = false;
    uint16_t head = 0;
    switch (a) {
    case OUTSIDE_RAM:
        d[1].addr = HOLE_ADDR;
        lenient = true;
        break;
    case STRADDLES_END:
        d[1].addr = ramend - 256;
        lenient = true;
        break;
    case HUGE_LENGTH:
        d[1].len = 0xfffffe00u;
        break;
    case LOOPED_CHAIN:
        d[1].next = 0; /* 0 -> 1 -> 0 -> ... */
        status_reachable = false;
        break;
    case NEXT_OUT_OF_RANGE:
        d[1].next = 0x7fff;
        status_reachable = false;
        break;
    case SHORT_HEADER:
        d[0].len = 4;
        break;
    case HEAD_OUT_OF_RANGE:
        head = (uint16_t)(vd.q[0].size + 5);
        status_reachable = false;
        break;
    case NR_ABUSES:
        return;
    }
    post_raw(d, 3, head);
    tap_check(refused(abuse_name[a], status_reachable, lenient), "%s: %s", abuse_name[a],
              lenient ? "completed or flagged" : "refused");
    tap_check(recovers(), "%s: device works again after a reset", abuse_name[a]);
}

void guest_main(void)
{
    uint64_t ramend = cmdline_u64("ramend", 64ULL << 20);
    tap_plan(1 + 2 * NR_ABUSES);
    if (!tap_check(virtio_find(VIRTIO_ID_BLOCK, 0, &vd) && recovers(),
                   "virtio-blk found, initialized, sector 0 readable"))
        tap_bail("no usable virtio-blk device");
    for (unsigned a = 0; a < NR_ABUSES; a++)
        try_abuse((enum abuse)a, ramend);
}
