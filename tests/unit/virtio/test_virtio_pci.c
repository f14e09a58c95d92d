/* The virtio PCI transport: identity and capability layout, feature
 * negotiation, the status machine, interrupts (INTx + ISR, MSI-X), the
 * PCI_CFG window, DEVICE_NEEDS_RESET on hostile input; virtio-rng on top. */
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

static void rng_setup(struct vtest *t)
{
    vt_init(t);
    struct virtio_dev *v = virtio_rng_new(&t->env);
    assert_non_null(v);
    vt_attach(t, v);
}

struct vcap {
    unsigned off;
    uint8_t len, type, bar;
    uint32_t offset, length, extra;
};

/* Find the vendor capability of the given type; false if absent. */
static bool find_vcap(struct pci_device *d, uint8_t type, struct vcap *out)
{
    unsigned off = d->config[0x34], guard = 0;
    while (off && guard++ < 48) {
        assert_true(off >= 0x40 && off < 256);
        const uint8_t *c = d->config + off;
        if (c[0] == 0x09 && c[3] == type) {
            *out = (struct vcap){off, c[2], c[3], c[4], ld32(c + 8), ld32(c + 12),
                                 c[2] >= 20 ? ld32(c + 16) : 0};
            return true;
        }
        off = c[1];
    }
    return false;
}

static void test_identity_and_caps(void **state)
{
    struct vtest t;
    rng_setup(&t);
    struct pci_device *d = t.pdev;
    assert_int_equal(d->id.vendor, 0x1af4);
    assert_int_equal(d->id.device, 0x1044); /* 0x1040 + entropy (4) */
    assert_true(d->id.revision >= 1);
    assert_true(d->id.subsystem >= 0x40);
    /* BAR 4: 64-bit memory, big enough for every structure. */
    assert_true(d->bars[VIRTIO_PCI_BAR].present);
    assert_int_equal(d->bars[VIRTIO_PCI_BAR].kind, PCI_BAR_MEM64);
    uint64_t bar_size = d->bars[VIRTIO_PCI_BAR].size;

    struct vcap c = {0};
    assert_true(find_vcap(d, VIRTIO_PCI_CAP_COMMON_CFG, &c));
    assert_int_equal(c.bar, VIRTIO_PCI_BAR);
    assert_int_equal(c.len, 16);
    assert_true(c.length >= 0x38);
    assert_true(c.offset + c.length <= bar_size);
    assert_true(IS_ALIGNED(c.offset, 4));

    assert_true(find_vcap(d, VIRTIO_PCI_CAP_ISR_CFG, &c));
    assert_int_equal(c.bar, VIRTIO_PCI_BAR);
    assert_true(c.length >= 1 && c.offset + c.length <= bar_size);

    assert_true(find_vcap(d, VIRTIO_PCI_CAP_NOTIFY_CFG, &c));
    assert_int_equal(c.bar, VIRTIO_PCI_BAR);
    assert_int_equal(c.len, 20);
    assert_int_equal(c.extra, 4); /* notify_off_multiplier: one address per queue */
    assert_true(IS_ALIGNED(c.offset, 2));
    /* Every queue's notify address (queue_notify_off * multiplier) is inside. */
    unsigned nq = (unsigned)vt_read(&t, VIRTIO_PCI_COMMON_NUMQ, 2);
    assert_int_equal(nq, 1);
    for (unsigned q = 0; q < nq; q++) {
        vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
        uint32_t noff = (uint32_t)vt_read(&t, VIRTIO_PCI_COMMON_Q_NOFF, 2);
        assert_true(noff * c.extra + 2 <= c.length);
    }
    assert_true(c.offset + c.length <= bar_size);

    /* Entropy has no device configuration. */
    assert_false(find_vcap(d, VIRTIO_PCI_CAP_DEVICE_CFG, &c));

    assert_true(find_vcap(d, VIRTIO_PCI_CAP_PCI_CFG, &c));
    assert_int_equal(c.len, 20);

    /* MSI-X: queues + 1 vectors. */
    assert_int_equal(d->msix_vectors, 2);
    vt_fini(&t);
}

static void test_device_cfg_cap_console(void **state)
{
    struct vtest t;
    struct chardev chr = {0};
    vt_init(&t);
    vt_attach(&t, virtio_console_new(&t.env, &chr));
    struct vcap c = {0};
    assert_int_equal(t.pdev->id.device, 0x1043);
    assert_true(find_vcap(t.pdev, VIRTIO_PCI_CAP_DEVICE_CFG, &c));
    assert_int_equal(c.bar, VIRTIO_PCI_BAR);
    assert_true(c.length >= 12);
    assert_true(IS_ALIGNED(c.offset, 4));
    vt_fini(&t);
}

