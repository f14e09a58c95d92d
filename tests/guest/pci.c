/* PCI bus 0 as a driver finds it: the host bridge, the virtio devices named
 * by "virtio=T1,T2,..." (virtio type IDs) with assigned, aligned, decoded
 * BARs, sane virtio vendor capabilities and MSI-X, ECAM (from ACPI MCFG)
 * agreeing with configuration mechanism #1, and a BAR the guest moves
 * decoding at its new address. */
#include "guest.h"

#define PCI_CAP_VENDOR 0x09
#define PCI_CAP_MSIX 0x11
#define TESTS_PER_DEVICE 5

struct dev_bars {
    struct pci_bar bar[6];
};

static void probe_bars(unsigned d, unsigned f, struct dev_bars *b)
{
    memset(b, 0, sizeof(*b));
    for (unsigned n = 0; n < 6; n++) {
        pci_bar_probe(d, f, n, &b->bar[n]);
        if (b->bar[n].is64)
            n++; /* upper half of a 64-bit BAR */
    }
}

static bool check_bars(unsigned d, unsigned f, const struct dev_bars *b, bool *mem, bool *io)
{
    bool ok = true;
    *mem = *io = false;
    for (unsigned n = 0; n < 6; n++) {
        const struct pci_bar *bar = &b->bar[n];
        if (!bar->size)
            continue;
        tap_diag("%02x.%x BAR%u: %s%s addr %lx size %lx", d, f, n, bar->io ? "io" : "mem",
                 bar->is64 ? "64" : "32", bar->addr, bar->size);
        if (bar->io)
            *io = true;
        else
            *mem = true;
        if (!bar->addr || (bar->addr & (bar->size - 1)) || (bar->size & (bar->size - 1))) {
            tap_diag("  BAR%u is unassigned, misaligned or not a power-of-two size", n);
            ok = false;
        }
    }
    return ok;
}

/* The virtio vendor capabilities: each names a memory BAR and a window
 * inside it; COMMON/NOTIFY/ISR/PCI_CFG always, DEVICE when it has one. */
static bool check_virtio_caps(unsigned d, unsigned f, unsigned type, const struct dev_bars *b)
{
    static const unsigned min_len[6] = { 0, 0x38, 2, 1, 1, 0 };
    unsigned seen = 0;
    bool ok = true;
    unsigned ptr = pci_read8(0, d, f, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (pci_read8(0, d, f, ptr) == PCI_CAP_VENDOR) {
            uint8_t cap_len = pci_read8(0, d, f, ptr + 2);
            uint8_t cfg_type = pci_read8(0, d, f, ptr + 3);
            uint8_t bar_n = pci_read8(0, d, f, ptr + 4);
            uint32_t off = pci_read32(0, d, f, ptr + 8);
            uint32_t len = pci_read32(0, d, f, ptr + 12);
            if (cfg_type >= 1 && cfg_type <= 5)
                seen |= 1u << cfg_type;
            if (cfg_type >= 1 && cfg_type <= 4) {
                const struct pci_bar *bar = bar_n < 6 ? &b->bar[bar_n] : NULL;
                if (cap_len < 16 || !bar || !bar->size || bar->io || len < min_len[cfg_type] ||
                    (uint64_t)off + len > bar->size) {
                    tap_diag("  virtio cap type %u: bar %u offset %x length %x does not fit "
                             "(cap_len %u)", cfg_type, bar_n, off, len, cap_len);
                    ok = false;
                }
                if (cfg_type == 2 && cap_len < 20) {
                    tap_diag("  notify cap too short for notify_off_multiplier");
                    ok = false;
                }
            } else if (cfg_type == 5 && cap_len < 20) {
                tap_diag("  PCI_CFG cap length %u < 20", cap_len);
                ok = false;
            }
        }
        ptr = pci_read8(0, d, f, ptr + 1) & 0xfc;
    }
    unsigned need = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 5);
    if (type == VIRTIO_ID_BLOCK)
        need |= 1u << 4;
    if ((seen & need) != need) {
        tap_diag("  virtio caps present mask %x, need %x", seen, need);
        ok = false;
    }
    return ok;
}

