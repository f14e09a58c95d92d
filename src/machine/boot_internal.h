/* Shared by the boot loaders (boot.c, boot_pvh.c, boot_bzimage.c); not an
 * interface for the rest of Ember — use machine/boot.h. */
#ifndef EMBER_MACHINE_BOOT_INTERNAL_H
#define EMBER_MACHINE_BOOT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "machine/boot.h"

/* GDT selectors every Ember boot path uses (Linux's __BOOT_CS/__BOOT_DS). */
#define BOOT_SEL_CODE 0x10
#define BOOT_SEL_DATA 0x18
#define BOOT_SEL_TSS 0x20
#define BOOT_GDT_ENTRIES 6 /* null, null, code, data, TSS (16 bytes in long mode) */
#define BOOT_TSS_ADDR (LAYOUT_BOOT_GDT + 0x100)
#define BOOT_TSS_SIZE 0x68

/* Kernels are read whole into host memory; refuse anything absurd. */
#define BOOT_KERNEL_MAX_SIZE (512ULL << 20)
#define BOOT_CMDLINE_MAX 0x10000ULL /* LAYOUT_BOOT_CMDLINE area size */

struct boot_image {
    const char *path;
    uint8_t *data;
    size_t size;
};

int boot_load_pvh(const struct boot_config *bc, const struct boot_image *kernel,
                  const struct guest_mem *mem, struct cpu_state *bsp);
int boot_load_bzimage(const struct boot_config *bc, const struct boot_image *kernel,
                      const struct guest_mem *mem, struct cpu_state *bsp);

/* Write the GDT (and a zeroed TSS) at LAYOUT_BOOT_GDT and point bsp's
 * segment registers, GDTR and TR at it: flat 32-bit protected mode, or
 * 64-bit code when long_mode. Paging/control registers are the caller's. */
int boot_setup_segments(const struct guest_mem *mem, struct cpu_state *bsp, bool long_mode);

/* Copy bc->cmdline (or "") NUL-terminated to LAYOUT_BOOT_CMDLINE; max_len
 * is the longest string accepted, excluding the NUL. */
int boot_write_cmdline(const struct boot_config *bc, const struct guest_mem *mem, uint64_t max_len);

/* Read bc->initrd straight into guest RAM at the highest page-aligned
 * address whose end is <= limit and whose start is >= floor. Sets *addr and
 * *size (0/0 when there is no initrd). */
int boot_load_initrd(const struct boot_config *bc, const struct guest_mem *mem, uint64_t floor,
                     uint64_t limit, uint64_t *addr, uint64_t *size);

#endif
