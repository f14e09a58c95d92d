/* The guest-physical and port map of Ember's x86 PC. One place, so the
 * loaders, ACPI/MP tables, PCI and devices agree. */
#ifndef EMBER_MACHINE_LAYOUT_H
#define EMBER_MACHINE_LAYOUT_H

#include <stdint.h>

/* RAM: [0, min(ram, LOW_RAM_MAX)) and, for the rest, from 4 GiB up. */
#define LAYOUT_LOW_RAM_MAX 0xC0000000ULL /* 3 GiB: below it RAM, above it the 32-bit hole */
#define LAYOUT_HIGH_RAM_BASE 0x100000000ULL

/* Legacy low-memory areas (the e820 map reserves 0x9fc00-0xfffff). */
#define LAYOUT_EBDA_START 0x9fc00ULL
#define LAYOUT_BIOS_START 0xe0000ULL /* RSDP and MP floating pointer live in 0xe0000-0xfffff */
#define LAYOUT_BIOS_END 0x100000ULL

/* Where the loaders put their structures (all below 1 MiB, above the IVT). */
#define LAYOUT_BOOT_GDT 0x500ULL
#define LAYOUT_BOOT_PARAMS 0x7000ULL     /* Linux zero page / PVH start_info */
#define LAYOUT_BOOT_CMDLINE 0x20000ULL   /* up to 64 KiB */
#define LAYOUT_BOOT_PGTABLE 0x9000ULL    /* identity page tables for 64-bit entry */
#define LAYOUT_ACPI_BASE 0xe0000ULL      /* RSDP at start; tables follow, 64 KiB */
#define LAYOUT_MPTABLE_BASE 0xf0000ULL   /* 64 KiB */

/* 32-bit MMIO hole. */
#define LAYOUT_PCI_MMIO32_BASE 0xC0000000ULL
#define LAYOUT_PCI_MMIO32_SIZE 0x20000000ULL /* 512 MiB BAR window */
#define LAYOUT_PCI_ECAM_BASE 0xE0000000ULL
#define LAYOUT_PCI_ECAM_SIZE 0x10000000ULL   /* buses 0-255 */
#define LAYOUT_IOAPIC_BASE 0xFEC00000ULL
#define LAYOUT_LAPIC_BASE 0xFEE00000ULL

/* Port I/O. */
#define LAYOUT_PCI_PIO_BASE 0xC000 /* I/O BAR window 0xc000-0xffff */
#define LAYOUT_PCI_PIO_SIZE 0x4000
#define LAYOUT_COM1_PORT 0x3f8
#define LAYOUT_COM1_GSI 4
#define LAYOUT_I8042_DATA_PORT 0x60
#define LAYOUT_I8042_CMD_PORT 0x64
#define LAYOUT_I8042_KBD_GSI 1
#define LAYOUT_I8042_AUX_GSI 12
#define LAYOUT_RTC_PORT 0x70
#define LAYOUT_RTC_GSI 8
#define LAYOUT_ACPI_PM_BASE 0x600   /* PM1a_EVT 0x600 (4), PM1a_CNT 0x604 (2), PM_TMR 0x608 (4) */
#define LAYOUT_ACPI_PM1_EVT (LAYOUT_ACPI_PM_BASE + 0)
#define LAYOUT_ACPI_PM1_CNT (LAYOUT_ACPI_PM_BASE + 4)
#define LAYOUT_ACPI_PM_TMR (LAYOUT_ACPI_PM_BASE + 8)
#define LAYOUT_ACPI_SCI_GSI 9
#define LAYOUT_RESET_PORT 0xcf9     /* FADT reset register: write 0x06 */
#define LAYOUT_PCI_CONFIG_ADDR 0xcf8
#define LAYOUT_PCI_CONFIG_DATA 0xcfc
#define LAYOUT_IOAPIC_PINS 24

/* PCI INTx routing (bus 0): INTA..INTD of slot s reach IOAPIC pin
 * 16 + ((s + pin) % 4), pin 0 = INTA. ACPI _PRT and the MP table say the same. */
static inline unsigned layout_pci_intx_gsi(unsigned slot, unsigned pin)
{
    return 16 + ((slot + pin) % 4);
}

#endif
