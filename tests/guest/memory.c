/* Guest RAM as the memory map describes it, above 4 GiB too: the RAM
 * entries add up to "mem=MiB", one starts at 4 GiB when RAM does not fit
 * below the PCI hole, and the first, middle and last bytes of every RAM
 * entry hold what is written there (original contents put back). */
#include "guest.h"

#define E820_RAM 1

extern uint8_t __bss_end[];

static unsigned probes, bad;

static void probe(uint64_t a)
{
    if (a >= 0x100000000ULL && !guest_map_mmio(a & ~7ULL, 8)) {
        tap_diag("cannot map %lx", a);
        bad++;
        return;
    }
    volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(a & ~7ULL);
    uint64_t old = *p, pat = 0x5a5aa5a5c3c30000ULL ^ a;
    *p = pat;
    uint64_t got = *p;
    *p = old;
    probes++;
    if (got != pat) {
        tap_diag("RAM at %lx: wrote %lx, read %lx", a, pat, got);
        bad++;
    }
}

void guest_main(void)
{
    const struct hvm_start_info *si = guest_start_info();
    uint64_t want = cmdline_u64("mem", 64) << 20;
    tap_plan(3);
    if (!si || !si->memmap_paddr || !si->memmap_entries || si->memmap_entries > 128)
        tap_bail("no PVH memory map");
    const struct hvm_memmap_entry *e =
        (const struct hvm_memmap_entry *)(uintptr_t)si->memmap_paddr;
    /* Copy first: probing must not depend on memory we might disturb. */
    struct hvm_memmap_entry map[128];
    unsigned n = si->memmap_entries;
    memcpy(map, e, n * sizeof(map[0]));

    uint64_t ram = 0, high = 0;
    for (unsigned i = 0; i < n; i++) {
        tap_diag("memmap %u: %lx-%lx type %u", i, map[i].addr, map[i].addr + map[i].size - 1,
                 map[i].type);
        if (map[i].type != E820_RAM)
            continue;
        ram += map[i].size;
        if (map[i].addr >= 0x100000000ULL)
            high += map[i].size;
    }
    tap_check(ram <= want && ram >= want - want / 16, "RAM entries add up to %lu MiB of %lu",
              ram >> 20, want >> 20);
    tap_check(want <= (2ULL << 30) || high > 0, "RAM beyond the low window starts above 4 GiB "
              "(%lu MiB there)", high >> 20);

    uint64_t img_lo = 0x100000, img_hi = (uint64_t)(uintptr_t)__bss_end;
    for (unsigned i = 0; i < n; i++) {
        if (map[i].type != E820_RAM || map[i].size < 64)
            continue;
        uint64_t lo = map[i].addr, hi = map[i].addr + map[i].size;
        uint64_t pts[3] = { lo, lo + (map[i].size / 2), hi - 8 };
        for (unsigned k = 0; k < 3; k++) {
            uint64_t a = pts[k];
            if (a < 0x1000 || (a + 8 > img_lo && a < img_hi) || a < 0x100000)
                continue; /* IVT/BDA, this image, loader data below 1 MiB */
            probe(a);
        }
    }
    tap_check(probes > 0 && bad == 0, "%u probes at the start, middle and end of RAM entries hold "
              "their values (%u bad)", probes, bad);
}