static void test_features(void **state)
{
    struct vtest t;
    rng_setup(&t);
    uint64_t f = vt_device_features(&t);
    assert_true(f & (1ULL << VIRTIO_F_VERSION_1));
    assert_true(f & (1ULL << VIRTIO_F_EVENT_IDX));
    assert_true(f & (1ULL << VIRTIO_F_INDIRECT_DESC));
    /* Legacy driver (no VERSION_1): FEATURES_OK does not stick. */
    assert_false(vt_negotiate(&t, 0) & VIRTIO_STATUS_FEATURES_OK);
    /* A feature we did not offer: refused. */
    assert_false(vt_negotiate(&t, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << 40)) &
                 VIRTIO_STATUS_FEATURES_OK);
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    /* Feature writes after FEATURES_OK are ignored. */
    vt_write(&t, VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
    vt_write(&t, VIRTIO_PCI_COMMON_GF, 0xffffffff, 4);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_GF, 4), 0);
    vt_fini(&t);
}

/* Negotiate, set up queue 0 of size 8, DRIVER_OK. */
static void rng_bring_up(struct vtest *t, struct vt_ring *r, uint64_t features)
{
    assert_true(vt_negotiate(t, (1ULL << VIRTIO_F_VERSION_1) | features) &
                VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(t, r, 0, 8);
    vt_driver_ok(t);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void test_rng_fills_buffers(void **state)
{
    struct vtest t;
    struct vt_ring r;
    rng_setup(&t);
    rng_bring_up(&t, &r, 0);
    uint64_t a = vt_alloc(&t, 64, 8), b = vt_alloc(&t, 100, 8);
    vt_set_desc(&t, &r, 0, a, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&t, &r, 1, b, 100, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&t, &r, 0);
    vt_notify(&t, 0);
    assert_int_equal(vt_used_idx(&t, &r), 1);
    uint32_t id, len;
    vt_used_elem(&t, &r, 0, &id, &len);
    assert_int_equal(id, 0);
    assert_int_equal(len, 164);
    assert_false(all_zero(vt_gptr(&t, a), 64));
    assert_false(all_zero(vt_gptr(&t, b), 100));
    /* INTx: ISR bit 0, line up; reading ISR clears and lowers it. */
    assert_true(t.pdev->intx);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_ISR_OFF, 1), 1);
    assert_false(t.pdev->intx);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_ISR_OFF, 1), 0);
    vt_fini(&t);
}

static void test_no_processing_before_driver_ok(void **state)
{
    struct vtest t;
    struct vt_ring r;
    rng_setup(&t);
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    vt_ring_init(&t, &r, 0, 8);
    uint64_t a = vt_alloc(&t, 16, 8);
    vt_set_desc(&t, &r, 0, a, 16, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&t, &r, 0);
    vt_notify(&t, 0);
    assert_int_equal(vt_used_idx(&t, &r), 0);
    /* DRIVER_OK processes what was made available before. */
    vt_driver_ok(&t);
    assert_int_equal(vt_used_idx(&t, &r), 1);
    vt_fini(&t);
}

static void test_msix(void **state)
{
    struct vtest t;
    struct vt_ring r;
    rng_setup(&t);
    t.pdev->msix_enabled = true;
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    vt_write(&t, VIRTIO_PCI_COMMON_MSIX, 0, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_MSIX, 2), 0);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_MSIX, 7, 2); /* no such vector */
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_MSIX, 2), 1);
    vt_ring_init(&t, &r, 0, 8);
    vt_driver_ok(&t);
    uint64_t a = vt_alloc(&t, 16, 8);
    vt_set_desc(&t, &r, 0, a, 16, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&t, &r, 0);
    vt_notify(&t, 0);
    assert_int_equal(vt_used_idx(&t, &r), 1);
    assert_int_equal(t.pdev->msix_count[1], 1);
    assert_int_equal(t.pdev->msix_count[0], 0);
    assert_int_equal(t.pdev->intx_raises, 0);
    vt_fini(&t);
}

