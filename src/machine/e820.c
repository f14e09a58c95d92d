/* The e820 memory map: low RAM, the legacy BIOS hole, RAM up to the 32-bit
 * PCI hole, the reserved ECAM window (Linux only trusts MMCONFIG when e820
 * or ACPI reserves it), the IOAPIC/LAPIC pages and RAM above 4 GiB. */
#include "machine/e820.h"

#include "core/util.h"
#include "machine/layout.h"

uint64_t e820_low_ram_end(uint64_t ram_size)
{
    return MIN(ram_size, LAYOUT_LOW_RAM_MAX);
}

static void e820_add(struct e820_entry *out, unsigned *n, uint64_t addr, uint64_t size,
                     enum e820_type type)
{
    if (size == 0 || *n >= E820_MAX_ENTRIES)
        return;
    out[(*n)++] = (struct e820_entry){.addr = addr, .size = size, .type = type};
}

unsigned e820_build(uint64_t ram_size, struct e820_entry out[E820_MAX_ENTRIES])
{
    uint64_t low_end = e820_low_ram_end(ram_size);
    unsigned n = 0;

    e820_add(out, &n, 0, MIN(low_end, LAYOUT_EBDA_START), E820_RAM);
    e820_add(out, &n, LAYOUT_EBDA_START, LAYOUT_BIOS_END - LAYOUT_EBDA_START, E820_RESERVED);
    if (low_end > LAYOUT_BIOS_END)
        e820_add(out, &n, LAYOUT_BIOS_END, low_end - LAYOUT_BIOS_END, E820_RAM);
    e820_add(out, &n, LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
    e820_add(out, &n, LAYOUT_IOAPIC_BASE, 0x1000, E820_RESERVED);
    e820_add(out, &n, LAYOUT_LAPIC_BASE, 0x1000, E820_RESERVED);
    if (ram_size > low_end)
        e820_add(out, &n, LAYOUT_HIGH_RAM_BASE, ram_size - low_end, E820_RAM);
    return n;
}
