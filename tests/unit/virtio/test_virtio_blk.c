/* virtio-blk request handling against a memory-backed fake block device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/util.h"
#include "hw/virtio/virtio_devices.h"
#include "fake_block.h"
#include "vtest.h"

#define DISK_SIZE (64 * 1024ULL)
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define F_RO 5
#define F_FLUSH 9
#define F_MQ 12
#define F_DISCARD 13
#define F_WRITE_ZEROES 14

struct blk_fixture {
    struct vtest t;
    struct block_dev *bd;
    struct vt_ring r;
    uint64_t hdr, data, status;
};

static void blk_up(struct blk_fixture *f, bool readonly, unsigned nq, const char *serial)
{
    vt_init(&f->t);
    f->bd = fake_block_new(DISK_SIZE, false);
    for (uint64_t i = 0; i < DISK_SIZE; i++)
        f->bd->data[i] = (uint8_t)(i * 7 + i / 512);
    struct virtio_dev *v = virtio_blk_new(&f->t.env, f->bd, "hd0", serial, nq, readonly);
    assert_non_null(v);
    vt_attach(&f->t, v);
    assert_true(vt_negotiate(&f->t, vt_device_features(&f->t)) & VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(&f->t, &f->r, 0, 16);
    vt_driver_ok(&f->t);
    f->hdr = vt_alloc(&f->t, 16, 16);
    f->data = vt_alloc(&f->t, 8192, 512);
    f->status = vt_alloc(&f->t, 1, 1);
}

static void blk_down(struct blk_fixture *f)
{
    vt_fini(&f->t);
    fake_block_free(f->bd);
}

static void put_header(struct blk_fixture *f, uint32_t type, uint64_t sector)
{
    uint8_t *h = vt_gptr(&f->t, f->hdr);
    st32(h, type);
    st32(h + 4, 0);
    st64(h + 8, sector);
}

/* header, one data buffer (writable for reads), status; returns the status
 * byte and the used length. */
static uint8_t run_req(struct blk_fixture *f, uint32_t type, uint64_t sector, uint32_t data_len,
                       bool data_writable, uint32_t *used_len)
{
    uint16_t used_before = vt_used_idx(&f->t, &f->r);
    uint16_t d = (uint16_t)(f->r.avail_idx * 3 % 15); /* vary the descriptors used */
    put_header(f, type, sector);
    *(uint8_t *)vt_gptr(&f->t, f->status) = 0xee;
    vt_set_desc(&f->t, &f->r, d, f->hdr, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
    if (data_len) {
        vt_set_desc(&f->t, &f->r, (uint16_t)(d + 1), f->data, data_len,
                    VIRTQ_DESC_F_NEXT | (data_writable ? VIRTQ_DESC_F_WRITE : 0),
                    (uint16_t)(d + 2));
        vt_set_desc(&f->t, &f->r, (uint16_t)(d + 2), f->status, 1, VIRTQ_DESC_F_WRITE, 0);
    } else {
        vt_set_desc(&f->t, &f->r, (uint16_t)(d + 1), f->status, 1, VIRTQ_DESC_F_WRITE, 0);
    }
    vt_publish(&f->t, &f->r, d);
    vt_notify(&f->t, 0);
    fake_block_complete_all(f->bd);
    assert_int_equal(vt_used_idx(&f->t, &f->r), (uint16_t)(used_before + 1));
    uint32_t id;
    vt_used_elem(&f->t, &f->r, used_before, &id, used_len);
    assert_int_equal(id, d);
    return *(uint8_t *)vt_gptr(&f->t, f->status);
}

static void test_config_and_features(void **state)
{
    struct blk_fixture f;
    blk_up(&f, false, 1, NULL);
    uint64_t feat = vt_device_features(&f.t);
    assert_true(feat & (1ULL << F_FLUSH));
    assert_true(feat & (1ULL << F_DISCARD));
    assert_true(feat & (1ULL << F_WRITE_ZEROES));
    assert_false(feat & (1ULL << F_RO));
    assert_false(feat & (1ULL << F_MQ));
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 0, 8), DISK_SIZE / 512);
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 0, 4), DISK_SIZE / 512);
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 20, 4), 512); /* blk_size */
    assert_true(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 12, 4) >= 1);      /* seg_max */
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 40, 4), 1);   /* max_discard_seg */
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 200, 4), 0);  /* past the end */
    assert_int_equal(f.t.pdev->id.device, 0x1042);
    blk_down(&f);
}

static void test_mq_and_readonly_features(void **state)
{
    struct blk_fixture f;
    blk_up(&f, true, 4, NULL);
    uint64_t feat = vt_device_features(&f.t);
    assert_true(feat & (1ULL << F_RO));
    assert_true(feat & (1ULL << F_MQ));
    assert_false(feat & (1ULL << F_DISCARD));
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_COMMON_NUMQ, 2), 4);
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 34, 2), 4);
    assert_int_equal(f.t.pdev->msix_vectors, 5);
    blk_down(&f);
}

