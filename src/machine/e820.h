/* The guest's physical memory map as firmware reports it (BIOS e820, also
 * used for the PVH memmap): one table computed from the RAM size and the
 * fixed layout in machine/layout.h, so every consumer sees the same map. */
#ifndef EMBER_MACHINE_E820_H
#define EMBER_MACHINE_E820_H

#include <stdint.h>

enum e820_type {
    E820_RAM = 1,
    E820_RESERVED = 2,
    E820_ACPI = 3,
    E820_NVS = 4,
};

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

/* More than the map below ever needs. */
#define E820_MAX_ENTRIES 16

/* End of the RAM below the 32-bit hole: min(ram_size, LAYOUT_LOW_RAM_MAX). */
uint64_t e820_low_ram_end(uint64_t ram_size);

/* Fill out[] (sorted by address, non-overlapping) for a guest with ram_size
 * bytes of RAM laid out as machine/layout.h says. Returns the entry count. */
unsigned e820_build(uint64_t ram_size, struct e820_entry out[E820_MAX_ENTRIES]);

#endif
