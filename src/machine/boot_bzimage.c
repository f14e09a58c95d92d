/* Linux bzImage boot (Documentation/arch/x86/boot.rst): fill a zero page
 * (struct boot_params) from the image's setup header, place the
 * protected-mode kernel, command line and initrd, and enter the 64-bit
 * entry point (load address + 0x200) in long mode with identity-mapped
 * page tables and RSI = zero page. The real-mode setup code never runs.
 *
 * Every header field comes from a hostile file and is range-checked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "machine/boot_internal.h"
#include "machine/e820.h"
#include "machine/layout.h"

/* Offsets in struct boot_params / the setup header (boot.rst). */
#define BP_E820_ENTRIES 0x1e8
#define BP_SETUP_SECTS 0x1f1
#define BP_VID_MODE 0x1fa
#define BP_JUMP_END 0x201 /* byte: header ends at 0x202 + this */
#define BP_HEADER_MAGIC 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_CODE32_START 0x214
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_HEAP_END_PTR 0x224
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_RELOCATABLE 0x234
#define BP_XLOADFLAGS 0x236
#define BP_CMDLINE_SIZE 0x238
#define BP_PREF_ADDRESS 0x258
#define BP_INIT_SIZE 0x260
#define BP_HEADER_MIN_END 0x264 /* through init_size: all a 2.10 header has */
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_SIZE 0x1000

#define LOADFLAG_LOADED_HIGH 0x01
#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01
#define BZ_MIN_VERSION 0x020a
#define BZ_LOADER_UNDEFINED 0xff
#define BZ_HEAP_END 0xfe00 /* conventional: setup heap/stack end below 64 KiB */

/* 4 GiB identity map with 2 MiB pages: PML4, PDPT, 4 page directories. */
#define PT_PML4 (LAYOUT_BOOT_PGTABLE)
#define PT_PDPT (LAYOUT_BOOT_PGTABLE + 0x1000)
#define PT_PD (LAYOUT_BOOT_PGTABLE + 0x2000)
#define PT_NR_PD 4
#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL
_Static_assert(PT_PD + PT_NR_PD * 0x1000 <= LAYOUT_BOOT_CMDLINE, "page tables below the cmdline");

#define CR0_PE 0x1ULL
#define CR0_ET 0x10ULL
#define CR0_NE 0x20ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

struct bz_layout {
    uint64_t kernel_offset, kernel_size; /* protected-mode part in the file */
    uint64_t load_addr;                  /* where it goes in guest RAM */
    uint64_t reserve_end;                /* end of what the kernel may use while decompressing */
    uint64_t initrd_limit;
    uint64_t cmdline_max;
};

/* Check the setup header and decide where everything goes. */
static int bz_plan(const struct boot_config *bc, const struct boot_image *img, struct bz_layout *l)
{
    const uint8_t *d = img->data;
    const char *path = img->path;
    if (img->size < BP_HEADER_MIN_END)
        return log_fail(-ENOEXEC, "-kernel %s: bzImage truncated in its setup header", path);
    uint16_t version = ld16(d + BP_VERSION);
    if (version < BZ_MIN_VERSION)
        return log_fail(-ENOEXEC, "-kernel %s: boot protocol %u.%02u is too old (need 2.10)", path,
                        version >> 8, version & 0xff);
    if (!(d[BP_LOADFLAGS] & LOADFLAG_LOADED_HIGH))
        return log_fail(-ENOEXEC, "-kernel %s: a zImage (not loaded high) is not supported", path);
    if (version < 0x020c || !(ld16(d + BP_XLOADFLAGS) & XLF_KERNEL_64))
        return log_fail(-ENOEXEC, "-kernel %s: kernel has no 64-bit entry point (XLF_KERNEL_64)", path);

    unsigned setup_sects = d[BP_SETUP_SECTS] ? d[BP_SETUP_SECTS] : 4;
    l->kernel_offset = (uint64_t)(setup_sects + 1) * 512;
    if (l->kernel_offset >= img->size)
        return log_fail(-ENOEXEC, "-kernel %s: bzImage has no protected-mode kernel after %u setup sectors",
                        path, setup_sects);
    l->kernel_size = img->size - l->kernel_offset;

    uint64_t low_end = e820_low_ram_end(bc->ram_size);
    uint64_t pref = ld64(d + BP_PREF_ADDRESS);
    uint64_t init_size = ld32(d + BP_INIT_SIZE);
    uint32_t align = ld32(d + BP_KERNEL_ALIGNMENT);
    bool relocatable = d[BP_RELOCATABLE] != 0;

    /* A relocatable kernel goes where it prefers to run (it would move
     * itself there anyway); otherwise at the traditional 1 MiB. */
    l->load_addr = LAYOUT_BIOS_END;
    if (relocatable && pref >= LAYOUT_BIOS_END && pref < low_end) {
        if (align && (align & (align - 1)) == 0)
            pref = ALIGN_UP(pref, (uint64_t)align);
        l->load_addr = pref;
    }
    /* The decompressor needs [max(load, pref), +init_size) and the image
     * itself; all three terms are checked small before they are added. */
    uint64_t need_end = 0;
    if (pref <= low_end && init_size <= low_end)
        need_end = MAX(l->load_addr + l->kernel_size, MAX(l->load_addr, pref) + init_size);
    if (pref > low_end || init_size > low_end || need_end > low_end)
        return log_fail(-ENOMEM, "-kernel %s: kernel at 0x%llx needs 0x%llx bytes (init_size), more than "
                        "the guest's RAM below 0x%llx", path, (unsigned long long)MAX(l->load_addr, pref),
                        (unsigned long long)init_size, (unsigned long long)low_end);
    l->reserve_end = ALIGN_UP(need_end, 4096);

    uint64_t initrd_max = ld32(d + BP_INITRD_ADDR_MAX);
    if (initrd_max == 0)
        initrd_max = 0x37ffffff; /* boot.rst: the default for old protocols */
    l->initrd_limit = MIN(initrd_max + 1, low_end);

    uint64_t cmdline_size = ld32(d + BP_CMDLINE_SIZE);
    l->cmdline_max = cmdline_size ? cmdline_size : 255;
    return 0;
}