static void test_queue_registers(void **state)
{
    struct vtest t;
    rng_setup(&t);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_DESCLO, 0x12345678, 4);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_DESCHI, 0x9abc, 4);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_DESCLO, 8), 0x9abc12345678ULL);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_DESCHI, 4), 0x9abc);
    /* Out-of-range queue: size 0 and writes ignored. */
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 5, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    /* Odd accesses: no crash, sensible values. */
    assert_int_equal(vt_read(&t, 0x37, 4), 0);
    assert_int_equal(vt_read(&t, 0xfff, 8), 0);
    vt_write(&t, 0x13, 0xff, 1);
    vt_write(&t, VIRTIO_PCI_NOTIFY_OFF + 0xff0, 0, 4);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_DEVICE_OFF, 4), 0);
    vt_fini(&t);
}

static void expect_needs_reset(struct vtest *t)
{
    assert_true(vt_status(t) & VIRTIO_STATUS_NEEDS_RESET);
    /* Configuration-change interrupt: ISR bit 1 and INTx raised. */
    assert_true(t->pdev->intx);
    assert_true(vt_read(t, VIRTIO_PCI_ISR_OFF, 1) & 2);
}

static void test_needs_reset_on_hostile_chain(void **state)
{
    struct vtest t;
    struct vt_ring r;
    rng_setup(&t);
    rng_bring_up(&t, &r, 0);
    uint64_t a = vt_alloc(&t, 16, 8);
    vt_set_desc(&t, &r, 0, a, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0); /* loop */
    vt_publish(&t, &r, 0);
    vt_notify(&t, 0);
    expect_needs_reset(&t);
    assert_int_equal(vt_used_idx(&t, &r), 0);
    /* The driver cannot clear NEEDS_RESET other than by resetting. */
    vt_write(&t, VIRTIO_PCI_COMMON_STATUS, 0x0f, 1);
    assert_true(vt_status(&t) & VIRTIO_STATUS_NEEDS_RESET);
    /* Further notifications do nothing. */
    vt_set_desc(&t, &r, 0, a, 16, VIRTQ_DESC_F_WRITE, 0);
    vt_notify(&t, 0);
    assert_int_equal(vt_used_idx(&t, &r), 0);

    /* Reset, set up again: works. */
    vt_write(&t, VIRTIO_PCI_COMMON_STATUS, 0, 1);
    assert_int_equal(vt_status(&t), 0);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    rng_bring_up(&t, &r, 0);
    vt_set_desc(&t, &r, 0, a, 16, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&t, &r, 0);
    vt_notify(&t, 0);
    assert_int_equal(vt_used_idx(&t, &r), 1);
    vt_fini(&t);
}

