/* virtio-console: guest output reaches the chardev, chardev input fills
 * receive buffers with flow control, emergency writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/util.h"
#include "hw/virtio/virtio_devices.h"
#include "fake_chardev.h"
#include "vtest.h"

struct con_fixture {
    struct vtest t;
    struct chardev chr;
    struct vt_ring rx, tx;
};

static void con_up(struct con_fixture *f)
{
    memset(&f->chr, 0, sizeof(f->chr));
    vt_init(&f->t);
    struct virtio_dev *v = virtio_console_new(&f->t.env, &f->chr);
    assert_non_null(v);
    vt_attach(&f->t, v);
    assert_true(f->chr.attached);
    assert_true(vt_negotiate(&f->t, vt_device_features(&f->t)) & VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(&f->t, &f->rx, 0, 8);
    vt_ring_init(&f->t, &f->tx, 1, 8);
}

static void con_down(struct con_fixture *f)
{
    vt_fini(&f->t);
    assert_false(f->chr.attached);
}

static void test_output(void **state)
{
    struct con_fixture f;
    con_up(&f);
    vt_driver_ok(&f.t);
    uint64_t a = vt_alloc(&f.t, 16, 1), b = vt_alloc(&f.t, 16, 1);
    memcpy(vt_gptr(&f.t, a), "hello, ", 7);
    memcpy(vt_gptr(&f.t, b), "world\n", 6);
    vt_set_desc(&f.t, &f.tx, 0, a, 7, VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&f.t, &f.tx, 1, b, 6, 0, 0);
    vt_publish(&f.t, &f.tx, 0);
    vt_notify(&f.t, 1);
    assert_int_equal(f.chr.out_len, 13);
    assert_memory_equal(f.chr.out, "hello, world\n", 13);
    assert_int_equal(vt_used_idx(&f.t, &f.tx), 1);
    con_down(&f);
}

static void post_rx(struct con_fixture *f, uint16_t d, uint64_t buf, uint32_t len)
{
    vt_set_desc(&f->t, &f->rx, d, buf, len, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f->t, &f->rx, d);
    vt_notify(&f->t, 0);
}

static void test_input_flow_control(void **state)
{
    struct con_fixture f;
    con_up(&f);
    vt_driver_ok(&f.t);
    /* No receive buffers yet: input waits in the chardev. */
    fake_chardev_input(&f.chr, "abcdef", 6);
    assert_int_equal(f.chr.in_len, 6);
    /* A 4-byte buffer arrives: the kick lets input flow, 4 bytes fit. */
    uint64_t b1 = vt_alloc(&f.t, 4, 1), b2 = vt_alloc(&f.t, 64, 1);
    post_rx(&f, 0, b1, 4);
    assert_true(f.chr.accept_calls >= 1);
    assert_int_equal(f.chr.in_len, 2);
    uint32_t id, len;
    assert_int_equal(vt_used_idx(&f.t, &f.rx), 1);
    vt_used_elem(&f.t, &f.rx, 0, &id, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(vt_gptr(&f.t, b1), "abcd", 4);
    /* The rest goes into the next buffer. */
    post_rx(&f, 1, b2, 64);
    assert_int_equal(f.chr.in_len, 0);
    vt_used_elem(&f.t, &f.rx, 1, &id, &len);
    assert_int_equal(id, 1);
    assert_int_equal(len, 2);
    assert_memory_equal(vt_gptr(&f.t, b2), "ef", 2);
    con_down(&f);
}

static void test_input_before_driver_ok(void **state)
{
    struct con_fixture f;
    con_up(&f);
    uint64_t b = vt_alloc(&f.t, 16, 1);
    post_rx(&f, 0, b, 16);
    fake_chardev_input(&f.chr, "xy", 2);
    assert_int_equal(f.chr.in_len, 2); /* not running yet */
    vt_driver_ok(&f.t);
    chardev_accept_input(&f.chr);
    assert_int_equal(f.chr.in_len, 0);
    assert_memory_equal(vt_gptr(&f.t, b), "xy", 2);
    con_down(&f);
}

static void test_reset_drops_held_buffer(void **state)
{
    struct con_fixture f;
    con_up(&f);
    vt_driver_ok(&f.t);
    uint64_t b = vt_alloc(&f.t, 16, 1);
    post_rx(&f, 0, b, 16);
    /* can_receive pops and holds the buffer. */
    assert_int_equal(f.chr.fe.can_receive(f.chr.fe.opaque), 16);
    vt_write(&f.t, VIRTIO_PCI_COMMON_STATUS, 0, 1);
    assert_int_equal(f.chr.fe.can_receive(f.chr.fe.opaque), 0);
    fake_chardev_input(&f.chr, "z", 1);
    assert_int_equal(f.chr.in_len, 1);
    con_down(&f);
}

static void test_emergency_write(void **state)
{
    struct con_fixture f;
    con_up(&f);
    vt_write(&f.t, VIRTIO_PCI_DEVICE_OFF + 8, '!', 4);
    assert_int_equal(f.chr.out_len, 1);
    assert_int_equal(f.chr.out[0], '!');
    assert_int_equal(vt_read(&f.t, VIRTIO_PCI_DEVICE_OFF + 4, 4), 1); /* max_nr_ports */
    con_down(&f);
}

static void test_hostile_rx_chain(void **state)
{
    struct con_fixture f;
    con_up(&f);
    vt_driver_ok(&f.t);
    vt_set_desc(&f.t, &f.rx, 0, VT_RAM_BASE + VT_RAM_SIZE, 16, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.rx, 0);
    fake_chardev_input(&f.chr, "q", 1);
    assert_true(vt_status(&f.t) & VIRTIO_STATUS_NEEDS_RESET);
    assert_int_equal(f.chr.in_len, 1);
    con_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output),
        cmocka_unit_test(test_input_flow_control),
        cmocka_unit_test(test_input_before_driver_ok),
        cmocka_unit_test(test_reset_drops_held_buffer),
        cmocka_unit_test(test_emergency_write),
        cmocka_unit_test(test_hostile_rx_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