static int bz_write_page_tables(const struct guest_mem *mem)
{
    size_t size = (2 + PT_NR_PD) * 512 * sizeof(uint64_t);
    uint64_t *tables = xzalloc(size);
    uint64_t *pml4 = tables, *pdpt = tables + 512, *pd = tables + 1024;
    pml4[0] = PT_PDPT | PTE_P | PTE_RW;
    for (unsigned i = 0; i < PT_NR_PD; i++)
        pdpt[i] = (PT_PD + i * 0x1000ULL) | PTE_P | PTE_RW;
    for (unsigned i = 0; i < PT_NR_PD * 512; i++)
        pd[i] = ((uint64_t)i << 21) | PTE_P | PTE_RW | PTE_PS;
    int ret = guest_mem_write(mem, PT_PML4, tables, size);
    free(tables);
    if (ret)
        return log_fail(-EFAULT, "boot: guest RAM does not cover the page tables at 0x%llx",
                        (unsigned long long)PT_PML4);
    return 0;
}

static void bz_fill_zero_page(uint8_t *bp, const struct boot_image *img, const struct boot_config *bc,
                              const struct bz_layout *l, uint64_t initrd_addr, uint64_t initrd_size)
{
    /* The setup header runs from 0x1f1 to 0x202 + the jump's offset byte. */
    uint64_t hdr_end = MIN(MIN((uint64_t)0x202 + img->data[BP_JUMP_END], (uint64_t)BP_E820_TABLE), img->size);
    memset(bp, 0, BP_SIZE);
    memcpy(bp + BP_SETUP_SECTS, img->data + BP_SETUP_SECTS, hdr_end - BP_SETUP_SECTS);

    st16(bp + BP_VID_MODE, 0xffff); /* "normal" text mode */
    bp[BP_TYPE_OF_LOADER] = BZ_LOADER_UNDEFINED;
    bp[BP_LOADFLAGS] |= LOADFLAG_CAN_USE_HEAP;
    st16(bp + BP_HEAP_END_PTR, BZ_HEAP_END - 0x200);
    st32(bp + BP_CODE32_START, (uint32_t)l->load_addr);
    st32(bp + BP_RAMDISK_IMAGE, (uint32_t)initrd_addr);
    st32(bp + BP_RAMDISK_SIZE, (uint32_t)initrd_size);
    st32(bp + BP_CMD_LINE_PTR, (uint32_t)LAYOUT_BOOT_CMDLINE);

    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(bc->ram_size, map);
    bp[BP_E820_ENTRIES] = (uint8_t)n;
    for (unsigned i = 0; i < n && i < BP_E820_MAX; i++) {
        uint8_t *e = bp + BP_E820_TABLE + i * 20;
        st64(e, map[i].addr);
        st64(e + 8, map[i].size);
        st32(e + 16, map[i].type);
    }
}

int boot_load_bzimage(const struct boot_config *bc, const struct boot_image *kernel,
                      const struct guest_mem *mem, struct cpu_state *bsp)
{
    struct bz_layout l = {0};
    uint64_t initrd_addr = 0, initrd_size = 0;
    int ret = bz_plan(bc, kernel, &l);
    if (ret < 0)
        return ret;
    if (guest_mem_write(mem, l.load_addr, kernel->data + l.kernel_offset, l.kernel_size))
        return log_fail(-EFAULT, "-kernel %s: guest RAM does not cover 0x%llx+0x%llx", kernel->path,
                        (unsigned long long)l.load_addr, (unsigned long long)l.kernel_size);
    ret = boot_write_cmdline(bc, mem, l.cmdline_max);
    if (ret < 0)
        return ret;
    ret = boot_load_initrd(bc, mem, l.reserve_end, l.initrd_limit, &initrd_addr, &initrd_size);
    if (ret < 0)
        return ret;

    uint8_t *zero_page = xzalloc(BP_SIZE);
    bz_fill_zero_page(zero_page, kernel, bc, &l, initrd_addr, initrd_size);
    ret = guest_mem_write(mem, LAYOUT_BOOT_PARAMS, zero_page, BP_SIZE);
    free(zero_page);
    if (ret)
        return log_fail(-EFAULT, "boot: guest RAM does not cover the zero page at 0x%llx",
                        (unsigned long long)LAYOUT_BOOT_PARAMS);
    ret = bz_write_page_tables(mem);
    if (ret < 0)
        return ret;
    ret = boot_setup_segments(mem, bsp, true);
    if (ret < 0)
        return ret;

    bsp->rip = l.load_addr + 0x200; /* the 64-bit entry, startup_64 */
    bsp->rsi = LAYOUT_BOOT_PARAMS;
    bsp->cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    bsp->cr3 = PT_PML4;
    bsp->cr4 = CR4_PAE;
    bsp->efer = EFER_LME | EFER_LMA;
    log_debug("-kernel %s: bzImage protocol 0x%x at 0x%llx, initrd 0x%llx+0x%llx", kernel->path,
              ld16(kernel->data + BP_VERSION), (unsigned long long)l.load_addr,
              (unsigned long long)initrd_addr, (unsigned long long)initrd_size);
    return 0;
}
