/* PCI: config mechanism #1 and ECAM agree, BAR sizing and moves (bus
 * dispatch follows), capability chain, MSI-X masking/pending and irqfd
 * routes, INTx, and
 * the 0xcf9 reset register sharing the 0xcf8 dword. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakes.h"
#include "hw/acpi_pm.h"
#include "hw/pci.h"
#include "machine/layout.h"

struct bar_probe {
    unsigned reads, writes;
    uint64_t last_offset, last_value;
};

static uint64_t probe_read(void *opaque, uint64_t offset, unsigned size)
{
    struct bar_probe *p = opaque;
    p->reads++;
    p->last_offset = offset;
    return 0x1234;
}

static void probe_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct bar_probe *p = opaque;
    p->writes++;
    p->last_offset = offset;
    p->last_value = value;
}

static const struct bus_ops probe_ops = {.read = probe_read, .write = probe_write};

struct fixture {
    struct bus *pio, *mmio;
    struct fake_irq irq;
    struct pci_bus *pci;
    struct pci_device *dev;
    struct bar_probe mem32, io, mem64;
    unsigned vendor_cap;
};

static const struct pci_device_id test_id = {
    .vendor = 0x1af4, .device = 0x1042, .subsystem_vendor = 0x1af4, .subsystem = 0x1100,
    .revision = 1, .class_base = 0x01, .class_sub = 0x00,
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->pio = bus_new("pio");
    f->mmio = bus_new("mmio");
    fake_irq_init(&f->irq);
    f->pci = pci_bus_new(f->pio, f->mmio, &f->irq.sink);
    assert_non_null(f->pci);
    f->dev = pci_device_new(f->pci, "testdev", &test_id, NULL, NULL);
    assert_non_null(f->dev);
    assert_int_equal(pci_device_slot(f->dev), 1);
    assert_int_equal(pci_device_add_bar(f->dev, 0, PCI_BAR_MEM32, 4096, &probe_ops, &f->mem32), 0);
    assert_int_equal(pci_device_add_bar(f->dev, 1, PCI_BAR_IO, 32, &probe_ops, &f->io), 0);
    assert_int_equal(pci_device_add_bar(f->dev, 2, PCI_BAR_MEM64, 16384, &probe_ops, &f->mem64), 0);
    uint8_t vcap[16] = {0x09, 0, 16, 0xaa};
    f->vendor_cap = pci_device_add_capability(f->dev, vcap, sizeof(vcap));
    assert_int_equal(f->vendor_cap, 0x40);
    assert_int_equal(pci_device_init_msix(f->dev, 4, 2, 0x0, 0x800), 0);
    assert_int_equal(pci_bus_assign_bars(f->pci), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    pci_bus_free(f->pci);
    bus_free(f->pio);
    bus_free(f->mmio);
    free(f);
    return 0;
}

static uint32_t cf8_read(struct fixture *f, unsigned slot, unsigned reg, unsigned size)
{
    io_out(f->pio, 0xcf8, 0x80000000u | slot << 11 | (reg & 0xfc), 4);
    return io_in(f->pio, 0xcfc + (reg & 3), size);
}

static void cf8_write(struct fixture *f, unsigned slot, unsigned reg, uint32_t v, unsigned size)
{
    io_out(f->pio, 0xcf8, 0x80000000u | slot << 11 | (reg & 0xfc), 4);
    io_out(f->pio, 0xcfc + (reg & 3), v, size);
}

static uint64_t ecam_addr(unsigned bus, unsigned slot, unsigned reg)
{
    return LAYOUT_PCI_ECAM_BASE + ((uint64_t)bus << 20) + (slot << 15) + reg;
}

static uint32_t ecam_read(struct fixture *f, unsigned slot, unsigned reg, unsigned size)
{
    uint32_t v = 0;
    bus_read(f->mmio, ecam_addr(0, slot, reg), &v, size);
    return v;
}

static void ecam_write(struct fixture *f, unsigned slot, unsigned reg, uint32_t v, unsigned size)
{
    bus_write(f->mmio, ecam_addr(0, slot, reg), &v, size);
}

static uint32_t mmio_read32(struct fixture *f, uint64_t addr)
{
    uint32_t v = 0;
    bus_read(f->mmio, addr, &v, 4);
    return v;
}

static void mmio_write32(struct fixture *f, uint64_t addr, uint32_t v)
{
    bus_write(f->mmio, addr, &v, 4);
}

static void test_host_bridge_and_mechanisms_agree(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(cf8_read(f, 0, 0, 4), 0x29c08086);
    assert_int_equal(cf8_read(f, 0, 8, 4) >> 8, 0x060000);
    assert_int_equal(io_in(f->pio, 0xcf8, 4), 0x80000008u);
    for (unsigned slot = 0; slot < 3; slot++) {
        for (unsigned reg = 0; reg < 0x100; reg += 4) {
            assert_int_equal(cf8_read(f, slot, reg, 4), ecam_read(f, slot, reg, 4));
            assert_int_equal(cf8_read(f, slot, reg + 2, 2), ecam_read(f, slot, reg + 2, 2));
            assert_int_equal(cf8_read(f, slot, reg + 3, 1), ecam_read(f, slot, reg + 3, 1));
        }
    }
    assert_int_equal(ecam_read(f, 1, 0, 4), 0x10421af4);
    assert_int_equal(ecam_read(f, 2, 0, 4), 0xffffffffu); /* empty slot */
    uint32_t v = 0;
    bus_read(f->mmio, ecam_addr(1, 0, 0), &v, 4);
    assert_int_equal(v, 0xffffffffu); /* other buses are empty */
    bus_read(f->mmio, ecam_addr(0, 1, 0) + (1 << 12), &v, 4);
    assert_int_equal(v, 0xffffffffu); /* function 1 */
    /* Config mechanism disabled (bit 31 clear): all-ones. */
    io_out(f->pio, 0xcf8, 0x00000800, 4);
    assert_int_equal(io_in(f->pio, 0xcfc, 4), 0xffffffffu);
    /* Interrupt pin/line. */
    assert_int_equal(ecam_read(f, 1, 0x3d, 1), 1);
    assert_int_equal(ecam_read(f, 1, 0x3c, 1), layout_pci_intx_gsi(1, 0));
    /* Extended config space is there (and empty) through ECAM only. */
    assert_int_equal(ecam_read(f, 1, 0x100, 4), 0);
}