static void test_needs_reset_on_bad_queue_address(void **state)
{
    struct vtest t;
    rng_setup(&t);
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_DESCLO, VT_RAM_BASE + VT_RAM_SIZE - 64, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_AVAILLO, VT_RAM_BASE + 0x1000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_USEDLO, VT_RAM_BASE + 0x2000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    assert_int_equal(vt_read(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    expect_needs_reset(&t);
    vt_fini(&t);
}

static void test_needs_reset_on_misaligned_queue(void **state)
{
    struct vtest t;
    rng_setup(&t);
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_DESCLO, VT_RAM_BASE + 0x1008, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_AVAILLO, VT_RAM_BASE + 0x2000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_USEDLO, VT_RAM_BASE + 0x3000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    expect_needs_reset(&t);
    vt_fini(&t);
}

static void test_needs_reset_on_oversized_queue(void **state)
{
    struct vtest t;
    rng_setup(&t);
    assert_true(vt_negotiate(&t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_SIZE, 512, 2); /* the device offers 64 */
    vt_write(&t, VIRTIO_PCI_COMMON_Q_DESCLO, VT_RAM_BASE + 0x1000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_AVAILLO, VT_RAM_BASE + 0x4000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_USEDLO, VT_RAM_BASE + 0x5000, 8);
    vt_write(&t, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    expect_needs_reset(&t);
    vt_fini(&t);
}

static void test_pci_cfg_window(void **state)
{
    struct vtest t;
    rng_setup(&t);
    struct vcap c = {0};
    assert_true(find_vcap(t.pdev, VIRTIO_PCI_CAP_PCI_CFG, &c));
    /* Write the status register through the window... */
    fake_pci_config_write(t.pdev, c.off + 4, VIRTIO_PCI_BAR, 1);
    fake_pci_config_write(t.pdev, c.off + 8, VIRTIO_PCI_COMMON_STATUS, 4);
    fake_pci_config_write(t.pdev, c.off + 12, 1, 4);
    fake_pci_config_write(t.pdev, c.off + 16, VIRTIO_STATUS_ACKNOWLEDGE, 4);
    assert_int_equal(vt_status(&t), VIRTIO_STATUS_ACKNOWLEDGE);
    /* ...and read it back, and the fields we set. */
    assert_int_equal(fake_pci_config_read(t.pdev, c.off + 16, 1), VIRTIO_STATUS_ACKNOWLEDGE);
    assert_int_equal(fake_pci_config_read(t.pdev, c.off + 4, 1), VIRTIO_PCI_BAR);
    assert_int_equal(fake_pci_config_read(t.pdev, c.off + 8, 4), VIRTIO_PCI_COMMON_STATUS);
    /* A 4-byte read of device_feature (select 1): VERSION_1. */
    vt_write(&t, VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
    fake_pci_config_write(t.pdev, c.off + 8, VIRTIO_PCI_COMMON_DF, 4);
    fake_pci_config_write(t.pdev, c.off + 12, 4, 4);
    assert_int_equal(fake_pci_config_read(t.pdev, c.off + 16, 4), 1);
    /* The capability header still reads as stored. */
    assert_int_equal(fake_pci_config_read(t.pdev, c.off, 1), 0x09);
    assert_int_equal(fake_pci_config_read(t.pdev, c.off + 3, 1), VIRTIO_PCI_CAP_PCI_CFG);
    /* Hostile window settings are ignored. */
    fake_pci_config_write(t.pdev, c.off + 8, VIRTIO_PCI_BAR_SIZE - 2, 4);
    fake_pci_config_write(t.pdev, c.off + 16, 0xffffffff, 4);
    (void)fake_pci_config_read(t.pdev, c.off + 16, 4);
    fake_pci_config_write(t.pdev, c.off + 12, 3, 4);
    fake_pci_config_write(t.pdev, c.off + 8, 0, 4);
    fake_pci_config_write(t.pdev, c.off + 16, 0, 4);
    fake_pci_config_write(t.pdev, c.off + 4, 2, 1);
    fake_pci_config_write(t.pdev, c.off + 12, 1, 4);
    fake_pci_config_write(t.pdev, c.off + 16, 0, 4);
    assert_int_equal(vt_status(&t), VIRTIO_STATUS_ACKNOWLEDGE);
    vt_fini(&t);
}

static void test_creation_failures(void **state)
{
    struct vtest t;
    vt_init(&t);
    /* A full bus: nothing is created and nothing leaks. */
    for (int i = 0; i < PCI_MAX_SLOTS - 1; i++)
        assert_non_null(virtio_rng_new(&t.env));
    assert_null(virtio_rng_new(&t.env));
    assert_null(virtio_console_new(&t.env, NULL));
    for (unsigned i = 0; i < t.bus->n; i++)
        virtio_dev_free(t.bus->devs[i]->opaque);
    fake_pci_bus_free(t.bus);

    /* A BAR that cannot be added: the function stays on the bus, its
     * device ignores the driver. */
    t.bus = fake_pci_bus_new();
    t.env.pci = t.bus;
    fake_pci_fail_add_bar = true;
    struct chardev chr = {0};
    assert_null(virtio_console_new(&t.env, &chr));
    fake_pci_fail_add_bar = false;
    assert_int_equal(t.bus->n, 1);
    struct pci_device *d = t.bus->devs[0];
    d->ops->reset(d->opaque);
    fake_pci_config_write(d, 0x40, 0, 4);
    assert_false(chr.attached);
    virtio_dev_free(d->opaque);
    t.vdev = NULL;
    vt_fini(&t);
}

static void test_machine_reset(void **state)
{
    struct vtest t;
    struct vt_ring r;
    rng_setup(&t);
    rng_bring_up(&t, &r, 0);
    t.pdev->ops->reset(t.pdev->opaque);
    assert_int_equal(vt_status(&t), 0);
    vt_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_and_caps),
        cmocka_unit_test(test_device_cfg_cap_console),
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_rng_fills_buffers),
        cmocka_unit_test(test_no_processing_before_driver_ok),
        cmocka_unit_test(test_msix),
        cmocka_unit_test(test_queue_registers),
        cmocka_unit_test(test_needs_reset_on_hostile_chain),
        cmocka_unit_test(test_needs_reset_on_bad_queue_address),
        cmocka_unit_test(test_needs_reset_on_misaligned_queue),
        cmocka_unit_test(test_needs_reset_on_oversized_queue),
        cmocka_unit_test(test_pci_cfg_window),
        cmocka_unit_test(test_creation_failures),
        cmocka_unit_test(test_machine_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