static bool check_msix(unsigned d, unsigned f, const struct dev_bars *b)
{
    unsigned ptr = pci_read8(0, d, f, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (pci_read8(0, d, f, ptr) == PCI_CAP_MSIX) {
            unsigned entries = (pci_read16(0, d, f, ptr + 2) & 0x7ff) + 1;
            uint32_t table = pci_read32(0, d, f, ptr + 4);
            uint32_t pba = pci_read32(0, d, f, ptr + 8);
            const struct pci_bar *tb = &b->bar[table & 7], *pb = &b->bar[pba & 7];
            bool ok = (table & 7) < 6 && (pba & 7) < 6 && tb->size && pb->size &&
                      (uint64_t)(table & ~7u) + 16ULL * entries <= tb->size &&
                      (uint64_t)(pba & ~7u) + ((entries + 63) / 64) * 8 <= pb->size;
            tap_diag("  MSI-X: %u entries, table BAR%u+%x, PBA BAR%u+%x", entries, table & 7,
                     table & ~7u, pba & 7, pba & ~7u);
            return ok;
        }
        ptr = pci_read8(0, d, f, ptr + 1) & 0xfc;
    }
    return false;
}

static void check_device(unsigned type, unsigned nth)
{
    unsigned d, f;
    uint16_t id = (uint16_t)(0x1040 + type);
    if (!tap_check(pci_find(0x1af4, id, nth, &d, &f), "virtio type %u (1af4:%04x) present", type,
                   id)) {
        for (unsigned i = 1; i < TESTS_PER_DEVICE; i++)
            tap_check(false, "virtio type %u: not checked, device missing", type);
        return;
    }
    tap_diag("1af4:%04x at 00:%02x.%x", id, d, f);
    struct dev_bars b;
    probe_bars(d, f, &b);
    bool mem, io;
    tap_check(check_bars(d, f, &b, &mem, &io) && mem, "%02x.%x: BARs assigned, nonzero, aligned",
              d, f);
    uint16_t cmd = pci_read16(0, d, f, 0x04);
    tap_check((!mem || (cmd & 2)) && (!io || (cmd & 1)), "%02x.%x: decoding enabled (command %x)",
              d, f, cmd);
    tap_check(check_virtio_caps(d, f, type, &b), "%02x.%x: virtio capabilities sane", d, f);
    tap_check(check_msix(d, f, &b), "%02x.%x: MSI-X capability present and fits its BARs", d, f);
}

static void check_ecam(void)
{
    uint8_t bus0 = 0, bus1 = 0;
    uint64_t base = acpi_mcfg_base(&bus0, &bus1);
    if (!base) {
        tap_skip("no ACPI MCFG table", "ECAM matches configuration mechanism #1");
        return;
    }
    tap_diag("MCFG: ECAM at %lx, buses %u-%u", base, bus0, bus1);
    bool ok = bus0 == 0 && guest_map_mmio(base, 1u << 20);
    for (unsigned d = 0; ok && d < 32; d++) {
        uint32_t via_io = pci_read32(0, d, 0, 0);
        uint32_t via_ecam = mmio_read32(base + ((uint64_t)d << 15));
        if (via_io != via_ecam) {
            tap_diag("slot %u: id %x via 0xcf8, %x via ECAM", d, via_io, via_ecam);
            ok = false;
        }
        if ((via_io & 0xffff) != 0xffff) {
            /* Extended space exists only through ECAM: offset 0x100 reads. */
            uint32_t cls_io = pci_read32(0, d, 0, 8);
            uint32_t cls_ecam = mmio_read32(base + ((uint64_t)d << 15) + 8);
            if (cls_io != cls_ecam) {
                tap_diag("slot %u: class %x via 0xcf8, %x via ECAM", d, cls_io, cls_ecam);
                ok = false;
            }
        }
    }
    tap_check(ok, "ECAM matches configuration mechanism #1 on bus 0");
}