static void test_read_only_fields(void **state)
{
    struct fixture *f = *state;
    ecam_write(f, 1, 0, 0xdeadbeef, 4);
    assert_int_equal(ecam_read(f, 1, 0, 4), 0x10421af4);
    ecam_write(f, 1, 0x3c, 0x0b, 1); /* interrupt line is writable */
    assert_int_equal(ecam_read(f, 1, 0x3c, 1), 0x0b);
    ecam_write(f, 1, 0x06, 0xffff, 2); /* status: W1C, nothing set */
    assert_int_equal(ecam_read(f, 1, 0x06, 2), 0x0010);
}

static void test_bar_assignment_and_sizing(void **state)
{
    struct fixture *f = *state;
    /* Largest memory BAR first, naturally aligned. */
    assert_int_equal(pci_device_bar_addr(f->dev, 2), LAYOUT_PCI_MMIO32_BASE);
    assert_int_equal(pci_device_bar_addr(f->dev, 0), LAYOUT_PCI_MMIO32_BASE + 16384);
    assert_int_equal(pci_device_bar_addr(f->dev, 1), LAYOUT_PCI_PIO_BASE);
    assert_int_equal(ecam_read(f, 1, 0x04, 2) & 7, 7);
    assert_int_equal(ecam_read(f, 1, 0x10, 4), LAYOUT_PCI_MMIO32_BASE + 16384);
    assert_int_equal(ecam_read(f, 1, 0x14, 4), LAYOUT_PCI_PIO_BASE | 1);
    assert_int_equal(ecam_read(f, 1, 0x18, 4), LAYOUT_PCI_MMIO32_BASE | 4);
    assert_int_equal(ecam_read(f, 1, 0x1c, 4), 0);

    /* Dispatch reaches the device with BAR-relative offsets. */
    assert_int_equal(mmio_read32(f, pci_device_bar_addr(f->dev, 0) + 0x10), 0x1234);
    assert_int_equal(f->mem32.last_offset, 0x10);
    io_out(f->pio, LAYOUT_PCI_PIO_BASE + 4, 0x55, 1);
    assert_int_equal(f->io.writes, 1);
    assert_int_equal(f->io.last_offset, 4);

    /* Sizing, Linux style: decode off, write all-ones, read, restore. */
    uint32_t orig = ecam_read(f, 1, 0x10, 4);
    ecam_write(f, 1, 0x04, 0x0004, 2);
    ecam_write(f, 1, 0x10, 0xffffffff, 4);
    assert_int_equal(ecam_read(f, 1, 0x10, 4), 0xfffff000u);
    ecam_write(f, 1, 0x14, 0xffffffff, 4);
    assert_int_equal(ecam_read(f, 1, 0x14, 4), 0xffffffe1u);
    ecam_write(f, 1, 0x18, 0xffffffff, 4);
    ecam_write(f, 1, 0x1c, 0xffffffff, 4);
    assert_int_equal(ecam_read(f, 1, 0x18, 4), 0xffffc004u);
    assert_int_equal(ecam_read(f, 1, 0x1c, 4), 0xffffffffu);
    assert_int_equal(ecam_read(f, 1, 0x20, 4), 0); /* absent BAR */
    ecam_write(f, 1, 0x20, 0xffffffff, 4);
    assert_int_equal(ecam_read(f, 1, 0x20, 4), 0);
    assert_int_equal(ecam_read(f, 1, 0x30, 4), 0); /* no expansion ROM */
    assert_int_equal(pci_device_bar_addr(f->dev, 0), 0); /* decode off: unmapped */
    ecam_write(f, 1, 0x10, orig, 4);
    ecam_write(f, 1, 0x14, LAYOUT_PCI_PIO_BASE, 4);
    ecam_write(f, 1, 0x18, LAYOUT_PCI_MMIO32_BASE, 4);
    ecam_write(f, 1, 0x1c, 0, 4);
    ecam_write(f, 1, 0x04, 0x0007, 2);
    assert_int_equal(pci_device_bar_addr(f->dev, 0), orig);
}

