/* virtio-blk: the capacity the harness made, its patterned sectors read
 * back, a write of "guest wrote N" sectors then a flush (the harness checks
 * the image file afterwards), a read past the end refused with IOERR,
 * GET_ID returning serial=, several requests in flight at once, and enough
 * requests to wrap the rings. */
#include "guest.h"

#define VIRTIO_BLK_F_FLUSH (1ULL << 9)
#define VIRTIO_BLK_F_MQ (1ULL << 12)
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define MAX_SECTORS 16
#define TIMEOUT_US 10000000

struct blk_req_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

static struct blk_req_hdr hdr;
static volatile uint8_t status;
static uint8_t data[MAX_SECTORS * 512] __attribute__((aligned(4096)));
static struct virtio_dev vd;

#define BATCH 4
static struct blk_req_hdr batch_hdr[BATCH];
static volatile uint8_t batch_status[BATCH];
static uint8_t batch_data[BATCH][512] __attribute__((aligned(512)));

/* Returns the status byte, or -1 if the device never completed. */
static int blk_request_q(unsigned qi, uint32_t type, uint64_t sector, unsigned count)
{
    hdr = (struct blk_req_hdr){ .type = type, .sector = sector };
    status = 0xff;
    struct virtq_desc chain[3] = {
        { .addr = (uintptr_t)&hdr, .len = sizeof(hdr) },
        { .addr = (uintptr_t)data, .len = count * 512,
          .flags = type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE },
        { .addr = (uintptr_t)&status, .len = 1, .flags = VIRTQ_DESC_F_WRITE },
    };
    if (count == 0) {
        chain[1] = chain[2];
        return virtio_transfer_q(&vd, qi, chain, 2, TIMEOUT_US) < 0 ? -1 : status;
    }
    return virtio_transfer_q(&vd, qi, chain, 3, TIMEOUT_US) < 0 ? -1 : status;
}

static int blk_request(uint32_t type, uint64_t sector, unsigned count)
{
    return blk_request_q(0, type, sector, count);
}

/* The harness's sector pattern: 16 records "TAG N" padded to 31, "\n". */
static void fill_sector(uint8_t *buf, const char *tag, uint64_t s)
{
    char rec[40];
    int n = snprintf(rec, sizeof(rec), "%s %lu", tag, s);
    for (int i = n; i < 31; i++)
        rec[i] = ' ';
    rec[31] = '\n';
    for (unsigned r = 0; r < 16; r++)
        memcpy(buf + 32 * r, rec, 32);
}

static bool sectors_match(const char *tag, uint64_t first, unsigned count)
{
    uint8_t want[512];
    for (unsigned i = 0; i < count; i++) {
        fill_sector(want, tag, first + i);
        if (memcmp(want, data + 512 * i, 512)) {
            tap_diag("sector %lu differs: starts \"%.20s\"", first + i, (const char *)data + 512 * i);
            return false;
        }
    }
    return true;
}

/* BATCH reads (sectors 1, 3, 5, ...) posted together, one notify; the
 * completions may come in any order. */
static bool batch_read(void)
{
    int heads[BATCH];
    for (unsigned i = 0; i < BATCH; i++) {
        batch_hdr[i] = (struct blk_req_hdr){ .type = VIRTIO_BLK_T_IN, .sector = 1 + 2 * i };
        batch_status[i] = 0xff;
        memset(batch_data[i], 0, 512);
        struct virtq_desc chain[3] = {
            { .addr = (uintptr_t)&batch_hdr[i], .len = sizeof(batch_hdr[i]) },
            { .addr = (uintptr_t)batch_data[i], .len = 512, .flags = VIRTQ_DESC_F_WRITE },
            { .addr = (uintptr_t)&batch_status[i], .len = 1, .flags = VIRTQ_DESC_F_WRITE },
        };
        heads[i] = virtq_add(&vd, 0, chain, 3);
    }
    virtq_kick(&vd, 0);
    unsigned done = 0;
    bool ok = true;
    for (unsigned n = 0; n < BATCH; n++) {
        uint32_t id, len;
        if (!virtq_get_used(&vd, 0, &id, &len, TIMEOUT_US)) {
            tap_diag("only %u of %u batched requests completed", n, BATCH);
            return false;
        }
        unsigned i;
        for (i = 0; i < BATCH && heads[i] != (int)id; i++)
            ;
        if (i == BATCH || (done & (1u << i))) {
            tap_diag("used id %u is not an outstanding head", id);
            return false;
        }
        done |= 1u << i;
        uint8_t want[512];
        fill_sector(want, "ember sector", 1 + 2 * i);
        if (batch_status[i] != VIRTIO_BLK_S_OK || memcmp(want, batch_data[i], 512)) {
            tap_diag("batched read of sector %u: status %u, data %s", 1 + 2 * i, batch_status[i],
                     memcmp(want, batch_data[i], 512) ? "wrong" : "right");
            ok = false;
        }
    }
    return ok;
}

