/* Virtio devices on the real PCI layer (src/hw/pci.c) and bus: what a guest
 * sees through config cycles and MMIO, MSI-X through the real table, INTx
 * on the routed GSI, the PCI_CFG window behind pci.c's write masks, machine
 * reset, and queue notifications through eventfds + ioeventfd hooks on a
 * real event loop. Everything is the real hw library; the disk is a raw
 * temporary file opened without a loop (synchronous completions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/evloop.h"
#include "core/guest_mem.h"
#include "core/util.h"
#include "block/block.h"
#include "hw/bus.h"
#include "hw/pci.h"
#include "hw/virtio/virtio_devices.h"
#include "hw/virtio/virtio_pci.h"
#include "machine/layout.h"

#define RAM_BASE 0x100000ULL
#define RAM_SIZE (256 * 1024ULL)

struct irq_log {
    bool level[64];
    unsigned msi_count;
    uint64_t msi_addr;
    uint32_t msi_data;
};

static void sink_set_level(void *opaque, unsigned gsi, bool level)
{
    struct irq_log *l = opaque;
    if (gsi < 64)
        l->level[gsi] = level;
}

static void sink_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
    struct irq_log *l = opaque;
    l->msi_count++;
    l->msi_addr = addr;
    l->msi_data = data;
}

struct ioev_log {
    unsigned adds, dels;
    uint64_t addr[8];
    unsigned len;
};

static int hook_add(void *opaque, bool pio, uint64_t addr, unsigned len, int fd)
{
    struct ioev_log *l = opaque;
    assert_false(pio);
    if (l->adds < 8)
        l->addr[l->adds] = addr;
    l->adds++;
    l->len = len;
    return 0;
}

static int hook_del(void *opaque, bool pio, uint64_t addr, unsigned len, int fd)
{
    struct ioev_log *l = opaque;
    l->dels++;
    return 0;
}

struct machine {
    struct bus *pio, *mmio;
    struct irq_log irq;
    struct irq_sink sink;
    struct pci_bus *pci;
    uint8_t *ram;
    struct guest_mem mem;
    struct virtio_env env;
    struct virtio_dev *vdev;
    struct pci_device *pdev;
    unsigned devfn;
    uint64_t bar;
    struct ioev_log ioev;
};

static void machine_init(struct machine *m, struct evloop *loop)
{
    memset(m, 0, sizeof(*m));
    m->pio = bus_new("pio");
    m->mmio = bus_new("mmio");
    m->sink = (struct irq_sink){.opaque = &m->irq, .set_level = sink_set_level,
                                .send_msi = sink_send_msi};
    m->pci = pci_bus_new(m->pio, m->mmio, &m->sink);
    assert_non_null(m->pci);
    m->ram = aligned_alloc(4096, RAM_SIZE);
    memset(m->ram, 0, RAM_SIZE);
    guest_mem_add(&m->mem, RAM_BASE, RAM_SIZE, m->ram);
    m->env = (struct virtio_env){.pci = m->pci, .mem = &m->mem, .loop = loop,
                                 .ioev_opaque = &m->ioev, .add_ioeventfd = hook_add,
                                 .del_ioeventfd = hook_del};
}

static void machine_plug(struct machine *m, struct virtio_dev *v)
{
    assert_non_null(v);
    m->vdev = v;
    m->pdev = virtio_dev_pci(v);
    assert_int_equal(pci_bus_assign_bars(m->pci), 0);
    m->devfn = pci_device_slot(m->pdev) << 3;
    m->bar = pci_device_bar_addr(m->pdev, VIRTIO_PCI_BAR);
}

static void machine_fini(struct machine *m)
{
    virtio_dev_free(m->vdev);
    pci_bus_free(m->pci);
    bus_free(m->pio);
    bus_free(m->mmio);
    free(m->ram);
}

static uint32_t cfg_read(struct machine *m, unsigned off, unsigned size)
{
    return pci_bus_config_read(m->pci, m->devfn, off, size);
}

static void cfg_write(struct machine *m, unsigned off, uint32_t val, unsigned size)
{
    pci_bus_config_write(m->pci, m->devfn, off, val, size);
}

static uint64_t mmio_rd(struct machine *m, uint64_t addr, unsigned size)
{
    uint64_t v = 0;
    assert_true(bus_read(m->mmio, addr, &v, size));
    return v;
}

static void mmio_wr(struct machine *m, uint64_t addr, uint64_t v, unsigned size)
{
    assert_true(bus_write(m->mmio, addr, &v, size));
}

static uint8_t *gp(struct machine *m, uint64_t gpa) { return m->ram + (gpa - RAM_BASE); }

/* Find a capability by ID (and vendor cfg_type when id is 0x09). */
static unsigned find_cap(struct machine *m, uint8_t id, uint8_t type)
{
    unsigned off = cfg_read(m, 0x34, 1), guard = 0;
    while (off && guard++ < 48) {
        if (cfg_read(m, off, 1) == id && (id != 0x09 || cfg_read(m, off + 3, 1) == type))
            return off;
        off = cfg_read(m, off + 1, 1);
    }
    return 0;
}