static void test_bar_move(void **state)
{
    struct fixture *f = *state;
    uint64_t old = pci_device_bar_addr(f->dev, 0), new = 0xd0000000;
    ecam_write(f, 1, 0x10, (uint32_t)new, 4);
    assert_int_equal(pci_device_bar_addr(f->dev, 0), new);
    unsigned reads = f->mem32.reads;
    assert_int_equal(mmio_read32(f, old), 0xffffffffu); /* nothing there now */
    assert_int_equal(f->mem32.reads, reads);
    mmio_write32(f, new + 8, 0xabcd);
    assert_int_equal(f->mem32.last_value, 0xabcd);
    assert_int_equal(f->mem32.last_offset, 8);

    /* Memory decode off: gone; on again: back. */
    ecam_write(f, 1, 0x04, 0x0005, 2);
    assert_int_equal(pci_device_bar_addr(f->dev, 0), 0);
    assert_int_equal(mmio_read32(f, new), 0xffffffffu);
    assert_int_equal(pci_device_bar_addr(f->dev, 1), LAYOUT_PCI_PIO_BASE); /* I/O stays */
    ecam_write(f, 1, 0x04, 0x0007, 2);
    assert_int_equal(mmio_read32(f, new), 0x1234);

    /* 64-bit BAR above 4 GiB. */
    ecam_write(f, 1, 0x1c, 0x1, 4);
    assert_int_equal(pci_device_bar_addr(f->dev, 2), 0x100000000ULL | LAYOUT_PCI_MMIO32_BASE);
    /* I/O BAR moved through cf8/cfc with a word write to the upper half is ignored. */
    cf8_write(f, 1, 0x14, 0xd000, 4);
    assert_int_equal(pci_device_bar_addr(f->dev, 1), 0xd000);
    io_out(f->pio, 0xd000 + 2, 1, 1);
    assert_int_equal(f->io.last_offset, 2);

    /* Reset returns to the firmware assignment. */
    pci_bus_reset(f->pci);
    assert_int_equal(pci_device_bar_addr(f->dev, 0), old);
    assert_int_equal(pci_device_bar_addr(f->dev, 1), LAYOUT_PCI_PIO_BASE);
    assert_int_equal(pci_device_bar_addr(f->dev, 2), LAYOUT_PCI_MMIO32_BASE);
}

