/* The boot contract: the PVH entry state (CR0.PE set, paging off, CR4
 * clear, interrupts off), start_info (magic, command line intact, RSDP
 * pointer, a sane memory map covering this image and "mem=MiB" of RAM),
 * valid checksums on every ACPI table and on the MP table, and CPUID's
 * initial APIC ID matching the LAPIC. */
#include "guest.h"

#define E820_RAM 1

extern uint32_t entry_eflags, entry_cr0, entry_cr4;
extern uint16_t entry_cs;
extern uint8_t __bss_end[];

static bool checksum_ok(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + b[i]);
    return sum == 0;
}

static bool check_memmap(const struct hvm_start_info *si, uint64_t mem_mib)
{
    if (!si->memmap_paddr || !si->memmap_entries || si->memmap_entries > 128 ||
        si->memmap_paddr >= 0xfffff000ULL) {
        tap_diag("memmap at %lx with %u entries", si->memmap_paddr, si->memmap_entries);
        return false;
    }
    const struct hvm_memmap_entry *e =
        (const struct hvm_memmap_entry *)(uintptr_t)si->memmap_paddr;
    uint64_t ram = 0;
    bool image_in_ram = false, ok = true;
    uint64_t img_lo = 0x100000, img_hi = (uint64_t)(uintptr_t)__bss_end;
    for (unsigned i = 0; i < si->memmap_entries; i++) {
        tap_diag("  memmap %u: %lx-%lx type %u", i, e[i].addr, e[i].addr + e[i].size - 1,
                 e[i].type);
        if (e[i].addr + e[i].size < e[i].addr)
            ok = false;
        if (e[i].type != E820_RAM)
            continue;
        ram += e[i].size;
        if (e[i].addr <= img_lo && e[i].addr + e[i].size >= img_hi)
            image_in_ram = true;
        for (unsigned j = 0; j < i; j++)
            if (e[j].type == E820_RAM && e[i].addr < e[j].addr + e[j].size &&
                e[j].addr < e[i].addr + e[i].size) {
                tap_diag("  RAM entries %u and %u overlap", j, i);
                ok = false;
            }
    }
    uint64_t want = mem_mib << 20;
    /* Holes (legacy area, firmware) take a little; never more than asked. */
    if (ram > want || ram < want - (want / 16)) {
        tap_diag("  RAM total %lx, expected about %lx", ram, want);
        ok = false;
    }
    if (!image_in_ram)
        tap_diag("  this image [%lx, %lx) is not inside one RAM entry", img_lo, img_hi);
    return ok && image_in_ram;
}

/* Every table the RSDT/XSDT lists, plus the FADT's DSDT and FACS. */
static bool check_acpi_tables(void)
{
    uint64_t rsdp = acpi_rsdp_address();
    if (!rsdp)
        return false;
    const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
    bool ok = checksum_ok(r, 20);
    uint64_t root = 0;
    unsigned esize = 4;
    uint32_t rsdt = 0;
    memcpy(&rsdt, r + 16, 4);
    root = rsdt;
    if (r[15] >= 2) {
        uint32_t len;
        memcpy(&len, r + 20, 4);
        ok &= len >= 36 && len < 4096 && checksum_ok(r, len);
        uint64_t x;
        memcpy(&x, r + 24, 8);
        if (x) {
            root = x;
            esize = 8;
        }
    }
    if (!ok)
        tap_diag("RSDP checksum or length bad");
    if (!root || root >= 0xfffff000ULL)
        return false;
    const struct acpi_header *rt = (const struct acpi_header *)(uintptr_t)root;
    if (rt->length < 36 || rt->length > 65536 || !checksum_ok(rt, rt->length)) {
        tap_diag("%.4s checksum or length bad", rt->signature);
        return false;
    }
    unsigned count = (rt->length - 36) / esize;
    for (unsigned i = 0; i < count; i++) {
        uint64_t a = 0;
        memcpy(&a, (const uint8_t *)rt + 36 + i * esize, esize);
        const struct acpi_header *t = (const struct acpi_header *)(uintptr_t)a;
        if (!a || a >= 0xfffff000ULL || t->length < 36 || t->length > (1u << 20) ||
            !checksum_ok(t, t->length)) {
            tap_diag("table %u at %lx: bad length or checksum", i, a);
            ok = false;
            continue;
        }
        tap_diag("  %.4s at %lx, %u bytes, revision %u, OEM %.6s", t->signature, a, t->length,
                 t->revision, t->oem_id);
        if (!memcmp(t->signature, "FACP", 4) && t->length >= 44) {
            uint32_t facs = 0, dsdt = 0;
            memcpy(&facs, (const uint8_t *)t + 36, 4);
            memcpy(&dsdt, (const uint8_t *)t + 40, 4);
            const struct acpi_header *d = (const struct acpi_header *)(uintptr_t)dsdt;
            if (!dsdt || memcmp(d->signature, "DSDT", 4) || d->length < 36 ||
                !checksum_ok(d, d->length)) {
                tap_diag("FADT's DSDT at %x bad", dsdt);
                ok = false;
            }
            if (facs && memcmp((const void *)(uintptr_t)facs, "FACS", 4)) {
                tap_diag("FADT's FACS at %x lacks its signature", facs);
                ok = false;
            }
        }
    }
    return ok;
}