void guest_main(void)
{
    uint64_t sectors = cmdline_u64("sectors", 2048);
    uint64_t wfirst = cmdline_u64("wfirst", 40);
    unsigned wcount = (unsigned)cmdline_u64("wcount", 4);
    if (wcount > MAX_SECTORS)
        wcount = MAX_SECTORS;

    unsigned mq = (unsigned)cmdline_u64("mq", 1);
    if (mq > VIRTIO_MAX_QUEUES)
        mq = VIRTIO_MAX_QUEUES;

    tap_plan(12);
    bool found = virtio_find(VIRTIO_ID_BLOCK, 0, &vd);
    vd.nr_queues = mq;
    if (!tap_check(found && virtio_setup(&vd, VIRTIO_BLK_F_FLUSH |
                                                  (mq > 1 ? VIRTIO_BLK_F_MQ : 0)),
                   "virtio-blk found and initialized (%u queues)", mq))
        tap_bail("no usable virtio-blk device");
    uint64_t cap = (uint64_t)mmio_read32(vd.device) | (uint64_t)mmio_read32(vd.device + 4) << 32;
    tap_check(cap == sectors, "capacity is %lu sectors (expected %lu)", cap, sectors);

    memset(data, 0, sizeof(data));
    int st = blk_request(VIRTIO_BLK_T_IN, 0, 16);
    tap_check(st == VIRTIO_BLK_S_OK && sectors_match("ember sector", 0, 16),
              "read sectors 0-15: the harness's pattern (status %d)", st);
    st = blk_request(VIRTIO_BLK_T_IN, sectors - 1, 1);
    tap_check(st == VIRTIO_BLK_S_OK && sectors_match("ember sector", sectors - 1, 1),
              "read the last sector (status %d)", st);

    for (unsigned i = 0; i < wcount; i++)
        fill_sector(data + 512 * i, "guest wrote", wfirst + i);
    st = blk_request(VIRTIO_BLK_T_OUT, wfirst, wcount);
    tap_check(st == VIRTIO_BLK_S_OK, "write sectors %lu-%lu (status %d)", wfirst,
              wfirst + wcount - 1, st);
    if (vd.features & VIRTIO_BLK_F_FLUSH) {
        st = blk_request(VIRTIO_BLK_T_FLUSH, 0, 0);
        tap_check(st == VIRTIO_BLK_S_OK, "flush (status %d)", st);
    } else {
        tap_check(false, "device does not offer VIRTIO_BLK_F_FLUSH");
    }
    memset(data, 0, sizeof(data));
    st = blk_request(VIRTIO_BLK_T_IN, wfirst, wcount);
    tap_check(st == VIRTIO_BLK_S_OK && sectors_match("guest wrote", wfirst, wcount),
              "written sectors read back (status %d)", st);
    st = blk_request(VIRTIO_BLK_T_IN, sectors, 1);
    tap_check(st == VIRTIO_BLK_S_IOERR, "read past the end fails with IOERR (status %d)", st);

    char serial[24];
    if (cmdline_get("serial", serial, sizeof(serial))) {
        memset(data, 0, 512);
        st = blk_request(VIRTIO_BLK_T_GET_ID, 0, 1);
        data[20] = 0; /* 20 bytes, NUL-terminated only when shorter */
        tap_check(st == VIRTIO_BLK_S_OK && !strncmp((char *)data, serial, sizeof(serial)),
                  "GET_ID returns the serial \"%s\" (status %d, got \"%s\")", serial, st,
                  (char *)data);
    } else {
        tap_skip("no serial= on the command line", "GET_ID");
    }

    tap_check(batch_read(), "%u reads in flight at once complete with the right data", BATCH);

    bool wrap_ok = true;
    unsigned i;
    for (i = 0; i < 3u * vd.q[0].size && wrap_ok; i++) {
        uint64_t s = i % 16; /* sectors the guest never writes */
        st = blk_request(VIRTIO_BLK_T_IN, s, 1);
        wrap_ok = st == VIRTIO_BLK_S_OK && sectors_match("ember sector", s, 1);
    }
    if (mq > 1) {
        uint16_t nq = mmio_read16(vd.device + 34);
        memset(data, 0, 512);
        st = blk_request_q(1, VIRTIO_BLK_T_IN, 3, 1);
        tap_check((vd.features & VIRTIO_BLK_F_MQ) && nq >= mq && st == VIRTIO_BLK_S_OK &&
                      sectors_match("ember sector", 3, 1),
                  "read on request queue 1 (F_MQ %s, num_queues %u, status %d)",
                  (vd.features & VIRTIO_BLK_F_MQ) ? "on" : "off", nq, st);
    } else {
        tap_skip("mq=N not given", "read on request queue 1");
    }
    tap_check(wrap_ok, "%u requests in a row wrap the rings (queue size %u, stopped at %u)",
              3u * vd.q[0].size, vd.q[0].size, i);
}
