/* A guest poking where drivers never go: every I/O port read, PCI config
 * cycles to absent functions and buses and at odd widths and offsets, IOAPIC
 * registers beyond its pins, a virtio BAR placed over RAM, over the LAPIC
 * and over another BAR. The VMM must survive each (COM1 still answers) and
 * the device must work again once its BAR is back. */
#include "guest.h"

#define COM1 0x3f8

static bool vmm_alive(void)
{
    outb(COM1 + 7, 0x3c);
    return inb(COM1 + 7) == 0x3c;
}

static bool read_all_ports(void)
{
    /* Reads only: writes could legitimately reset or power off. */
    for (uint32_t port = 0; port <= 0xffff; port++) {
        if (port == GUEST_DEBUG_EXIT_PORT)
            continue;
        (void)inb((uint16_t)port);
    }
    return vmm_alive();
}

static bool odd_pci_config(void)
{
    bool ok = true;
    /* Absent functions and buses read all-ones. */
    for (unsigned bus = 1; bus < 256; bus += 17)
        if (pci_read32(bus, 0, 0, 0) != 0xffffffff) {
            tap_diag("bus %u 00.0 reads %x", bus, pci_read32(bus, 0, 0, 0));
            ok = false;
        }
    /* Reserved address bits, sub-dword accesses at every data-port offset. */
    for (unsigned off = 0; off < 4; off++) {
        outl(0xcf8, 0x80000000u | 0x7f000000u | (off << 0));
        (void)inb((uint16_t)(0xcfc + off));
        (void)inw((uint16_t)(0xcfc + (off & 2)));
        outl(0xcf8, 0x80000000u | 0xfcu);
        (void)inb((uint16_t)(0xcfc + off));
    }
    outl(0xcf8, 0); /* disabled: data port must not reach config space */
    (void)inl(0xcfc);
    outw(0xcf8, 0xffff);
    outb(0xcfb, 0xff);
    /* Writes to the read-only ID and class registers of the host bridge. */
    uint32_t id = pci_read32(0, 0, 0, 0), cls = pci_read32(0, 0, 0, 8);
    pci_write32(0, 0, 0, 0, 0x12345678);
    pci_write32(0, 0, 0, 8, 0);
    if (pci_read32(0, 0, 0, 0) != id || pci_read32(0, 0, 0, 8) != cls) {
        tap_diag("host bridge ID/class changed by writes");
        ok = false;
    }
    return ok && vmm_alive();
}

static bool odd_ioapic(void)
{
    struct acpi_madt_info madt;
    acpi_get_madt_info(&madt);
    ioapic_set_base(madt.ioapic_base);
    unsigned pins = ioapic_pins();
    uint64_t b = madt.ioapic_base;
    for (unsigned reg = 0x10 + 2 * pins; reg < 0x100; reg += 7) {
        mmio_write32(b, reg);
        (void)mmio_read32(b + 0x10);
        mmio_write32(b + 0x10, 0xffffffff);
    }
    mmio_write32(b, 0xffffffff);
    (void)mmio_read32(b + 0x10);
    (void)mmio_read32(b + 0x04); /* between the two registers */
    (void)mmio_read32(b + 0x20);
    (void)mmio_read8(b + 0x13);
    return vmm_alive();
}

static struct virtio_dev vd;
static uint8_t rng_buf[16];

static bool rng_works(void)
{
    struct virtq_desc d = { .addr = (uintptr_t)rng_buf, .len = sizeof(rng_buf),
                            .flags = VIRTQ_DESC_F_WRITE };
    return virtio_find(VIRTIO_ID_RNG, 0, &vd) && virtio_setup(&vd, 0) &&
           virtio_transfer(&vd, &d, 1, 5000000) > 0;
}

/* Places the virtio-rng BAR holding its common config at `to`, touches it,
 * puts it back. */
static bool bar_at(uint64_t to, const char *where)
{
    if (!virtio_find(VIRTIO_ID_RNG, 0, &vd))
        return false;
    unsigned d = vd.pci_dev, f = vd.pci_fn, bar_n = 6;
    unsigned ptr = pci_read8(0, d, f, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (pci_read8(0, d, f, ptr) == 0x09 && pci_read8(0, d, f, ptr + 3) == 1)
            bar_n = pci_read8(0, d, f, ptr + 4);
        ptr = pci_read8(0, d, f, ptr + 1) & 0xfc;
    }
    struct pci_bar bar;
    if (bar_n >= 6 || !pci_bar_probe(d, f, bar_n, &bar) || bar.io)
        return false;
    if (to == (uint64_t)-1) {
        /* Over the device's other memory BAR (e.g. the MSI-X table). */
        for (unsigned n = 0; n < 6; n++) {
            struct pci_bar o;
            if (n != bar_n && pci_bar_probe(d, f, n, &o) && !o.io && o.addr) {
                to = o.addr & ~(bar.size - 1);
                break;
            }
        }
        if (to == (uint64_t)-1)
            return true; /* nothing to overlap */
    }
    uint16_t cmd = pci_read16(0, d, f, 0x04);
    unsigned off = 0x10 + 4 * bar_n;
    pci_write16(0, d, f, 0x04, cmd & (uint16_t)~2u);
    pci_write32(0, d, f, off, (uint32_t)to);
    if (bar.is64)
        pci_write32(0, d, f, off + 4, (uint32_t)(to >> 32));
    pci_write16(0, d, f, 0x04, cmd | 2);
    /* Reads only at the new place: whatever answers, nothing may break. */
    if (to >= 0x100000)
        (void)mmio_read32(to);
    pci_write16(0, d, f, 0x04, cmd & (uint16_t)~2u);
    pci_write32(0, d, f, off, (uint32_t)bar.addr);
    if (bar.is64)
        pci_write32(0, d, f, off + 4, (uint32_t)(bar.addr >> 32));
    pci_write16(0, d, f, 0x04, cmd);
    bool ok = vmm_alive() && rng_works();
    if (!ok)
        tap_diag("after the BAR sat %s", where);
    return ok;
}

void guest_main(void)
{
    tap_plan(8);
    tap_check(read_all_ports(), "every I/O port read once; the VMM still answers");
    tap_check(odd_pci_config(), "odd PCI config cycles handled; read-only IDs stay");
    tap_check(odd_ioapic(), "IOAPIC registers beyond its pins handled");
    tap_check(rng_works(), "virtio-rng works before its BAR is abused");
    tap_check(bar_at(0x0, "over RAM at 0"), "BAR placed over RAM at 0 and back: device works");
    tap_check(bar_at(lapic_base(), "over the LAPIC"), "BAR placed over the LAPIC and back: device works");
    tap_check(bar_at((uint64_t)-1, "over its other BAR"),
              "BAR placed over the device's other BAR and back: device works");
    lapic_enable();
    tap_check(lapic_read(LAPIC_SVR) == 0x1ff && vmm_alive(), "LAPIC still answers (SVR %x)",
              lapic_read(LAPIC_SVR));
}