/* The highest end of any 32-bit-addressed memory BAR on bus 0. */
static uint64_t bars_top(void)
{
    uint64_t top = 0;
    for (unsigned d = 0; d < 32; d++) {
        if ((pci_read32(0, d, 0, 0) & 0xffff) == 0xffff)
            continue;
        struct dev_bars b;
        probe_bars(d, 0, &b);
        for (unsigned n = 0; n < 6; n++)
            if (b.bar[n].size && !b.bar[n].io && b.bar[n].addr < 0x100000000ULL &&
                b.bar[n].addr + b.bar[n].size > top)
                top = b.bar[n].addr + b.bar[n].size;
    }
    return top;
}

/* Moves the BAR holding virtio-rng's common config above every other BAR
 * (as an OS reassigning resources would) and uses the device there. */
static void check_bar_move(void)
{
    struct virtio_dev vd;
    if (!virtio_find(VIRTIO_ID_RNG, 0, &vd)) {
        tap_skip("no virtio-rng device", "a moved BAR decodes at its new address");
        return;
    }
    unsigned d = vd.pci_dev, f = vd.pci_fn, bar_n = 6;
    unsigned ptr = pci_read8(0, d, f, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (pci_read8(0, d, f, ptr) == PCI_CAP_VENDOR && pci_read8(0, d, f, ptr + 3) == 1)
            bar_n = pci_read8(0, d, f, ptr + 4);
        ptr = pci_read8(0, d, f, ptr + 1) & 0xfc;
    }
    struct pci_bar bar;
    if (bar_n >= 6 || !pci_bar_probe(d, f, bar_n, &bar) || bar.io) {
        tap_check(false, "a moved BAR decodes at its new address: no common-config BAR");
        return;
    }
    uint64_t to = (bars_top() + bar.size - 1) & ~(bar.size - 1);
    if (to + bar.size > 0xfec00000ULL) {
        tap_skip("no room above the other BARs", "a moved BAR decodes at its new address");
        return;
    }
    uint16_t cmd = pci_read16(0, d, f, 0x04);
    pci_write16(0, d, f, 0x04, cmd & (uint16_t)~2u);
    pci_write32(0, d, f, 0x10 + 4 * bar_n, (uint32_t)to);
    if (bar.is64)
        pci_write32(0, d, f, 0x14 + 4 * bar_n, 0);
    pci_write16(0, d, f, 0x04, cmd | 2);
    static uint8_t buf[16];
    memset(buf, 0, sizeof(buf));
    struct virtq_desc desc = { .addr = (uintptr_t)buf, .len = sizeof(buf),
                               .flags = VIRTQ_DESC_F_WRITE };
    bool ok = virtio_find(VIRTIO_ID_RNG, 0, &vd) && vd.common >= to && vd.common < to + bar.size &&
              virtio_setup(&vd, 0) && virtio_transfer(&vd, &desc, 1, 5000000) > 0;
    tap_check(ok, "BAR%u moved %lx -> %lx: virtio-rng works at the new address", bar_n, bar.addr,
              to);
}

void guest_main(void)
{
    char list[64];
    unsigned types[8], ntypes = 0;
    if (cmdline_get("virtio", list, sizeof(list))) {
        unsigned v = 0;
        bool any = false;
        for (const char *p = list;; p++) {
            if (*p >= '0' && *p <= '9') {
                v = v * 10 + (unsigned)(*p - '0');
                any = true;
            } else {
                if (any && ntypes < ARRAY_SIZE(types))
                    types[ntypes++] = v;
                v = 0;
                any = false;
                if (!*p)
                    break;
            }
        }
    }
    tap_plan(3 + TESTS_PER_DEVICE * ntypes);

    uint32_t hb = pci_read32(0, 0, 0, 0);
    uint32_t cls = pci_read32(0, 0, 0, 8) >> 16;
    tap_check((hb & 0xffff) != 0xffff && cls == 0x0600, "host bridge at 00:00.0 (id %x class %x)",
              hb, cls);
    unsigned seen_of_type[16] = { 0 };
    for (unsigned i = 0; i < ntypes; i++) {
        unsigned t = types[i] & 15;
        check_device(types[i], seen_of_type[t]++);
    }
    check_ecam();
    check_bar_move();
}