static void test_read_write(void **state)
{
    struct blk_fixture f;
    uint32_t len;
    blk_up(&f, false, 1, NULL);
    assert_int_equal(run_req(&f, T_IN, 3, 1024, true, &len), S_OK);
    assert_int_equal(len, 1025);
    assert_memory_equal(vt_gptr(&f.t, f.data), f.bd->data + 3 * 512, 1024);

    memset(vt_gptr(&f.t, f.data), 0xab, 2048);
    assert_int_equal(run_req(&f, T_OUT, 10, 2048, false, &len), S_OK);
    assert_int_equal(len, 1);
    for (int i = 0; i < 2048; i++)
        assert_int_equal(f.bd->data[10 * 512 + i], 0xab);
    /* The last sector exactly. */
    assert_int_equal(run_req(&f, T_IN, DISK_SIZE / 512 - 1, 512, true, &len), S_OK);
    blk_down(&f);
}

static void test_split_header(void **state)
{
    struct blk_fixture f;
    blk_up(&f, false, 1, NULL);
    /* Header in two pieces, data in two pieces, status alone. */
    put_header(&f, T_IN, 2);
    vt_set_desc(&f.t, &f.r, 0, f.hdr, 5, VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&f.t, &f.r, 1, f.hdr + 5, 11, VIRTQ_DESC_F_NEXT, 2);
    vt_set_desc(&f.t, &f.r, 2, f.data, 100, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
    vt_set_desc(&f.t, &f.r, 3, f.data + 100, 412, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 4);
    vt_set_desc(&f.t, &f.r, 4, f.status, 1, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.r, 0);
    vt_notify(&f.t, 0);
    assert_int_equal(vt_used_idx(&f.t, &f.r), 1);
    assert_int_equal(*(uint8_t *)vt_gptr(&f.t, f.status), S_OK);
    assert_memory_equal(vt_gptr(&f.t, f.data), f.bd->data + 2 * 512, 512);
    blk_down(&f);
}

static void test_bad_requests(void **state)
{
    struct blk_fixture f;
    uint32_t len;
    blk_up(&f, false, 1, NULL);
    uint64_t last = DISK_SIZE / 512;
    assert_int_equal(run_req(&f, T_IN, last, 512, true, &len), S_IOERR);      /* past the end */
    assert_int_equal(run_req(&f, T_IN, last - 1, 1024, true, &len), S_IOERR); /* straddles it */
    assert_int_equal(run_req(&f, T_IN, UINT64_MAX, 512, true, &len), S_IOERR);
    assert_int_equal(run_req(&f, T_IN, UINT64_MAX / 512 + 1, 512, true, &len), S_IOERR);
    assert_int_equal(run_req(&f, T_OUT, 0, 100, false, &len), S_IOERR);       /* partial sector */
    assert_int_equal(run_req(&f, 77, 0, 512, true, &len), S_UNSUPP);
    assert_int_equal(len, 1);
    assert_int_equal(f.bd->submits, 0);
    assert_int_equal(vt_status(&f.t) & VIRTIO_STATUS_NEEDS_RESET, 0);
    blk_down(&f);
}

static void test_readonly(void **state)
{
    struct blk_fixture f;
    uint32_t len;
    blk_up(&f, true, 1, NULL);
    uint8_t before = f.bd->data[0];
    memset(vt_gptr(&f.t, f.data), 0x11, 512);
    assert_int_equal(run_req(&f, T_OUT, 0, 512, false, &len), S_IOERR);
    assert_int_equal(f.bd->data[0], before);
    assert_int_equal(run_req(&f, T_IN, 0, 512, true, &len), S_OK);
    blk_down(&f);
}

static void test_flush_get_id(void **state)
{
    struct blk_fixture f;
    uint32_t len;
    blk_up(&f, false, 1, "SERIAL-0123456789-ABCDEF");
    assert_int_equal(run_req(&f, T_FLUSH, 0, 0, false, &len), S_OK);
    assert_int_equal(f.bd->flushes, 1);
    assert_int_equal(run_req(&f, T_GET_ID, 0, 20, true, &len), S_OK);
    assert_int_equal(len, 21);
    assert_memory_equal(vt_gptr(&f.t, f.data), "SERIAL-0123456789-AB", 20);
    blk_down(&f);
}

static uint8_t run_discard(struct blk_fixture *f, uint32_t type, uint64_t sector, uint32_t n,
                           uint32_t flags, unsigned nseg)
{
    uint8_t *seg = vt_gptr(&f->t, f->data);
    for (unsigned i = 0; i < nseg; i++) {
        st64(seg + 16 * i, sector);
        st32(seg + 16 * i + 8, n);
        st32(seg + 16 * i + 12, flags);
    }
    uint32_t len;
    return run_req(f, type, 0, 16 * nseg, false, &len);
}

static void test_discard_write_zeroes(void **state)
{
    struct blk_fixture f;
    blk_up(&f, false, 1, NULL);
    assert_int_equal(run_discard(&f, T_WRITE_ZEROES, 4, 2, 1, 1), S_OK);
    assert_int_equal(f.bd->write_zeroes, 1);
    for (int i = 0; i < 1024; i++)
        assert_int_equal(f.bd->data[4 * 512 + i], 0);
    assert_int_equal(run_discard(&f, T_DISCARD, 8, 1, 0, 1), S_OK);
    assert_int_equal(f.bd->discards, 1);
    assert_int_equal(run_discard(&f, T_DISCARD, 8, 1, 1, 1), S_UNSUPP);     /* unmap on discard */
    assert_int_equal(run_discard(&f, T_WRITE_ZEROES, 8, 1, 6, 1), S_UNSUPP); /* reserved flags */
    assert_int_equal(run_discard(&f, T_DISCARD, DISK_SIZE / 512, 1, 0, 1), S_IOERR);
    assert_int_equal(run_discard(&f, T_DISCARD, 0, 0xffffffff, 0, 1), S_IOERR);
    assert_int_equal(run_discard(&f, T_DISCARD, 0, 1, 0, 2), S_IOERR); /* one segment only */
    blk_down(&f);
}

static void test_malformed_needs_reset(void **state)
{
    struct blk_fixture f;
    blk_up(&f, false, 1, NULL);
    /* A header but no writable status byte. */
    put_header(&f, T_IN, 0);
    vt_set_desc(&f.t, &f.r, 0, f.hdr, 16, 0, 0);
    vt_publish(&f.t, &f.r, 0);
    vt_notify(&f.t, 0);
    assert_true(vt_status(&f.t) & VIRTIO_STATUS_NEEDS_RESET);
    assert_int_equal(vt_used_idx(&f.t, &f.r), 0);
    blk_down(&f);
}

static void test_async_and_reset_in_flight(void **state)
{
    struct blk_fixture f;
    blk_up(&f, false, 1, NULL);
    f.bd->deferred = true;
    /* Two reads in flight. */
    for (uint16_t i = 0; i < 2; i++) {
        uint64_t h = vt_alloc(&f.t, 16, 16), st = vt_alloc(&f.t, 1, 1);
        st32(vt_gptr(&f.t, h), T_IN);
        st64((uint8_t *)vt_gptr(&f.t, h) + 8, i);
        vt_set_desc(&f.t, &f.r, 3 * i, h, 16, VIRTQ_DESC_F_NEXT, 3 * i + 1);
        vt_set_desc(&f.t, &f.r, 3 * i + 1, f.data + 512 * i, 512,
                    VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3 * i + 2);
        vt_set_desc(&f.t, &f.r, 3 * i + 2, st, 1, VIRTQ_DESC_F_WRITE, 0);
        vt_publish(&f.t, &f.r, 3 * i);
    }
    vt_notify(&f.t, 0);
    assert_int_equal(f.bd->npending, 2);
    assert_int_equal(vt_used_idx(&f.t, &f.r), 0);
    unsigned raises = f.t.pdev->intx_raises;
    fake_block_complete_all(f.bd);
    assert_int_equal(vt_used_idx(&f.t, &f.r), 2);
    assert_true(f.t.pdev->intx_raises > raises);

    /* Another one in flight, then the driver resets the device. */
    vt_publish(&f.t, &f.r, 0);
    vt_notify(&f.t, 0);
    assert_int_equal(f.bd->npending, 1);
    vt_write(&f.t, VIRTIO_PCI_COMMON_STATUS, 0, 1);
    memset(vt_gptr(&f.t, f.r.used), 0, 6 + 8 * 16);
    fake_block_complete_all(f.bd); /* stale: must not touch the rings */
    assert_int_equal(vt_used_idx(&f.t, &f.r), 0);
    blk_down(&f);
}

static void test_multiqueue(void **state)
{
    struct blk_fixture f;
    struct vt_ring r2;
    blk_up(&f, false, 3, NULL);
    vt_write(&f.t, VIRTIO_PCI_COMMON_STATUS, 0, 1);
    assert_true(vt_negotiate(&f.t, vt_device_features(&f.t)) & VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(&f.t, &r2, 2, 8);
    vt_driver_ok(&f.t);
    put_header(&f, T_IN, 1);
    vt_set_desc(&f.t, &r2, 0, f.hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&f.t, &r2, 1, f.data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    vt_set_desc(&f.t, &r2, 2, f.status, 1, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &r2, 0);
    vt_notify(&f.t, 2);
    assert_int_equal(vt_used_idx(&f.t, &r2), 1);
    assert_int_equal(*(uint8_t *)vt_gptr(&f.t, f.status), S_OK);
    blk_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_features),
        cmocka_unit_test(test_mq_and_readonly_features),
        cmocka_unit_test(test_read_write),
        cmocka_unit_test(test_split_header),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_flush_get_id),
        cmocka_unit_test(test_discard_write_zeroes),
        cmocka_unit_test(test_malformed_needs_reset),
        cmocka_unit_test(test_async_and_reset_in_flight),
        cmocka_unit_test(test_multiqueue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
