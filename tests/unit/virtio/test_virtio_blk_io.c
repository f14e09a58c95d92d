/* virtio-blk on the real block layer (raw file, asynchronous completions
 * on a real event loop): reads, writes and flush reach the file and come
 * back through the used ring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "core/evloop.h"
#include "core/util.h"
#include "hw/virtio/virtio_devices.h"
#include "vtest.h"

#define DISK (256 * 1024)
#define NREQ 6

struct io_fixture {
    struct vtest t;
    struct vt_ring r;
    struct evloop *loop;
    struct evtimer *timer;
    unsigned ticks;
};

/* Poll the used ring from a timer: stop once every request is back (or
 * after ~10 s of ticks, which fails the test below). */
static void on_tick(void *opaque)
{
    struct io_fixture *f = opaque;
    if (vt_used_idx(&f->t, &f->r) >= NREQ || ++f->ticks > 10000)
        evloop_stop(f->loop, 0);
}

static void test_raw_file_async(void **state)
{
    struct io_fixture f = {0};
    char path[] = "/tmp/ember-virtio-blk-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t *pattern = malloc(DISK);
    for (int i = 0; i < DISK; i++)
        pattern[i] = (uint8_t)(i ^ (i >> 9));
    assert_int_equal(write_full(fd, pattern, DISK), 0);
    close(fd);

    f.loop = evloop_new();
    struct block_dev *bd;
    struct block_open_opts opts = {.format = "raw", .loop = f.loop, .what = path};
    assert_int_equal(block_open(path, &opts, &bd), 0);

    vt_init(&f.t);
    f.t.env.loop = f.loop;
    vt_attach(&f.t, virtio_blk_new(&f.t.env, bd, "io", NULL, 1, false));
    assert_true(vt_negotiate(&f.t, vt_device_features(&f.t)) & VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(&f.t, &f.r, 0, 32);
    vt_driver_ok(&f.t);

    /* NREQ requests in flight together: reads of sectors 0..3 (two
     * buffers each), a write of sector 100, a flush. */
    uint64_t data[NREQ], status[NREQ];
    for (uint16_t i = 0; i < NREQ; i++) {
        uint64_t hdr = vt_alloc(&f.t, 16, 16);
        data[i] = vt_alloc(&f.t, 512, 512);
        status[i] = vt_alloc(&f.t, 1, 1);
        uint32_t type = i < 4 ? 0 : i == 4 ? 1 : 4;
        uint64_t sector = i < 4 ? i : 100;
        st32(vt_gptr(&f.t, hdr), type);
        st64((uint8_t *)vt_gptr(&f.t, hdr) + 8, sector);
        *(uint8_t *)vt_gptr(&f.t, status[i]) = 0xee;
        if (type == 1)
            memset(vt_gptr(&f.t, data[i]), 0xc3, 512);
        uint16_t d = (uint16_t)(4 * i);
        vt_set_desc(&f.t, &f.r, d, hdr, 16, VIRTQ_DESC_F_NEXT, d + 1);
        if (type == 4) {
            vt_set_desc(&f.t, &f.r, d + 1, status[i], 1, VIRTQ_DESC_F_WRITE, 0);
        } else {
            uint16_t w = type == 0 ? VIRTQ_DESC_F_WRITE : 0;
            vt_set_desc(&f.t, &f.r, d + 1, data[i], 100, VIRTQ_DESC_F_NEXT | w, d + 2);
            vt_set_desc(&f.t, &f.r, d + 2, data[i] + 100, 412, VIRTQ_DESC_F_NEXT | w, d + 3);
            vt_set_desc(&f.t, &f.r, d + 3, status[i], 1, VIRTQ_DESC_F_WRITE, 0);
        }
        vt_publish(&f.t, &f.r, d);
    }
    vt_notify(&f.t, 0);
    assert_int_equal(vt_used_idx(&f.t, &f.r), 0); /* the loop has not run yet */

    f.timer = evtimer_new(f.loop, on_tick, &f);
    evtimer_arm(f.timer, 1000000, 1000000);
    evloop_run(f.loop);
    evtimer_free(f.timer);

    assert_int_equal(vt_used_idx(&f.t, &f.r), NREQ);
    for (int i = 0; i < NREQ; i++)
        assert_int_equal(*(uint8_t *)vt_gptr(&f.t, status[i]), 0);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(vt_gptr(&f.t, data[i]), pattern + 512 * i, 512);
    uint8_t back[512];
    assert_int_equal(block_pread(bd, 100 * 512, back, 512), 0);
    for (int i = 0; i < 512; i++)
        assert_int_equal(back[i], 0xc3);

    vt_fini(&f.t);
    block_close(bd);
    evloop_free(f.loop);
    unlink(path);
    free(pattern);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_file_async),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