static uint64_t mp_scan(uint64_t start, uint64_t end)
{
    for (uint64_t a = start; a + 16 <= end; a += 16)
        if (!memcmp((const void *)(uintptr_t)a, "_MP_", 4) &&
            checksum_ok((const void *)(uintptr_t)a, 16))
            return a;
    return 0;
}

/* Returns -1 when there is no MP table, else whether it is valid. */
static int check_mptable(unsigned expect_cpus)
{
    uint64_t fp = 0;
    uint64_t ebda = (uint64_t)mmio_read16(0x40e) << 4;
    if (ebda >= 0x80000 && ebda < 0xa0000)
        fp = mp_scan(ebda, ebda + 1024);
    if (!fp)
        fp = mp_scan(0x9fc00, 0xa0000);
    if (!fp)
        fp = mp_scan(0xf0000, 0x100000);
    if (!fp)
        return -1;
    const uint8_t *f = (const uint8_t *)(uintptr_t)fp;
    uint32_t cfg;
    memcpy(&cfg, f + 4, 4);
    if (!cfg || cfg >= 0xfffff000u || memcmp((const void *)(uintptr_t)cfg, "PCMP", 4)) {
        tap_diag("MP floating pointer at %lx: config table at %x missing", fp, cfg);
        return 0;
    }
    const uint8_t *c = (const uint8_t *)(uintptr_t)cfg;
    uint16_t len, count;
    memcpy(&len, c + 4, 2);
    memcpy(&count, c + 34, 2);
    if (len < 44 || !checksum_ok(c, len)) {
        tap_diag("MP config table checksum bad (length %u)", len);
        return 0;
    }
    unsigned cpus = 0, off = 44;
    for (unsigned i = 0; i < count && off < len; i++) {
        uint8_t type = c[off];
        if (type == 0) {
            if (c[off + 3] & 1)
                cpus++;
            off += 20;
        } else if (type <= 4) {
            off += 8;
        } else {
            tap_diag("MP entry type %u unknown", type);
            return 0;
        }
    }
    tap_diag("MP table at %lx: %u entries, %u enabled processors", fp, count, cpus);
    /* At least the BSP, never more than the MADT. Not equality: SeaBIOS
     * lists only the CPUs it saw wake up, which a slow host can miss. */
    return cpus >= 1 && cpus <= expect_cpus;
}

static void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

void guest_main(void)
{
    tap_plan(9);
    tap_diag("entry: cr0 %x cr4 %x eflags %x cs %x", entry_cr0, entry_cr4, entry_eflags,
             entry_cs);
    tap_check((entry_cr0 & 1) && !(entry_cr0 & 0x80000000u), "entered with CR0.PE set, paging off");
    tap_check(entry_cr4 == 0, "entered with CR4 clear (%x)", entry_cr4);
    tap_check(!(entry_eflags & ((1u << 9) | (1u << 8) | (1u << 17))),
              "entered with IF, TF and VM clear (eflags %x)", entry_eflags);

    const struct hvm_start_info *si = guest_start_info();
    char word[64];
    tap_check(si && si->version >= 1 && cmdline_get("check", word, sizeof(word)) &&
                  !strncmp(word, "pvh-cmdline-ok", sizeof(word)),
              "start_info valid (version %u), command line intact", si ? si->version : 0);
    if (si && si->rsdp_paddr) {
        const uint8_t *r = (const uint8_t *)(uintptr_t)si->rsdp_paddr;
        tap_check(si->rsdp_paddr < 0x100000000ULL && !memcmp(r, "RSD PTR ", 8) &&
                      checksum_ok(r, 20), "start_info rsdp_paddr %lx points at the RSDP",
                  si->rsdp_paddr);
    } else {
        tap_skip("loader gives no rsdp_paddr", "start_info RSDP pointer");
    }
    tap_check(si && check_memmap(si, cmdline_u64("mem", 64)),
              "memory map sane, covers this image and the RAM asked for");

    tap_check(check_acpi_tables(), "every ACPI table has a valid length and checksum");
    struct acpi_madt_info madt;
    acpi_get_madt_info(&madt);
    int mp = check_mptable(madt.nr_cpus);
    if (mp < 0)
        tap_skip("no MP floating pointer", "MP table valid");
    else
        tap_check(mp == 1, "MP table checksums valid, 1 to %u processors (MADT)",
                  madt.nr_cpus);

    uint32_t a, b, c, d;
    cpuid(1, &a, &b, &c, &d);
    tap_check((b >> 24) == lapic_id(), "CPUID initial APIC ID %u matches the LAPIC ID %u",
              b >> 24, lapic_id());
}