static void test_capability_chain(void **state)
{
    struct fixture *f = *state;
    assert_true(ecam_read(f, 1, 0x06, 2) & 0x10);
    unsigned ptr = ecam_read(f, 1, 0x34, 1);
    assert_int_equal(ptr, 0x40);
    assert_int_equal(ecam_read(f, 1, ptr, 1), 0x09);
    assert_int_equal(ecam_read(f, 1, ptr + 3, 1), 0xaa);
    unsigned next = ecam_read(f, 1, ptr + 1, 1);
    assert_int_equal(next, 0x50);
    assert_int_equal(ecam_read(f, 1, next, 1), 0x11);
    assert_int_equal(ecam_read(f, 1, next + 1, 1), 0);
    assert_int_equal(ecam_read(f, 1, next + 2, 2), 3); /* table size - 1 */
    assert_int_equal(ecam_read(f, 1, next + 4, 4), 0x000 | 2);
    assert_int_equal(ecam_read(f, 1, next + 8, 4), 0x800 | 2);
    ecam_write(f, 1, ptr, 0x0000, 2); /* ID and next are read-only */
    assert_int_equal(ecam_read(f, 1, ptr, 2), 0x5009);
    ecam_write(f, 1, next + 4, 0x1234, 4); /* table offset is read-only */
    assert_int_equal(ecam_read(f, 1, next + 4, 4), 2);
    /* The host bridge has no capabilities. */
    assert_false(ecam_read(f, 0, 0x06, 2) & 0x10);
}

static void test_msix(void **state)
{
    struct fixture *f = *state;
    uint64_t table = pci_device_bar_addr(f->dev, 2), pba = table + 0x800;
    unsigned cap = 0x50;
    assert_false(pci_msix_enabled(f->dev));
    pci_msix_notify(f->dev, 0); /* disabled: nothing, not even pending */
    assert_int_equal(mmio_read32(f, pba), 0);

    ecam_write(f, 1, cap + 2, 0x8000, 2);
    assert_true(pci_msix_enabled(f->dev));
    /* Vectors start masked: notify sets the pending bit. */
    assert_int_equal(mmio_read32(f, table + 12), 1);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(f->irq.nr_msi, 0);
    assert_int_equal(mmio_read32(f, pba), 0x2);
    mmio_write32(f, pba, 0); /* PBA is read-only */
    assert_int_equal(mmio_read32(f, pba), 0x2);

    /* Program vector 1 and unmask: the pending message goes out. */
    mmio_write32(f, table + 16 + 0, 0xfee00000);
    mmio_write32(f, table + 16 + 4, 0);
    mmio_write32(f, table + 16 + 8, 0x4041);
    assert_int_equal(f->irq.nr_msi, 0);
    mmio_write32(f, table + 16 + 12, 0);
    assert_int_equal(f->irq.nr_msi, 1);
    assert_int_equal(f->irq.msi_addr, 0xfee00000);
    assert_int_equal(f->irq.msi_data, 0x4041);
    assert_int_equal(mmio_read32(f, pba), 0);
    assert_int_equal(mmio_read32(f, table + 16 + 8), 0x4041);

    pci_msix_notify(f->dev, 1);
    assert_int_equal(f->irq.nr_msi, 2);

    /* Function mask holds everything back; clearing it delivers. */
    ecam_write(f, 1, cap + 2, 0xc000, 2);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(f->irq.nr_msi, 2);
    assert_int_equal(mmio_read32(f, pba), 0x2);
    ecam_write(f, 1, cap + 2, 0x8000, 2);
    assert_int_equal(f->irq.nr_msi, 3);
    assert_int_equal(mmio_read32(f, pba), 0);

    /* Out-of-range vectors and accesses past the table are harmless. */
    pci_msix_notify(f->dev, 4);
    pci_msix_notify(f->dev, 100000);
    uint64_t v = ~0ULL;
    bus_write(f->mmio, table + 4 * 16 - 4, &v, 8);
    bus_read(f->mmio, table + 4 * 16 - 2, &v, 8);
    bus_read(f->mmio, pba + 6, &v, 8);
    /* Non-MSI-X parts of the BAR reach the device. */
    assert_int_equal(mmio_read32(f, table + 0x1000), 0x1234);
    assert_int_equal(f->mem64.last_offset, 0x1000);

    /* Reset disables MSI-X and masks every vector again. */
    pci_bus_reset(f->pci);
    assert_false(pci_msix_enabled(f->dev));
    assert_int_equal(mmio_read32(f, table + 16 + 12), 1);
}