static void test_config_space(void **state)
{
    struct machine m;
    char path[] = "/tmp/ember-virtio-pci-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
    struct block_dev *bd;
    struct block_open_opts opts = {.format = "raw", .what = path};
    assert_int_equal(block_open(path, &opts, &bd), 0);
    machine_init(&m, NULL);
    machine_plug(&m, virtio_blk_new(&m.env, bd, "d0", NULL, 2, false));
    assert_int_equal(cfg_read(&m, 0, 2), 0x1af4);
    assert_int_equal(cfg_read(&m, 2, 2), 0x1042);
    assert_true(cfg_read(&m, 8, 1) >= 1);
    assert_true(cfg_read(&m, 0x2e, 2) >= 0x40);
    assert_true(cfg_read(&m, 6, 2) & 0x10); /* capability list */
    /* BAR 4 is 64-bit memory, assigned, naturally aligned. */
    assert_int_equal(cfg_read(&m, 0x10 + 4 * 4, 4) & 7, 4);
    assert_true(m.bar != 0 && IS_ALIGNED(m.bar, VIRTIO_PCI_BAR_SIZE));

    static const uint8_t types[] = {VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
                                    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
                                    VIRTIO_PCI_CAP_PCI_CFG};
    for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
        unsigned c = find_cap(&m, 0x09, types[i]);
        assert_true(c >= 0x40);
        if (types[i] == VIRTIO_PCI_CAP_PCI_CFG)
            continue;
        assert_int_equal(cfg_read(&m, c + 4, 1), VIRTIO_PCI_BAR);
        uint32_t off = cfg_read(&m, c + 8, 4), len = cfg_read(&m, c + 12, 4);
        assert_true(len > 0 && off + len <= VIRTIO_PCI_BAR_SIZE);
    }
    unsigned msix = find_cap(&m, 0x11, 0);
    assert_true(msix);
    assert_int_equal((cfg_read(&m, msix + 2, 2) & 0x7ff) + 1, 3); /* 2 queues + config */
    assert_int_equal(cfg_read(&m, msix + 4, 4) & 7, VIRTIO_PCI_MSIX_BAR);
    /* Through MMIO: common config sees two queues, device config the capacity. */
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_COMMON_NUMQ, 2), 2);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_DEVICE_OFF, 8), (1 << 20) / 512);
    machine_fini(&m);
    block_close(bd);
    unlink(path);
}

struct ring {
    uint64_t desc, avail, used;
};

