/* Boot loaders and firmware tables: what a PC's firmware would have left in
 * guest RAM before handing control to the kernel.
 *
 * boot_load_kernel() understands two kernel formats:
 *  - a Linux bzImage (boot protocol >= 2.10, XLF_KERNEL_64), entered at its
 *    64-bit entry point in long mode with identity-mapped page tables;
 *  - an ELF (32- or 64-bit) kernel carrying a PVH entry note
 *    (XEN_ELFNOTE_PHYS32_ENTRY), entered in 32-bit protected mode with
 *    EBX = struct hvm_start_info (what QEMU does for -kernel vmlinux).
 *
 * firmware_build_tables() writes the Intel MP table and ACPI tables. Call
 * both, in either order: the PVH start_info points at the RSDP's fixed
 * address (LAYOUT_ACPI_BASE). On a guest reset, call both again: the guest
 * may have overwritten any of it.
 *
 * Guest RAM must be mapped per machine/layout.h: [0, min(ram, 3 GiB)) as one
 * region, the rest from 4 GiB.
 */
#ifndef EMBER_MACHINE_BOOT_H
#define EMBER_MACHINE_BOOT_H

#include <stdbool.h>
#include <stdint.h>

#include "accel/accel.h" /* struct cpu_state */
#include "core/guest_mem.h"

struct boot_config {
    const char *kernel, *initrd, *cmdline;
    uint64_t ram_size;
    unsigned nr_cpus;
};

/* Load a bzImage (Linux boot protocol >= 2.10) or an ELF kernel with a PVH entry note
   (XEN_ELFNOTE_PHYS32_ENTRY) into guest RAM; write the zero page / hvm_start_info,
   cmdline, initrd, e820/memmap, GDT and (for 64-bit entry) identity page tables;
   fill *bsp with the entry state. Prints one line naming the file on failure. */
int boot_load_kernel(const struct boot_config *bc, const struct guest_mem *mem, struct cpu_state *bsp);

/* Is path a Linux bzImage (the "HdrS" setup header)? False when it is not,
 * or cannot be read (boot_load_kernel() reports that). */
bool boot_kernel_is_bzimage(const char *path);

struct firmware_config {
    unsigned nr_cpus;
    uint64_t ram_size;
    uint32_t pci_slot_mask; /* bus-0 slots with a device: MP table INTx entries */
};

/* Write the MP table and the ACPI tables (RSDP in 0xe0000..) into guest RAM. */
int firmware_build_tables(const struct firmware_config *fc, const struct guest_mem *mem);

#endif