/* A sink with MSI routes, like KVM's irqfds: records what the PCI layer asks. */
struct fake_routes {
    unsigned adds, updates, dels;
    int fail_add; /* -errno to refuse */
    int fd, route, deleted;
    uint64_t addr;
    uint32_t data;
};
static struct fake_routes routes;

static int fake_route_add(void *opaque, uint64_t addr, uint32_t data, int fd)
{
    routes.adds++;
    if (routes.fail_add)
        return routes.fail_add;
    routes.fd = fd;
    routes.addr = addr;
    routes.data = data;
    return routes.route = 7;
}

static int fake_route_update(void *opaque, int route, uint64_t addr, uint32_t data)
{
    routes.updates++;
    assert_int_equal(route, routes.route);
    routes.addr = addr;
    routes.data = data;
    return 0;
}

static void fake_route_del(void *opaque, int route)
{
    routes.dels++;
    routes.deleted = route;
}

/* How many times the vector's eventfd was signalled since the last look. */
static uint64_t fd_signals(int fd)
{
    uint64_t n = 0;
    return read(fd, &n, sizeof(n)) == sizeof(n) ? n : 0;
}

static void program_vector1(struct fixture *f, uint64_t table, uint32_t data)
{
    mmio_write32(f, table + 16 + 0, 0xfee00000);
    mmio_write32(f, table + 16 + 4, 0);
    mmio_write32(f, table + 16 + 8, data);
}

static void test_msix_irqfd(void **state)
{
    struct fixture *f = *state;
    memset(&routes, 0, sizeof(routes));
    f->irq.sink.msi_route_add = fake_route_add;
    f->irq.sink.msi_route_update = fake_route_update;
    f->irq.sink.msi_route_del = fake_route_del;
    uint64_t table = pci_device_bar_addr(f->dev, 2), pba = table + 0x800;
    unsigned cap = 0x50;
    ecam_write(f, 1, cap + 2, 0x8000, 2);
    program_vector1(f, table, 0x4041);
    mmio_write32(f, table + 16 + 12, 0); /* unmask */

    /* First delivery binds an eventfd to the vector's message and signals it. */
    pci_msix_notify(f->dev, 1);
    assert_int_equal(routes.adds, 1);
    assert_int_equal(routes.addr, 0xfee00000);
    assert_int_equal(routes.data, 0x4041);
    assert_true(routes.fd >= 0);
    assert_int_equal(fd_signals(routes.fd), 1);
    assert_int_equal(f->irq.nr_msi, 0);
    pci_msix_notify(f->dev, 1);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(routes.adds, 1);
    assert_int_equal(fd_signals(routes.fd), 2);

    /* The guest retargets the vector: the route follows before the signal. */
    program_vector1(f, table, 0x4052);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(routes.updates, 1);
    assert_int_equal(routes.data, 0x4052);
    assert_int_equal(fd_signals(routes.fd), 1);

    /* Masked: nothing is signalled, the PBA holds it; unmasking delivers. */
    mmio_write32(f, table + 16 + 12, 1);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(fd_signals(routes.fd), 0);
    assert_int_equal(mmio_read32(f, pba), 0x2);
    mmio_write32(f, table + 16 + 12, 0);
    assert_int_equal(fd_signals(routes.fd), 1);
    assert_int_equal(mmio_read32(f, pba), 0);
    assert_int_equal(f->irq.nr_msi, 0);

    /* Reset unbinds the route. */
    pci_bus_reset(f->pci);
    assert_int_equal(routes.dels, 1);
    assert_int_equal(routes.deleted, 7);

    /* A sink that refuses routes: direct MSIs, and no asking again. */
    routes.fail_add = -ENOSPC;
    ecam_write(f, 1, cap + 2, 0x8000, 2);
    program_vector1(f, table, 0x4061);
    mmio_write32(f, table + 16 + 12, 0);
    pci_msix_notify(f->dev, 1);
    pci_msix_notify(f->dev, 1);
    assert_int_equal(routes.adds, 2);
    assert_int_equal(f->irq.nr_msi, 2);
    assert_int_equal(f->irq.msi_data, 0x4061);
}

