/* Intel MultiProcessor Specification 1.4 table: the pre-ACPI way a guest
 * finds its CPUs, IOAPIC and interrupt routing. Written at
 * LAYOUT_MPTABLE_BASE (floating pointer first, config table right after). */
#ifndef EMBER_MACHINE_MPTABLE_H
#define EMBER_MACHINE_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"

#define MPTABLE_MAX_CPUS 254 /* APIC IDs 0..n-1 plus the IOAPIC's ID n fit in 8 bits */
#define MPTABLE_BUS_PCI 0
#define MPTABLE_BUS_ISA 1

/* Build the floating pointer and config table into buf (the image of guest
 * memory at LAYOUT_MPTABLE_BASE). Returns the bytes used, or negative errno
 * (-EINVAL for a bad CPU count, -ENOSPC if buf is too small). */
int mptable_build(uint8_t *buf, size_t size, unsigned nr_cpus, uint32_t pci_slot_mask);

/* mptable_build() and copy the result to LAYOUT_MPTABLE_BASE. */
int mptable_write(const struct guest_mem *mem, unsigned nr_cpus, uint32_t pci_slot_mask);

#endif