static void driver_setup(struct machine *m, struct ring *r, uint16_t size)
{
    uint64_t b = m->bar;
    mmio_wr(m, b + VIRTIO_PCI_COMMON_STATUS, 0, 1);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_STATUS, 3, 1);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_GF, 1, 4); /* VERSION_1 */
    mmio_wr(m, b + VIRTIO_PCI_COMMON_STATUS, 0xb, 1);
    assert_int_equal(mmio_rd(m, b + VIRTIO_PCI_COMMON_STATUS, 1), 0xb);
    r->desc = RAM_BASE + 0x1000;
    r->avail = RAM_BASE + 0x2000;
    r->used = RAM_BASE + 0x3000;
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_SIZE, size, 2);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_DESCLO, r->desc, 4);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_DESCHI, 0, 4);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_AVAILLO, r->avail, 8);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_USEDLO, r->used, 4);
    mmio_wr(m, b + VIRTIO_PCI_COMMON_Q_USEDHI, 0, 4);
}

static void rng_request(struct machine *m, struct ring *r, uint16_t n)
{
    uint8_t *d = gp(m, r->desc);
    st64(d, RAM_BASE + 0x8000);
    st32(d + 8, 32);
    st16(d + 12, VIRTQ_DESC_F_WRITE);
    st16(gp(m, r->avail + 4 + 2 * ((n - 1) % 8)), 0);
    st16(gp(m, r->avail + 2), n);
}

static void test_intx_and_msix(void **state)
{
    struct machine m;
    struct ring r;
    machine_init(&m, NULL);
    machine_plug(&m, virtio_rng_new(&m.env));
    unsigned gsi = layout_pci_intx_gsi(pci_device_slot(m.pdev), 0);
    driver_setup(&m, &r, 8);
    mmio_wr(&m, m.bar + VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    mmio_wr(&m, m.bar + VIRTIO_PCI_COMMON_STATUS, 0xf, 1);

    /* INTx: the routed GSI goes up, reading ISR brings it down. */
    rng_request(&m, &r, 1);
    mmio_wr(&m, m.bar + VIRTIO_PCI_NOTIFY_OFF, 0, 2);
    assert_int_equal(ld16(gp(&m, r.used + 2)), 1);
    assert_true(m.irq.level[gsi]);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_ISR_OFF, 1), 1);
    assert_false(m.irq.level[gsi]);

    /* MSI-X: enable, program vector 1 in the table (BAR 1), map queue 0 to it. */
    unsigned msix = find_cap(&m, 0x11, 0);
    uint64_t table = pci_device_bar_addr(m.pdev, VIRTIO_PCI_MSIX_BAR) + VIRTIO_PCI_MSIX_TABLE;
    cfg_write(&m, msix + 2, 0x8000, 2);
    mmio_wr(&m, table + 16 + 0, 0xfee00000, 4);
    mmio_wr(&m, table + 16 + 4, 0, 4);
    mmio_wr(&m, table + 16 + 8, 0x41, 4);
    mmio_wr(&m, table + 16 + 12, 0, 4); /* unmask */
    mmio_wr(&m, m.bar + VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_COMMON_Q_MSIX, 2), 1);
    rng_request(&m, &r, 2);
    mmio_wr(&m, m.bar + VIRTIO_PCI_NOTIFY_OFF, 0, 2);
    assert_int_equal(ld16(gp(&m, r.used + 2)), 2);
    assert_int_equal(m.irq.msi_count, 1);
    assert_int_equal(m.irq.msi_data, 0x41);
    assert_false(m.irq.level[gsi]);

    /* Machine reset: device status back to 0, MSI-X off. */
    pci_bus_reset(m.pci);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_COMMON_STATUS, 1), 0);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    machine_fini(&m);
}