static void test_intx(void **state)
{
    struct fixture *f = *state;
    unsigned gsi = layout_pci_intx_gsi(1, 0);
    pci_set_intx(f->dev, true);
    assert_true(f->irq.level[gsi]);
    assert_true(ecam_read(f, 1, 0x06, 2) & 0x08);
    ecam_write(f, 1, 0x04, 0x0407, 2); /* INTx disable */
    assert_false(f->irq.level[gsi]);
    assert_true(ecam_read(f, 1, 0x06, 2) & 0x08); /* status still shows it */
    ecam_write(f, 1, 0x04, 0x0007, 2);
    assert_true(f->irq.level[gsi]);

    /* A second device sharing the GSI (slot 5 -> same pin as slot 1). */
    struct pci_device *others[4];
    for (int i = 0; i < 4; i++)
        others[i] = pci_device_new(f->pci, "other", &test_id, NULL, NULL);
    assert_int_equal(pci_device_slot(others[3]), 5);
    assert_int_equal(layout_pci_intx_gsi(5, 0), gsi);
    pci_set_intx(others[3], true);
    pci_set_intx(f->dev, false);
    assert_true(f->irq.level[gsi]);
    assert_false(ecam_read(f, 1, 0x06, 2) & 0x08);
    pci_set_intx(others[3], false);
    assert_false(f->irq.level[gsi]);
}

static void test_hostile_config(void **state)
{
    struct fixture *f = *state;
    /* Every size at every offset of the cf8/cfc ports and a whole ECAM page. */
    uint64_t v;
    for (unsigned port = 0xcf8; port < 0xd00; port++)
        for (unsigned size = 1; size <= 8; size *= 2) {
            v = 0;
            bus_read(f->pio, port, &v, size);
        }
    for (unsigned reg = 0xff0; reg < 0x1000; reg++)
        for (unsigned size = 1; size <= 8; size *= 2) {
            v = ~0ULL;
            bus_read(f->mmio, ecam_addr(0, 1, reg), &v, size);
            bus_write(f->mmio, ecam_addr(0, 1, reg), &v, size);
        }
    v = ~0ULL;
    bus_read(f->mmio, LAYOUT_PCI_ECAM_BASE + LAYOUT_PCI_ECAM_SIZE - 4, &v, 8);
    /* Unaligned dword config write at 0x03: byte-wise, vendor unchanged. */
    ecam_write(f, 1, 0x03, 0xffffffff, 4);
    assert_int_equal(ecam_read(f, 1, 0, 4), 0x10421af4);
    /* A byte write to 0xcf8 does not change the address latch. */
    io_out(f->pio, 0xcf8, 0x80000000u, 4);
    io_out(f->pio, 0xcf8, 0x12, 1);
    assert_int_equal(io_in(f->pio, 0xcf8, 4), 0x80000000u);
    /* Bad BAR declarations are refused. */
    assert_int_equal(pci_device_add_bar(f->dev, 6, PCI_BAR_MEM32, 4096, NULL, NULL), -EINVAL);
    assert_int_equal(pci_device_add_bar(f->dev, 5, PCI_BAR_MEM64, 4096, NULL, NULL), -EINVAL);
    assert_int_equal(pci_device_add_bar(f->dev, 3, PCI_BAR_MEM32, 4096, NULL, NULL), -EEXIST);
    assert_int_equal(pci_device_add_bar(f->dev, 4, PCI_BAR_MEM32, 3000, NULL, NULL), -EINVAL);
    assert_int_equal(pci_device_init_msix(f->dev, 4, 2, 0, 0), -EEXIST);
}

static void test_bus_full(void **state)
{
    struct fixture *f = *state;
    unsigned n = 0;
    while (pci_device_new(f->pci, "filler", &test_id, NULL, NULL))
        n++;
    assert_int_equal(n, PCI_MAX_SLOTS - 2);
}

/* Device hooks: config_read overrides stored bytes, config_write sees the
 * access after the generic code; both may call back into pci_*. */
struct hook_state {
    struct pci_device *dev;
    unsigned writes, resets;
    unsigned last_offset, last_size;
    uint32_t last_value;
    uint64_t bar_seen;
};

static bool hook_read(void *opaque, unsigned offset, unsigned size, uint32_t *value)
{
    struct hook_state *h = opaque;
    if (offset != 0x48)
        return false;
    h->bar_seen = pci_device_bar_addr(h->dev, 0); /* re-entry: no deadlock */
    *value = 0xcafe0000u | (uint32_t)pci_msix_enabled(h->dev);
    return true;
}

