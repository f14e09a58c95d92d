/* ACPI tables for Ember's PC (ACPI 6.x): RSDP (revision 2) at
 * LAYOUT_ACPI_BASE, then RSDT, XSDT, FADT, FACS, DSDT, MADT and MCFG in the
 * same 64 KiB, which the e820 map reserves. */
#ifndef EMBER_MACHINE_ACPI_H
#define EMBER_MACHINE_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "machine/layout.h"

#define ACPI_RSDP_ADDR LAYOUT_ACPI_BASE
#define ACPI_AREA_SIZE 0x10000
#define ACPI_MAX_CPUS 254 /* 8-bit APIC IDs, the IOAPIC takes ID nr_cpus */
#define ACPI_SLP_TYP_S5 5 /* \_S5 value; hw/acpi_pm powers off on it */

struct acpi_config {
    unsigned nr_cpus;
    uint64_t ram_size;
    uint32_t pci_slot_mask;
};

/* Build all tables into buf, the image of guest memory at base (normally
 * LAYOUT_ACPI_BASE; table pointers are absolute). Returns bytes used or
 * negative errno. */
int acpi_build(const struct acpi_config *ac, uint64_t base, uint8_t *buf, size_t size);

/* acpi_build() at LAYOUT_ACPI_BASE and copy into guest RAM. */
int acpi_write(const struct acpi_config *ac, const struct guest_mem *mem);

/* The DSDT's AML body (no table header), for tests; caller frees *out. */
int acpi_build_dsdt_aml(const struct acpi_config *ac, uint8_t **out, size_t *len);

/* Sum of bytes mod 256; a valid table sums to 0. */
uint8_t acpi_checksum(const uint8_t *p, size_t len);

#endif