static void test_pci_cfg_window(void **state)
{
    struct machine m;
    machine_init(&m, NULL);
    machine_plug(&m, virtio_rng_new(&m.env));
    unsigned c = find_cap(&m, 0x09, VIRTIO_PCI_CAP_PCI_CFG);
    assert_true(c);
    cfg_write(&m, c + 4, VIRTIO_PCI_BAR, 1);
    cfg_write(&m, c + 8, VIRTIO_PCI_COMMON_STATUS, 4);
    cfg_write(&m, c + 12, 1, 4);
    cfg_write(&m, c + 16, 1, 4);
    assert_int_equal(mmio_rd(&m, m.bar + VIRTIO_PCI_COMMON_STATUS, 1), 1);
    assert_int_equal(cfg_read(&m, c + 16, 1), 1);
    assert_int_equal(cfg_read(&m, c + 4, 1), VIRTIO_PCI_BAR);
    /* Notify through the window: a 2-byte write to the queue's address. */
    cfg_write(&m, c + 8, VIRTIO_PCI_NOTIFY_OFF, 4);
    cfg_write(&m, c + 12, 2, 4);
    cfg_write(&m, c + 16, 0, 2);
    assert_int_equal(cfg_read(&m, c, 1), 0x09);
    machine_fini(&m);
}

static struct evloop *stop_loop;
static void stop_cb(void *opaque) { evloop_stop(stop_loop, 0); }

/* Let the loop handle what is pending, then return. */
static void loop_turn(struct evloop *loop)
{
    stop_loop = loop;
    evloop_call(loop, stop_cb, NULL);
    evloop_run(loop);
}

static void test_eventfd_notify_and_ioeventfd(void **state)
{
    struct machine m;
    struct ring r;
    struct evloop *loop = evloop_new();
    machine_init(&m, loop);
    machine_plug(&m, virtio_rng_new(&m.env));
    driver_setup(&m, &r, 8);
    mmio_wr(&m, m.bar + VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    assert_int_equal(m.ioev.adds, 0);
    mmio_wr(&m, m.bar + VIRTIO_PCI_COMMON_STATUS, 0xf, 1);
    /* DRIVER_OK registered the queue's notify address as an ioeventfd. */
    assert_int_equal(m.ioev.adds, 1);
    assert_int_equal(m.ioev.addr[0], m.bar + VIRTIO_PCI_NOTIFY_OFF);
    assert_int_equal(m.ioev.len, 2);

    /* A notify through the bus signals the eventfd; the loop does the work. */
    rng_request(&m, &r, 1);
    mmio_wr(&m, m.bar + VIRTIO_PCI_NOTIFY_OFF, 0, 2);
    assert_int_equal(ld16(gp(&m, r.used + 2)), 0);

    /* The guest moves BAR 4: the next notify (through the bus, since the
     * ioeventfd sits at the old address) moves the ioeventfd along. */
    uint64_t moved = m.bar + 0x100000;
    cfg_write(&m, 0x10 + 4 * VIRTIO_PCI_BAR, (uint32_t)moved, 4);
    cfg_write(&m, 0x14 + 4 * VIRTIO_PCI_BAR, (uint32_t)(moved >> 32), 4);
    assert_int_equal(pci_device_bar_addr(m.pdev, VIRTIO_PCI_BAR), moved);
    rng_request(&m, &r, 2);
    mmio_wr(&m, moved + VIRTIO_PCI_NOTIFY_OFF, 0, 2);
    /* One turn of the loop (evloop_run cannot be restarted after a stop). */
    loop_turn(loop);
    assert_int_equal(ld16(gp(&m, r.used + 2)), 2);
    assert_int_equal(m.ioev.dels, 1);
    assert_int_equal(m.ioev.adds, 2);
    assert_int_equal(m.ioev.addr[1], moved + VIRTIO_PCI_NOTIFY_OFF);

    /* Reset drops the ioeventfd. */
    mmio_wr(&m, moved + VIRTIO_PCI_COMMON_STATUS, 0, 1);
    assert_int_equal(m.ioev.dels, 2);
    machine_fini(&m);
    evloop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_space),
        cmocka_unit_test(test_intx_and_msix),
        cmocka_unit_test(test_pci_cfg_window),
        cmocka_unit_test(test_eventfd_notify_and_ioeventfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