static void hook_write(void *opaque, unsigned offset, uint32_t value, unsigned size)
{
    struct hook_state *h = opaque;
    h->writes++;
    h->last_offset = offset;
    h->last_size = size;
    h->last_value = value;
    pci_set_intx(h->dev, false); /* re-entry */
}

static void hook_reset(void *opaque)
{
    struct hook_state *h = opaque;
    h->resets++;
}

static const struct pci_device_ops hook_ops = {
    .config_read = hook_read, .config_write = hook_write, .reset = hook_reset,
};

static void test_config_hooks(void **state)
{
    struct fixture *f = *state;
    struct hook_state h = {0};
    h.dev = pci_device_new(f->pci, "hooked", &test_id, &hook_ops, &h);
    assert_non_null(h.dev);
    unsigned slot = pci_device_slot(h.dev);
    assert_int_equal(pci_device_add_bar(h.dev, 0, PCI_BAR_MEM32, 4096, &probe_ops, NULL), 0);
    uint8_t cap[16] = {0x09, 0, 16};
    assert_int_equal(pci_device_add_capability(h.dev, cap, sizeof(cap)), 0x40);
    assert_int_equal(ecam_read(f, slot, 0x48, 4), 0xcafe0000u);
    assert_int_equal(ecam_read(f, slot, 0x48, 2), 0x0000); /* narrowed to the access */
    assert_int_equal(ecam_read(f, slot, 0, 4), 0x10421af4); /* stored bytes elsewhere */
    ecam_write(f, slot, 0x44, 0x11223344, 4);
    assert_int_equal(h.writes, 1);
    assert_int_equal(h.last_offset, 0x44);
    assert_int_equal(h.last_size, 4);
    assert_int_equal(h.last_value, 0x11223344);
    assert_int_equal(ecam_read(f, slot, 0x44, 4), 0x11223344); /* cap body is writable */
    ecam_write(f, slot, 0x04, 0x0002, 2); /* a BAR-decoding change with a hook */
    assert_int_equal(h.writes, 2);
    pci_bus_reset(f->pci);
    assert_int_equal(h.resets, 1);

    /* Capabilities stop when the 256-byte space is full. */
    uint8_t big[64] = {0x09};
    unsigned n = 0;
    while (pci_device_add_capability(h.dev, big, sizeof(big)))
        n++;
    assert_int_equal(n, 2); /* 0x50..0x8f, 0x90..0xcf; 0xd0 + 64 > 0x100 */
    uint8_t tiny[1] = {0x09};
    assert_int_equal(pci_device_add_capability(h.dev, tiny, sizeof(tiny)), 0);
}

/* The reset control register shares the 0xcf8 dword; both orders of creation work. */
static void test_cf9_shares_cf8(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++) {
        struct bus *pio = bus_new("pio"), *mmio = bus_new("mmio");
        struct fake_irq irq;
        fake_irq_init(&irq);
        struct fake_vm vm;
        fake_vm_init(&vm);
        struct acpi_pm *pm = NULL;
        if (order == 0)
            pm = acpi_pm_new(pio, &irq.sink, &vm.ctl);
        struct pci_bus *pci = pci_bus_new(pio, mmio, &irq.sink);
        if (order == 1)
            pm = acpi_pm_new(pio, &irq.sink, &vm.ctl);
        assert_non_null(pm);
        assert_non_null(pci);
        io_out(pio, 0xcf8, 0x80000400u | 0x00, 4); /* function 4: bit 2 of byte 1 */
        assert_int_equal(vm.nr_events, 0);
        io_out(pio, 0xcf8, 0x80000000u, 4);
        assert_int_equal(io_in(pio, 0xcfc, 4), 0x29c08086);
        io_out(pio, 0xcf9, 0x02, 1);
        assert_int_equal(vm.nr_events, 0);
        assert_int_equal(io_in(pio, 0xcf9, 1), 0x02);
        io_out(pio, 0xcf9, 0x06, 1);
        assert_int_equal(vm.nr_events, 1);
        assert_int_equal(vm.last_event, VM_EVENT_RESET);
        if (order == 0) {
            pci_bus_free(pci);
            acpi_pm_free(pm);
        } else {
            acpi_pm_free(pm);
            pci_bus_free(pci);
        }
        bus_free(pio);
        bus_free(mmio);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host_bridge_and_mechanisms_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_assignment_and_sizing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capability_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix_irqfd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bus_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_hooks, setup, teardown),
        cmocka_unit_test(test_cf9_shares_cf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
